"""dlib's face-recognition ResNet as an ONNX graph, converted from dlib's own ``.dat`` file.

``dlib_face_recognition_resnet_model_v1.dat`` is dlib's binary serialization of a
``loss_metric`` network (the ``anet_type`` of dlib's Python ``face_recognition_model_v1``):
a 150×150 RGB face chip in, 128 floats out. The file holds every layer's kind, sizes and
weights, but not where the residual branches fork (tag and skip layers write only a version
number), so that topology is spelled out here and the file is checked against it, layer by
layer, to its last byte.

The graph computes what dlib computes. Two rewrites change no result beyond float rounding:
each ``affine`` layer (batch norm frozen for inference) is folded into the convolution
before it, and the input layer's ``(pixel - channel mean) / 256`` keeps its subtraction
while the division by 256 (a power of two: exact) moves into the first convolution's
weights. dlib's ``add_prev`` adds tensors of different shapes by zero-extending the smaller
one at the end of each axis; the graph does the same with ``Pad``.

Graph contract: input ``chips`` float32 [batch, 3, 150, 150], RGB values 0..255, channels
first (:func:`chips_to_batch` makes it from ``dlib.get_face_chip`` results); output
``embeddings`` float32 [batch, 128], the vectors dlib's ``compute_face_descriptor(chip)``
returns (its default ``num_jitters=1`` means no jittering). The conversion is deterministic:
the same ``.dat`` always gives the same ONNX bytes.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ex_app.models.onnx_graph import GraphBuilder, save_model

INPUT_NAME = "chips"
OUTPUT_NAME = "embeddings"
PRODUCER = "recognize.dlib_onnx"

# float_details marks infinities and NaN with these exponents.
_SPECIAL_EXPONENTS = {32000: math.inf, 32001: -math.inf, 32002: math.nan}


class DlibFormatError(ValueError):
    """The bytes are not the dlib network this converter knows, or they are damaged."""


class DlibReader:
    """Reads the values dlib's ``serialize()`` writes, from bytes in memory."""

    def __init__(self, data: bytes):
        self._data = data
        self.pos = 0

    def _take(self, count: int) -> bytes:
        end = self.pos + count
        if end > len(self._data):
            raise DlibFormatError(f"the data ends at byte {len(self._data)}, {end} needed")
        self.pos = end
        return self._data[end - count : end]

    def integer(self) -> int:
        """A signed integer: a control byte (byte count; 0x80 if negative), little-endian bytes."""
        control = self._take(1)[0]
        size = control & 0x0F
        if not 1 <= size <= 8:
            raise DlibFormatError(f"bad integer control byte {control:#x} at {self.pos - 1}")
        value = int.from_bytes(self._take(size), "little")
        return -value if control & 0x80 else value

    def unsigned(self) -> int:
        """An unsigned integer (the control byte's bits 0x70 are reserved and ignored)."""
        control = self._take(1)[0] & 0x8F
        if not 1 <= control <= 8:
            raise DlibFormatError(f"bad unsigned control byte {control:#x} at {self.pos - 1}")
        return int.from_bytes(self._take(control), "little")

    def real(self) -> float:
        """A float or double: an integer mantissa and an integer power-of-two exponent."""
        mantissa, exponent = self.integer(), self.integer()
        if exponent in _SPECIAL_EXPONENTS:
            return _SPECIAL_EXPONENTS[exponent]
        return math.ldexp(mantissa, exponent)

    def pair(self) -> tuple[int, int]:
        """Two integers: a window's, stride's or padding's rows and columns."""
        return self.integer(), self.integer()

    def flag(self) -> bool:
        """A bool, written as the character '1' or '0'."""
        char = self._take(1)
        if char not in (b"0", b"1"):
            raise DlibFormatError(f"bad bool {char!r} at {self.pos - 1}")
        return char == b"1"

    def string(self) -> str:
        """A std::string: its length, then its bytes."""
        return self._take(self.unsigned()).decode("latin-1")

    def version(self, *expected: int) -> int:
        """An integer version number, which must be one of ``expected``."""
        at, found = self.pos, self.integer()
        if found not in expected:
            raise DlibFormatError(f"version {found} at byte {at}, expected one of {expected}")
        return found

    def name(self, *expected: str) -> str:
        """A layer's version string, which must be one of ``expected``."""
        at, found = self.pos, self.string()
        if found not in expected:
            raise DlibFormatError(f"found {found!r} at byte {at}, expected one of {expected}")
        return found

    def tensor(self) -> np.ndarray:
        """A resizable_tensor: version 2, four dimensions, then little-endian float32 values."""
        self.version(2)
        shape = tuple(self.integer() for _ in range(4))
        values = np.frombuffer(self._take(4 * math.prod(shape)), dtype="<f4")
        return values.reshape(shape).astype(np.float32)

    def alias_tensor(self) -> tuple[int, ...]:
        """An alias_tensor: just the shape of a view into a layer's parameters."""
        self.version(1)
        return tuple(self.integer() for _ in range(4))


