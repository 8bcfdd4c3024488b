"""The onnxruntime backend (CPU execution provider): ONNX artifacts built from the torch student."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from ... import families
from ...candidate import QuantParams, Scheme
from ...compress.grid import CHANNEL, block_size_for, blocked_bytes
from ...compress.weight_only import EMBEDDING_BITS, HIGH_BITS
from ...families.base import ModelShape
from ...measure.latency import Latency, from_probe, run_probe
from ..base import ModelBackend
from . import layout
from .build import ARTIFACT, build

PROBE = Path(__file__).with_name("probe.py")
PACKED_BITS = {onnx.TensorProto.INT4: 4, onnx.TensorProto.UINT4: 4}

USAGE = '''```python
import numpy as np, onnxruntime as ort
from transformers import AutoTokenizer

tok = AutoTokenizer.from_pretrained(".")
sess = ort.InferenceSession("{artifact}", providers=["CPUExecutionProvider"])
enc = tok(["your text here"], truncation=True, max_length={max_length}, return_tensors="np")
feed = {{i.name: enc[i.name].astype(np.int64) for i in sess.get_inputs()}}
scores = sess.run(None, feed)[0]
print({classes!r}[int(scores.argmax(-1)[0])])
```'''


USAGE_ARRAYS = '''```python
import numpy as np, onnxruntime as ort

sess = ort.InferenceSession("{artifact}", providers=["CPUExecutionProvider"])
print([(i.name, i.shape, i.type) for i in sess.get_inputs()])  # what the model takes
feed = {{i.name: your_array_for(i) for i in sess.get_inputs()}}
scores = sess.run(None, feed)[0]
print({classes!r}[int(scores.argmax(-1)[0])])
```'''


def tensor_bytes(t: onnx.TensorProto) -> int:
    """Stored bytes; 4-bit tensors are packed two per byte (numpy would unpack them to one per byte)."""
    if t.raw_data:
        return len(t.raw_data)
    bits = PACKED_BITS.get(t.data_type)
    if bits:
        n = 1
        for d in t.dims:
            n *= d
        return -(-n * bits // 8)
    return numpy_helper.to_array(t).nbytes


def session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # no busy-waiting: on a shared machine spinning threads turned ms into 100s of ms (BACKENDS.md);
    # probe.py sets the same options in its standalone copy
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class OnnxRuntime(ModelBackend):
    name = "onnxruntime"
    artifact_name = ARTIFACT

    def check(self, shape: ModelShape, quant: QuantParams) -> list[str]:
        if quant.scheme is not Scheme.WEIGHT_ONLY:
            return []
        widest = max(t.cols for t in families.get(shape.family).tensors(shape) if t.role == "block_linear")
        for bits, group in sorted(set(quant.layer_options or [(quant.bits, quant.group_size)]), key=str):
            block = block_size_for(widest, group)
            if bits == 2 and block > layout.MAX_2BIT_BLOCK:
                what = f"per-channel blocks of {widest} inputs" if group == CHANNEL else f"blocks of {block}"
                return [f"2-bit {what} exceed onnxruntime's {layout.MAX_2BIT_BLOCK}-wide 2-bit limit"]
        return []

    def predicted_weight_bytes(self, shape: ModelShape, quant: QuantParams) -> int:
        """How each scheme stores each tensor role (matches `build`; tests hold them within 3%)."""
        tensors = families.get(shape.family).tensors(shape)
        of = lambda role: [t for t in tensors if t.role == role]  # noqa: E731
        encoder, head, embeddings = of("block_linear"), of("head_linear"), of("embedding")
        vectors = sum(t.elements for t in of("vector"))
        vectors += 2 * sum(t.rows for t in of("index_table"))  # int64 ids, counted as 2 float-sized words
        emb = sum(t.elements for t in embeddings)
        head_params = sum(t.elements for t in head)
        matrix = sum(t.elements for t in encoder)
        scheme = quant.scheme
        if scheme is Scheme.FP32:
            return 4 * (vectors + emb + head_params + matrix)
        if scheme is Scheme.INT8_DYNAMIC:  # every matrix incl. the Gemm head to int8, per-tensor scale
            return 4 * vectors + emb + head_params + matrix
        if scheme is Scheme.INT8_STATIC:  # encoder MatMuls int8 with a scale + zero point per output channel
            smoothing = 4 * sum(t.cols for t in encoder) if quant.smooth_alpha else 0  # SmoothQuant's 1/s vectors
            if "Conv" in families.get(shape.family).export_spec(shape).quantize_ops:
                # a CNN's QDQ graph: every conv and the Gemm head int8, each bias int32 (the vectors' 4 bytes) with
                # an fp32 scale and an int32 zero point per output channel
                quantized = encoder + head
                return 4 * (vectors + emb) + sum(t.elements + 13 * t.rows for t in quantized) + smoothing
            return 4 * (vectors + emb + head_params) + sum(t.elements + 5 * t.rows for t in encoder) + smoothing

        def blocked(i, o, bits, group=quant.group_size):  # MatMulNBits: K padded to whole blocks, fp32 scale/block
            return blocked_bytes(i, o, bits, group)[1]

        if quant.layer_options is not None:  # the solver's per-layer bits and blocks
            matmuls = sum(blocked(t.cols, t.rows, *quant.layer_options[t.layer]) for t in encoder)
        else:
            n_high = round(quant.high_precision_fraction * shape.layers)  # the most sensitive layers, at 8 bits
            # which layers are high does not change the total (every layer has the same tensors)
            matmuls = sum(blocked(t.cols, t.rows, HIGH_BITS if t.layer < n_high else quant.bits) for t in encoder)
        if quant.bits <= EMBEDDING_BITS:  # 4-bit GatherBlockQuantized over the hidden axis
            emb_bytes = sum(blocked(t.cols, t.rows, EMBEDDING_BITS) for t in embeddings)
        else:
            emb_bytes = 4 * emb
        return 4 * (vectors + head_params) + matmuls + emb_bytes  # weight-only leaves the Gemm head in fp32

    def build(self, model, quant: QuantParams, workdir: Path, calibration: dict | None = None) -> Path:
        return build(model, quant, workdir, calibration)

    def weight_bytes(self, artifact: Path) -> int:
        """Bytes of every initializer and Constant tensor in the ONNX file."""
        model = onnx.load(str(artifact))
        total = sum(tensor_bytes(t) for t in model.graph.initializer)
        for node in model.graph.node:
            if node.op_type == "Constant":
                total += sum(tensor_bytes(a.t) for a in node.attribute if a.type == onnx.AttributeProto.TENSOR)
        return int(total)

    def outputs(self, artifact: Path, data, threads: int, batch_size: int = 64) -> np.ndarray:
        sess = session(artifact, threads)
        names = {i.name for i in sess.get_inputs()}
        out = []
        for start in range(0, len(data), batch_size):
            features, _ = data.batch(torch.arange(start, min(start + batch_size, len(data))))
            out.append(sess.run(None, {k: v.numpy() for k, v in features.items() if k in names})[0])
        return np.concatenate(out)

    def measure_latency(self, artifact: Path, shape: ModelShape, batch: int, seq: int, threads: int,
                        runner=None, rounds: int = 5, runs_per_round: int = 40) -> Latency:
        """`seq`: the workload's sequence length, for families whose inputs have one (an image model's do not)."""
        spec = families.get(shape.family).export_spec(shape)
        inputs = [i.as_json(batch, seq) for i in spec.probe_inputs]  # names, shapes, dtypes: the family's
        args = [str(batch), str(seq), str(threads), json.dumps(inputs, separators=(",", ":")), str(rounds),
                str(runs_per_round)]
        answer, where = run_probe(PROBE, artifact, args, runner)
        return from_probe(answer, where, artifact)

    def remeasure(self, artifact: Path, saved: dict, runner, confidence: float) -> tuple[dict, bool, str]:
        from ...confidence import latency_bound

        # the inputs a student accepts: the teacher's, or its own where its family says so; an image workload has
        # no sequence length
        family = families.get(saved["teacher_shape"]["family"])
        shape = family.shape_from_json(family.probe_shape(saved["teacher_shape"], saved.get("candidate_shape")))
        lat = self.measure_latency(artifact, shape, saved["batch_size"], saved.get("sequence_length", 0),
                                   saved["threads"], rounds=10, runs_per_round=50, runner=runner)
        upper, how = latency_bound(lat.p99_ms, lat.times_ms, "measured", None, confidence)
        return ({"p50_latency_ms": lat.p50_ms, "p99_latency_ms": lat.p99_ms, "latency_spread": lat.spread,
                 "memory_mb": lat.peak_rss_mb, "p99_latency_ms_upper": upper, "latency_bound_method": how},
                lat.noisy, lat.detail)

    def usage(self, saved: dict) -> str:
        if saved.get("max_length") is None:  # a task without a tokenizer: feed the model's own inputs
            return "## Run it with onnxruntime\n\n" + USAGE_ARRAYS.format(artifact=ARTIFACT, classes=saved["classes"])
        return "## Run it with onnxruntime\n\n" + USAGE.format(artifact=ARTIFACT, max_length=saved["max_length"],
                                                                classes=saved["classes"])
