"""The error kinds a user can meet: bad input (ConfigError, exit 2), a recipe that cannot be built
(CandidateError: a FAIL trial, the run goes on), and a machine that stops the run (RunStopped, exit 4)."""


class ConfigError(Exception):
    """A target/space/task file is wrong. The message is one line: `file: key: given; allowed`."""

    def __init__(self, file: str, key: str, message: str):
        self.file, self.key = str(file), key
        one_line = " ".join(str(message).split())  # library messages (YAML, pandas) can span lines
        super().__init__(f"{file}: {key}: {one_line}")


class CandidateError(Exception):
    """A sampled recipe cannot be built or measured; the study records a failed trial and goes on."""


class RunStopped(Exception):
    """The machine, not the recipe, failed twice in a row (disk full, permissions): stop, completed trials kept."""