# Topology -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """One of dlib's computational layers (an add_layer); ``tag``: add_prev's other operand."""

    kind: str
    tag: int = 0


@dataclass(frozen=True)
class Tag:
    """dlib's tagN: remembers the output below it as number N."""

    id: int


@dataclass(frozen=True)
class Skip:
    """dlib's skipN: goes on from the output remembered as number N."""

    id: int


Node = Layer | Tag | Skip


def _block() -> list[Node]:
    """affine(con 3×3(relu(affine(con 3×3, the unit's stride)))), outermost first."""
    return [Layer("affine"), Layer("con"), Layer("relu"), Layer("affine"), Layer("con")]


def _residual() -> list[Node]:
    """relu(add_prev1(block(tag1))): a unit that keeps size and width."""
    return [Layer("relu"), Layer("add_prev", 1), *_block(), Tag(1)]


def _residual_down() -> list[Node]:
    """relu(add_prev2(avg_pool 2×2(skip1(tag2(block(tag1)))))): a unit that halves the size."""
    return [
        Layer("relu"), Layer("add_prev", 2), Layer("avg_pool"), Skip(1), Tag(2), *_block(), Tag(1)
    ]  # fmt: skip


def face_resnet_v1_topology() -> list[Node]:
    """dlib's face-recognition ResNet, outermost node first (the order dlib writes it)."""
    return [
        Layer("fc"), Layer("avg_pool"),  # avg_pool_everything
        *_residual_down(),  # 256 channels
        *_residual(), *_residual(), *_residual_down(),  # 256
        *_residual(), *_residual(), *_residual_down(),  # 128
        *_residual(), *_residual(), *_residual(), *_residual_down(),  # 64
        *_residual(), *_residual(), *_residual(),  # 32
        Layer("max_pool"), Layer("relu"), Layer("affine"), Layer("con"),
    ]  # fmt: skip


# Reading --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Conv:
    """A convolution: weights [out, in, rows, cols], bias [out]."""

    weights: np.ndarray
    bias: np.ndarray
    stride: tuple[int, int]
    padding: tuple[int, int]


@dataclass(frozen=True)
class Affine:
    """Per-channel ``x * scale + shift`` (dlib's inference stand-in for batch norm)."""

    scale: np.ndarray
    shift: np.ndarray


@dataclass(frozen=True)
class Pool:
    """Max or average pooling; a (0, 0) window pools each channel's whole plane."""

    kind: str
    window: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]


@dataclass(frozen=True)
class Relu:
    """max(x, 0)."""


@dataclass(frozen=True)
class AddPrev:
    """The sum of the input and the output remembered under ``tag``."""

    tag: int


@dataclass(frozen=True)
class FullyConnected:
    """``x @ weights`` with weights [inputs, outputs]; dlib's fc_no_bias."""

    weights: np.ndarray


Params = Conv | Affine | Pool | Relu | AddPrev | FullyConnected
Step = Params | Tag | Skip


@dataclass(frozen=True)
class DlibNetwork:
    """The input layer's settings, then each layer and tag or skip, innermost first."""

    channel_means: tuple[float, float, float]
    input_size: tuple[int, int]
    steps: tuple[Step, ...]


def _unsupported(what: str) -> DlibFormatError:
    return DlibFormatError(f"{what} is not part of dlib's face-recognition ResNet")


