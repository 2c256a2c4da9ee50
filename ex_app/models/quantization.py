"""Values in and out of TFLite tensors that may be quantized, and the softmax over scores."""

from __future__ import annotations

import numpy as np


def quantize(values: np.ndarray, detail: dict) -> np.ndarray:
    """Float values as a tensor's type (an interpreter's tensor details): unchanged but for
    the type when it is float, else scaled by its quantization and clipped to its range."""
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return values.astype(dtype)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(values / scale + zero_point), info.min, info.max).astype(dtype)


def dequantize(values: np.ndarray, detail: dict) -> np.ndarray:
    """A tensor's values as float64, undoing its quantization if it has one."""
    if np.dtype(detail["dtype"]).kind == "f":
        return values.astype(np.float64)
    scale, zero_point = detail["quantization"]
    return (values.astype(np.float64) - zero_point) * scale


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities from logits, along the last axis (numerically stable)."""
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)
