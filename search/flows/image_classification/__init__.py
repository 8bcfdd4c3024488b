"""Image classification (issue 31): EfficientNet-Lite students shipped as ONNX for onnxruntime (flow.py, inputs.py),
on the built-in Fashion-MNIST task (fashion_mnist.py) or the user's images (image_files.py)."""