def _read_con(reader: DlibReader) -> Conv:
    version = reader.name("con_4", "con_5", "con_6")
    params = reader.tensor().ravel()
    count, rows, cols = reader.integer(), reader.integer(), reader.integer()
    stride, padding = reader.pair(), reader.pair()
    filters = reader.alias_tensor()
    reader.alias_tensor()  # the biases' shape
    for _ in range(4):  # learning-rate and weight-decay multipliers
        reader.real()
    if version in ("con_5", "con_6") and not reader.flag():
        raise _unsupported("a convolution without bias")
    if version == "con_6" and reader.flag():
        raise _unsupported("a convolution with a built-in relu")
    size = math.prod(filters)
    if filters[0] != count or filters[2:] != (rows, cols) or params.size != size + count:
        raise DlibFormatError(f"con parameters {params.size} do not fit filters {filters}")
    return Conv(params[:size].reshape(filters), params[size:], stride, padding)


def _read_affine(reader: DlibReader) -> Affine:
    version = reader.name("affine_", "affine_2")
    params = reader.tensor().ravel()
    scale_shape, shift_shape = reader.alias_tensor(), reader.alias_tensor()
    channels = scale_shape[1]
    if scale_shape != (1, channels, 1, 1) or shift_shape != scale_shape:
        raise _unsupported(f"an affine layer of shape {scale_shape}")
    if reader.integer() != 0:  # CONV_MODE
        raise _unsupported("an fc-mode affine layer")
    if version == "affine_2" and reader.flag():
        raise _unsupported("a disabled affine layer")
    if params.size != 2 * channels:
        raise DlibFormatError(f"affine parameters {params.size} do not fit {channels} channels")
    return Affine(params[:channels], params[channels : 2 * channels])


def _read_relu(reader: DlibReader) -> Relu:
    if reader.name("relu_", "relu_2") == "relu_2" and reader.flag():
        raise _unsupported("a disabled relu")
    return Relu()


def _read_pool(reader: DlibReader, kind: str) -> Pool:
    reader.name(f"{kind}_2")
    return Pool(kind, window=reader.pair(), stride=reader.pair(), padding=reader.pair())


def _read_fc(reader: DlibReader) -> FullyConnected:
    version = reader.name("fc_2", "fc_3")
    outputs, inputs = reader.unsigned(), reader.unsigned()
    params = reader.tensor().ravel()
    weights = reader.alias_tensor()
    reader.alias_tensor()  # the biases' shape
    if reader.integer() != 1:  # FC_NO_BIAS
        raise _unsupported("an fc layer with bias")
    for _ in range(4):
        reader.real()
    if version == "fc_3":
        reader.flag()  # use_bias, moot without a bias
    if weights != (inputs, outputs, 1, 1) or params.size != inputs * outputs:
        raise DlibFormatError(f"fc parameters {params.size} do not fit {inputs} → {outputs}")
    return FullyConnected(params.reshape(inputs, outputs))


_READERS = {"con": _read_con, "affine": _read_affine, "relu": _read_relu, "fc": _read_fc}


def _read_params(reader: DlibReader, layer: Layer) -> Params:
    if layer.kind in _READERS:
        return _READERS[layer.kind](reader)
    if layer.kind in ("max_pool", "avg_pool"):
        return _read_pool(reader, layer.kind)
    reader.name("add_prev_")
    return AddPrev(layer.tag)


def _skip_training_state(reader: DlibReader, version: int, over_input: bool) -> None:
    """What an add_layer writes after its layer: training state, of no use for inference."""
    for _ in range(3):  # setup called, gradient stale, output and gradient disabled
        reader.flag()
    reader.tensor()  # x_grad
    reader.tensor()  # cached_output
    if over_input:
        reader.tensor()  # grad_final
        if version == 3:
            reader.unsigned()  # sample expansion factor
    elif version == 2:
        reader.tensor()  # params_grad


