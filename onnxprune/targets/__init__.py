"""Deployment targets: onnxruntime sessions and TensorRT settings for sparse models."""
