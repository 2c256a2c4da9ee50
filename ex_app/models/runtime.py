"""Inference sessions behind one small interface: onnxruntime or TFLite (LiteRT).

Analyzers only see :class:`InferenceSession`; which engine runs a model is decided here,
from the file's format and what the processor can do. The CPU image carries both engines:
onnxruntime's builds need x86-64 with AVX or 64-bit ARM (without AVX they die of an illegal
instruction on import), so elsewhere (older x86, 32-bit ARM) models run on LiteRT, whose
XNNPACK kernels need neither. The choice is made before onnxruntime is ever imported.
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

EngineName = Literal["onnx", "tflite"]

# Tried in this order; the first that onnxruntime reports as available wins.
ONNX_PROVIDER_PREFERENCE = ("CUDAExecutionProvider", "ROCMExecutionProvider",
                            "OpenVINOExecutionProvider", "CPUExecutionProvider")


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
        self._allocate()
        self.input_names = [d["name"] for d in self._inputs]
        self.output_names = [d["name"] for d in self._outputs]

    def _allocate(self) -> None:
        """Allocate the tensors for the current input shapes and read their details."""
        self._interpreter.allocate_tensors()
        self._inputs = self._interpreter.get_input_details()
        self._outputs = self._interpreter.get_output_details()

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        resized = False
        for detail in self._inputs:
            value = feeds[detail["name"]]
            if tuple(value.shape) == tuple(detail["shape"]):
                continue
            signature = detail.get("shape_signature", detail["shape"])
            if len(signature) != value.ndim or any(
                    want not in (-1, got) for want, got in zip(signature, value.shape)):
                raise ValueError(
                    f"input {detail['name']!r} takes shape {list(signature)} (-1: any), "
                    f"got {list(value.shape)}"
                )
            self._interpreter.resize_tensor_input(detail["index"], value.shape)
            resized = True
        if resized:
            self._allocate()
        for detail in self._inputs:
            value = np.asarray(feeds[detail["name"]], dtype=detail["dtype"])
            self._interpreter.set_tensor(detail["index"], value)
        self._interpreter.invoke()
        return [self._interpreter.get_tensor(d["index"]).copy() for d in self._outputs]


@dataclass(frozen=True)
class Processor:
    """What matters of a processor for choosing an engine: its architecture and features."""

    machine: str  # platform.machine(): x86_64, aarch64, armv7l, ...
    features: frozenset[str]  # /proc/cpuinfo "flags" (x86) or "Features" (ARM)

    @classmethod
    def parse(cls, machine: str, cpuinfo: str) -> Processor:
        features: set[str] = set()
        for line in cpuinfo.splitlines():
            key, _, value = line.partition(":")
            if key.strip().lower() in ("flags", "features"):
                features |= set(value.split())
        return cls(machine.lower(), frozenset(features))

    @classmethod
    def this(cls) -> Processor:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo = ""
        return cls.parse(platform.machine(), cpuinfo)

    def describe(self) -> str:
        vector = [f for f in ("avx512f", "avx2", "avx", "asimd", "neon") if f in self.features]
        return f"{self.machine} with {vector[0].upper()}" if vector else self.machine


def onnxruntime_runs_on(cpu: Processor) -> bool:
    """Whether onnxruntime's published builds run on this processor."""
    if cpu.machine in ("x86_64", "amd64"):
        return "avx" in cpu.features
    return cpu.machine in ("aarch64", "arm64")


def preferred_engine(cpu: Processor) -> EngineName:
    """onnxruntime where it runs (it also drives GPUs), LiteRT elsewhere."""
    return "onnx" if onnxruntime_runs_on(cpu) else "tflite"


@functools.cache
def resolve_engine(choice: str) -> EngineName:
    """The engine for a setting: "auto" (by this processor), "onnx" or "tflite"."""
    auto = choice == "auto"  # this processor's engine, found once
    return preferred_engine(Processor.this()) if auto else choice  # type: ignore[return-value]


class EngineUnavailable(RuntimeError):
    """The model exists only in a format this processor's engine cannot run."""


def open_session(path: Path, threads: int = 1, engine: str = "auto") -> InferenceSession:
    """Open a model file with the engine chosen for this processor.

    Where LiteRT is the engine, an ONNX model runs from its ``.tflite`` twin beside it
    (fetched by the model store where the manifest has one); without a twin it cannot run.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".onnx", ".tflite"):
        raise ValueError(f"no inference engine for {path.name!r} (expected .onnx or .tflite)")
    if suffix == ".onnx" and resolve_engine(engine) == "tflite":
        twin = path.with_suffix(".tflite")
        if not twin.exists():
            raise EngineUnavailable(
                f"{path.name} needs onnxruntime, which this processor "
                f"({Processor.this().describe()}) cannot run, and has no .tflite twin"
            )
        path, suffix = twin, ".tflite"
    session = OnnxSession if suffix == ".onnx" else TFLiteSession
    return session(path, threads=threads)
