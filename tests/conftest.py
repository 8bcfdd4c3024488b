"""Tiny in-process BERTs and data: every unit test runs in seconds with no network."""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # as __main__ does: no telemetry store under ~/.cache

import search  # noqa: E402,F401  (first: it makes torchvision importable before transformers looks for it)
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import BertConfig, BertForSequenceClassification  # noqa: E402

from search.tasks.data import Split  # noqa: E402

torch.set_num_threads(2)
WORDS_POS = ["good", "great", "fine", "nice", "happy", "love", "best", "win"]
WORDS_NEG = ["bad", "awful", "poor", "sad", "hate", "worst", "lose", "ugly"]
FILLER = ["the", "a", "movie", "was", "is", "it", "this", "and", "very", "so"]


def tiny_config(layers=3, hidden=128, heads=4, ffn=256, vocab=120, labels=2, positions=64) -> BertConfig:
    return BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                      intermediate_size=ffn, max_position_embeddings=positions, num_labels=labels,
                      attn_implementation="eager")


def tiny_model(seed=0, **kw) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    # like a trained model: no two biases/norms equal (the exporter would share them)
    return perturb_vectors(BertForSequenceClassification(tiny_config(**kw)).eval(), 0.02)


@torch.no_grad()
def perturb_vectors(model, scale: float):
    """Add noise to every bias and norm (1-D parameter), in place: freshly initialised ones are all equal."""
    for p in model.parameters():
        if p.dim() == 1:
            p.add_(torch.randn_like(p) * scale)
    return model


def random_split(n=64, length=16, vocab=120, seed=0) -> Split:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (n, length), generator=g)
    lengths = torch.randint(length // 2, length + 1, (n,), generator=g)
    mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    ids = ids * mask
    labels = torch.randint(0, 2, (n,), generator=g)
    return Split({"input_ids": ids, "attention_mask": mask}, mask.sum(1), labels, [""] * n)


def calib(split: Split, n: int | None = None) -> dict:
    """A calibration feature batch (what compressors and the backend take) from the first n rows."""
    features, _ = split.batch(torch.arange(n or len(split)))
    return features


@pytest.fixture
def model():
    return tiny_model()


@pytest.fixture
def split():
    return random_split()


def write_tiny_task(root, n=400, seed=0):
    """A task directory: a tiny BERT teacher with a real WordPiece tokenizer, and a learnable CSV."""
    from transformers import BertTokenizerFast

    root.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS_POS + WORDS_NEG + FILLER
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n")
    teacher = root / "teacher"
    # transformers 5 ignores `vocab_file=` (every token became [UNK]); the vocabulary goes in as a mapping
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})
    tok.save_pretrained(teacher)
    tiny_model(vocab=len(vocab), layers=2, hidden=64, heads=2, ffn=128).save_pretrained(teacher)
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = WORDS_POS if label else WORDS_NEG
        pick = lambda pool, k: [pool[j] for j in torch.randint(0, len(pool), (k,), generator=g)]  # noqa: E731
        rows.append({"sentence": " ".join(pick(FILLER, 4) + pick(words, 2) + pick(FILLER, 2)) + f" {i}",
                     "y": "pos" if label else "neg"})
    pd.DataFrame(rows).to_csv(root / "data.csv", index=False)
    (root / "task.yaml").write_text(
        "name: tiny\nteacher: teacher\ndata:\n  path: data.csv\n  text_column: sentence\n  label_column: y\n"
        "  validation_fraction: 0.25\nmax_length: 16\nfinetune:\n  epochs: 3\n  learning_rate: 0.001\n")
    return root / "task.yaml"


TESTS = os.path.dirname(os.path.abspath(__file__))
# the student shapes a space may cut from write_tiny_task's teacher (2 layers, width 64, 2 heads, FFN 128)
TINY_DISTILL = """distill:
  layers: {low: 1, high: 2}
  hidden: {low: 32, high: 64, step: 32}
  heads: {low: 1, high: 2}
  ffn: {low: 64, high: 128, step: 64}
  temperature: 2.0
"""


# a spec-only device for the tiny teacher (every latency estimated, so fixed-seed runs are deterministic); a test
# appends its own `budget:` section
TINY_ESTIMATED_DEVICE = """name: tiny_estimated
device:
  latency: estimated
  memory_mb: 1000
  memory_bandwidth_gbps: 50
  peak_tops: {fp32: 0.5, fp16: 1.0, int8: 2.0}
workload: {batch_size: 1, sequence_length: 16}
"""


def tiny_run_inputs(root, target_yaml: str) -> list[str]:
    """Writes the tiny task and a target into `root`; the `run` flags that use them with the tests' small space."""
    task = write_tiny_task(root / "task")
    (root / "target.yaml").write_text(target_yaml)
    return ["--target", str(root / "target.yaml"), "--task", str(task),
            "--space", os.path.join(TESTS, "golden_space.yaml")]


def search_env(results) -> dict:
    """The environment of a `python -m search` subprocess writing into `results`."""
    return {**os.environ, "SEARCH_RESULTS_DIR": str(results), "PYTHONUNBUFFERED": "1"}


def run_search(results, *args: str, timeout: float = 900):
    """`python -m search ARGS` in a fresh process, run from the repository root."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "search", *args], capture_output=True, text=True,
                          cwd=os.path.dirname(TESTS), env=search_env(results), timeout=timeout)


def nbits_of(node) -> int:
    """The `bits` attribute of a MatMulNBits node."""
    from onnx import helper

    return next(helper.get_attribute_value(a) for a in node.attribute if a.name == "bits")


def nbits_by_layer(path) -> dict[int, set]:
    """{encoder layer: the bits of its MatMulNBits nodes} in a BERT artifact (nodes named .../layer.N/...)."""
    import onnx

    out = {}
    for node in onnx.load(str(path)).graph.node:
        if node.op_type == "MatMulNBits":
            out.setdefault(int(node.name.split("layer.")[1].split("/")[0]), set()).add(nbits_of(node))
    return out
