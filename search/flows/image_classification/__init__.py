"""Image classification (issue 31): EfficientNet-Lite students shipped as ONNX for onnxruntime. So far its data
(data.py, fashion_mnist.py, image_files.py); the flow and its registration come next."""