def read_face_resnet(data: bytes) -> DlibNetwork:
    """Parse the bytes of ``dlib_face_recognition_resnet_model_v1.dat``.

    dlib writes the loss layer, then each layer's version number from the outermost in,
    then the input layer, then each layer's parameters from the innermost out.
    """
    topology = face_resnet_v1_topology()
    reader = DlibReader(data)
    reader.version(1)  # add_loss_layer
    if reader.name("loss_metric_", "loss_metric_2") == "loss_metric_2":
        reader.real()  # margin
        reader.real()  # distance threshold
    over_input = len(topology) - 1  # the layer right above the input layer
    versions = [
        reader.version(2, 3) if index == over_input
        else reader.version(1, 2) if isinstance(node, Layer)
        else reader.version(1)  # add_tag_layer, add_skip_layer
        for index, node in enumerate(topology)
    ]  # fmt: skip
    reader.name("input_rgb_image_sized")
    means = (reader.real(), reader.real(), reader.real())
    size = (reader.unsigned(), reader.unsigned())
    steps: list[Step] = []
    for index in reversed(range(len(topology))):
        node = topology[index]
        if isinstance(node, Layer):
            steps.append(_read_params(reader, node))
            _skip_training_state(reader, versions[index], over_input=index == over_input)
        else:
            steps.append(node)
    if reader.pos != len(data):
        raise DlibFormatError(f"{len(data) - reader.pos} bytes left after the network")
    return DlibNetwork(means, size, tuple(steps))


# Building the graph -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Value:
    """A tensor of the graph and its [channels, rows, columns]; the batch is free."""

    name: str
    shape: tuple[int, int, int]


