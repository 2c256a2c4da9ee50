"""Inference sessions behind one small interface: onnxruntime or TFLite (LiteRT).

Analyzers only see :class:`InferenceSession`; which engine runs a model is decided here,
from the file's format and what the machine offers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

# Tried in this order; the first that onnxruntime reports as available wins.
ONNX_PROVIDER_PREFERENCE = (
    "CUDAExecutionProvider",
    "ROCMExecutionProvider",
    "OpenVINOExecutionProvider",
    "CPUExecutionProvider",
)


class InferenceSession(Protocol):
    """A loaded model: named float inputs in, a list of outputs back (in output order)."""

    input_names: list[str]
    output_names: list[str]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]: ...


def onnx_providers(available: list[str] | None = None) -> list[str]:
    """onnxruntime providers to use, best first, CPU always last."""
    if available is None:
        import onnxruntime

        available = onnxruntime.get_available_providers()
    chosen = [p for p in ONNX_PROVIDER_PREFERENCE if p in available]
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


class OnnxSession:
    """An onnxruntime session with a fixed thread count."""

    def __init__(self, path: Path, threads: int = 1, providers: list[str] | None = None):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = onnxruntime.InferenceSession(
            str(path), sess_options=options, providers=providers or onnx_providers()
        )
        self.input_names = [i.name for i in self._session.get_inputs()]
        self.output_names = [o.name for o in self._session.get_outputs()]
        self.providers = self._session.get_providers()

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._session.run(None, feeds)


class TFLiteSession:
    """A LiteRT interpreter; inputs with free (-1) dimensions are resized to what is fed."""

    def __init__(self, path: Path, threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self._interpreter.allocate_tensors()
        self._inputs = self._interpreter.get_input_details()
        self._outputs = self._interpreter.get_output_details()
        self.input_names = [d["name"] for d in self._inputs]
        self.output_names = [d["name"] for d in self._outputs]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        resized = False
        for detail in self._inputs:
            value = feeds[detail["name"]]
            if tuple(value.shape) == tuple(detail["shape"]):
                continue
            signature = detail.get("shape_signature", detail["shape"])
            fixed = [
                (want, got)
                for want, got in zip(signature, value.shape, strict=False)
                if want != -1 and want != got
            ]
            if fixed or len(signature) != value.ndim:
                raise ValueError(
                    f"input {detail['name']!r} takes shape {list(signature)} (-1: any), "
                    f"got {list(value.shape)}"
                )
            self._interpreter.resize_tensor_input(detail["index"], value.shape)
            resized = True
        if resized:
            self._interpreter.allocate_tensors()
            self._inputs = self._interpreter.get_input_details()
            self._outputs = self._interpreter.get_output_details()
        for detail in self._inputs:
            value = np.asarray(feeds[detail["name"]], dtype=detail["dtype"])
            self._interpreter.set_tensor(detail["index"], value)
        self._interpreter.invoke()
        return [self._interpreter.get_tensor(d["index"]).copy() for d in self._outputs]


def open_session(path: Path, threads: int = 1) -> InferenceSession:
    """Open a model file with the engine its format needs."""
    suffix = Path(path).suffix.lower()
    if suffix == ".onnx":
        return OnnxSession(path, threads=threads)
    if suffix == ".tflite":
        return TFLiteSession(path, threads=threads)
    raise ValueError(f"no inference engine for {path.name!r} (expected .onnx or .tflite)")
