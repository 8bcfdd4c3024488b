"""The two error kinds a user can meet: bad input (ConfigError) and a recipe that cannot be built."""


class ConfigError(Exception):
    """A target/space/task file is wrong. The message is one line: `file: key: given; allowed`."""

    def __init__(self, file: str, key: str, message: str):
        self.file, self.key = str(file), key
        super().__init__(f"{file}: {key}: {message}")


class CandidateError(Exception):
    """A sampled recipe cannot be built or measured; the study records a failed trial and goes on."""
