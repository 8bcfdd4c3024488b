"""Text classification shipped as an ONNX artifact for onnxruntime: inputs.py (its targets, task and space files,
checked before anything loads), flow.py (the Flow), pipeline.py (screen, distill, prune, quantize, measure),
reprice.py (replan)."""
