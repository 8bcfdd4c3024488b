"""Text classification shipped as an ONNX artifact for onnxruntime: flow.py (the Flow), pipeline.py (screen, build,
measure), reprice.py (replan), target.py (the workload and budget a target gives it)."""
