"""Deployment targets: onnxruntime sessions and TensorRT settings for sparse models."""

from __future__ import annotations
