"""A toy task kind that is not a transformer: a small convolutional image classifier, shipped as ONNX for
onnxruntime, plugged into the run engine as its own flow folder (flow.py, inputs.py) with one registration line
(`flows.add("toy_conv", "toy_conv")`, tests/test_toy_flow.py). Nothing in `search/` knows it."""