def _plane(shape: tuple[int, int, int], window: tuple[int, int], stride: tuple[int, int],
           padding: tuple[int, int]) -> tuple[int, int]:
    """Rows and columns of a convolution's or pooling's output."""
    return tuple(1 + (shape[i + 1] + 2 * padding[i] - window[i]) // stride[i] for i in (0, 1))


def _window(window: tuple[int, int], stride: tuple[int, int],
            padding: tuple[int, int]) -> dict[str, list[int]]:
    """A convolution's or pooling's ONNX attributes (the same padding at both ends)."""
    return {"kernel_shape": list(window), "strides": list(stride), "pads": [*padding, *padding]}


class _GraphBuilder(GraphBuilder):
    """ONNX nodes and initializers under deterministic names: a stem and a running number."""

    def _name(self, stem: str) -> str:
        return f"{stem}_{len(self.nodes) + len(self.initializers)}"

    def constant(self, stem: str, value: np.ndarray) -> str:
        return super().constant(self._name(stem), value)

    def op(self, op_type: str, inputs: list[str], output: str = "", **attrs: Any) -> str:
        return super().op(op_type, inputs, output or self._name(op_type.lower()), **attrs)

    def conv(self, x: _Value, conv: Conv, affine: Affine, input_scale: float) -> _Value:
        """``affine(conv(x * input_scale))`` as one Conv node."""
        out_channels, in_channels, rows, cols = conv.weights.shape
        if in_channels != x.shape[0]:
            raise DlibFormatError(f"con expects {in_channels} channels, gets {x.shape[0]}")
        scale = affine.scale.astype(np.float64)
        weights = conv.weights.astype(np.float64) * input_scale * scale[:, None, None, None]
        bias = conv.bias.astype(np.float64) * scale + affine.shift
        inputs = [x.name, self.constant("weights", weights.astype(np.float32)),
                  self.constant("bias", bias.astype(np.float32))]
        out = self.op("Conv", inputs, **_window((rows, cols), conv.stride, conv.padding))
        plane = _plane(x.shape, (rows, cols), conv.stride, conv.padding)
        return _Value(out, (out_channels, *plane))

    def pool(self, x: _Value, pool: Pool) -> _Value:
        if pool.window == (0, 0):
            op_type = "GlobalAveragePool" if pool.kind == "avg_pool" else "GlobalMaxPool"
            return _Value(self.op(op_type, [x.name]), (x.shape[0], 1, 1))
        attrs = _window(pool.window, pool.stride, pool.padding)
        if pool.kind == "avg_pool":  # dlib averages only the part of a window inside the plane
            out = self.op("AveragePool", [x.name], count_include_pad=0, **attrs)
        else:
            out = self.op("MaxPool", [x.name], **attrs)
        return _Value(out, (x.shape[0], *_plane(x.shape, pool.window, pool.stride, pool.padding)))

    def _zero_extend(self, x: _Value, shape: tuple[int, int, int]) -> str:
        grow = [want - have for want, have in zip(shape, x.shape, strict=True)]
        if not any(grow):
            return x.name
        pads = np.array([0, 0, 0, 0, 0, *grow], dtype=np.int64)  # begins, then ends
        return self.op("Pad", [x.name, self.constant("pads", pads)])

    def add(self, x: _Value, y: _Value) -> _Value:
        """dlib's add_prev: the larger shape, the smaller operand zero-extended at the ends."""
        shape = tuple(max(a, b) for a, b in zip(x.shape, y.shape, strict=True))
        out = self.op("Add", [self._zero_extend(x, shape), self._zero_extend(y, shape)])
        return _Value(out, shape)


def build_onnx(network: DlibNetwork) -> onnx.ModelProto:
    """The ONNX model that computes ``network`` from raw RGB chips."""
    head = network.steps[-1]
    if not isinstance(head, FullyConnected):
        raise _unsupported(f"a network ending in {type(head).__name__}")
    outputs = head.weights.shape[1]
    graph = _GraphBuilder({})
    rows, cols = network.input_size
    means = np.array(network.channel_means, np.float32).reshape(1, 3, 1, 1)
    centred = graph.op("Sub", [INPUT_NAME, graph.constant("channel_means", means)])
    x = _Value(centred, (3, rows, cols))
    input_scale = 1 / 256  # dlib's input layer divides by 256; the first con does it here

    tags: dict[int, _Value] = {}
    steps = network.steps
    for index, step in enumerate(steps):
        if isinstance(step, Tag):
            tags[step.id] = x
        elif isinstance(step, Skip):
            x = tags[step.id]
        elif isinstance(step, Conv):
            affine = steps[index + 1] if index + 1 < len(steps) else None
            if not isinstance(affine, Affine):
                raise _unsupported("a con layer without an affine layer after it")
            x = graph.conv(x, step, affine, input_scale)
            input_scale = 1.0
        elif isinstance(step, Affine):
            if not isinstance(steps[index - 1], Conv):
                raise _unsupported("an affine layer that does not follow a con layer")
        elif isinstance(step, Relu):
            x = _Value(graph.op("Relu", [x.name]), x.shape)
        elif isinstance(step, Pool):
            x = graph.pool(x, step)
        elif isinstance(step, AddPrev):
            x = graph.add(x, tags[step.tag])
        else:
            inputs = step.weights.shape[0]
            if inputs != math.prod(x.shape):
                raise DlibFormatError(f"fc expects {inputs} inputs, gets {math.prod(x.shape)}")
            flat = graph.op("Flatten", [x.name], axis=1)
            graph.op("MatMul", [flat, graph.constant("fc_weights", step.weights)], OUTPUT_NAME)

    return graph.model(
        "dlib_face_recognition_resnet_model_v1", {INPUT_NAME: ["batch", 3, rows, cols]},
        {OUTPUT_NAME: ["batch", outputs]}, PRODUCER,
        "dlib's face-recognition ResNet v1 (CC0-1.0), converted from its .dat file. "
        f"Input {INPUT_NAME}: float32 [batch, 3, {rows}, {cols}], RGB 0..255, chips made "
        "by dlib.get_face_chip(image, landmarks, size=150, padding=0.25). "
        f"Output {OUTPUT_NAME}: float32 [batch, {outputs}], as compute_face_descriptor.",
    )


def convert_dlib_face_embedder(dat_path: Path, onnx_path: Path) -> None:
    """Write the ONNX equivalent of ``dlib_face_recognition_resnet_model_v1.dat``."""
    save_model(build_onnx(read_face_resnet(Path(dat_path).read_bytes())), onnx_path)


def chips_to_batch(chips: Sequence[np.ndarray]) -> np.ndarray:
    """The graph's ``chips`` input from H×W×3 uint8 RGB chips (``dlib.get_face_chip``'s)."""
    return np.ascontiguousarray(np.stack(chips).transpose(0, 3, 1, 2), dtype=np.float32)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m ex_app.models.dlib_onnx DAT ONNX``."""
    parser = argparse.ArgumentParser(
        prog="python -m ex_app.models.dlib_onnx",
        description="Convert dlib's dlib_face_recognition_resnet_model_v1.dat to ONNX.",
    )
    parser.add_argument("dat", type=Path, help="dlib's .dat file")
    parser.add_argument("onnx", type=Path, help="the .onnx file to write")
    args = parser.parse_args(argv)
    try:
        convert_dlib_face_embedder(args.dat, args.onnx)
    except DlibFormatError as error:
        parser.exit(1, f"{args.dat}: {error}\n")


if __name__ == "__main__":
    main()
