"""A small TFLite model with MoViNet's streaming interface, written with the TFLite schema.

No MoViNet weights can be downloaded here, so the action tests run a model of the same format
(a TFLite flatbuffer with a ``serving_default`` signature) and the same interface: an ``image``
input [1, 1, H, W, 3] float32, a float state and an int32 state that each call returns under
the same names, and ``logits`` [1, classes]. Its arithmetic is simple enough to recompute in
numpy: the float state adds up each frame's channel means, the int32 state counts frames, and
the logits are ``weights @ state + bias``. So a test can tell whether the frames were fed as
the model wants them and whether the states were carried from call to call.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import flatbuffers
import numpy as np
import tflite

CHANNEL_SUM = "state_channel_sum"
FRAME_COUNT = "state_frame_count"


@dataclass(frozen=True)
class StreamModel:
    path: Path
    weights: np.ndarray  # [classes, 3]
    bias: np.ndarray  # [classes]

    def expected_logits(self, frames: np.ndarray) -> np.ndarray:
        """What the model gives after streaming frames ([N, H, W, 3] float) one by one."""
        channel_sum = frames.reshape(len(frames), -1, 3).mean(axis=1).sum(axis=0)
        return self.weights @ channel_sum + self.bias


def write_stream_model(
    path: Path, height: int, width: int, classes: int, seed: int = 0, favour: int | None = None
) -> StreamModel:
    """Write the model; with favour, that class's bias wins over any input."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(0, 2, (classes, 3)).astype(np.float32)
    bias = rng.normal(0, 0.5, classes).astype(np.float32)
    if favour is not None:
        bias[favour] += 1000
    b = flatbuffers.Builder(1024)
    F32, I32 = tflite.TensorType.FLOAT32, tflite.TensorType.INT32

    buffers = [b""]  # buffer 0: the empty one that non-constant tensors use

    def constant(values: np.ndarray) -> int:
        buffers.append(values.tobytes())
        return len(buffers) - 1

    # (name, shape, type, buffer)
    tensors = [
        ("serving_default_image:0", [1, 1, height, width, 3], F32, 0),  # 0
        (f"serving_default_{CHANNEL_SUM}:0", [1, 3], F32, 0),  # 1
        (f"serving_default_{FRAME_COUNT}:0", [1], I32, 0),  # 2
        ("flat_shape", [3], I32, constant(np.array([1, height * width, 3], np.int32))),  # 3
        ("flat", [1, height * width, 3], F32, 0),  # 4
        ("mean_axis", [1], I32, constant(np.array([1], np.int32))),  # 5
        ("frame_mean", [1, 3], F32, 0),  # 6
        ("StatefulPartitionedCall:1", [1, 3], F32, 0),  # 7: new channel sum
        ("one", [1], I32, constant(np.array([1], np.int32))),  # 8
        ("StatefulPartitionedCall:2", [1], I32, 0),  # 9: new frame count
        ("weights", [classes, 3], F32, constant(weights)),  # 10
        ("bias", [classes], F32, constant(bias)),  # 11
        ("StatefulPartitionedCall:0", [1, classes], F32, 0),  # 12: logits
    ]
    codes = [tflite.BuiltinOperator.RESHAPE, tflite.BuiltinOperator.MEAN,
             tflite.BuiltinOperator.ADD, tflite.BuiltinOperator.FULLY_CONNECTED]
    # (opcode index, inputs, outputs)
    operators = [(0, [0, 3], [4]), (1, [4, 5], [6]), (2, [1, 6], [7]), (2, [2, 8], [9]),
                 (3, [7, 10, 11], [12])]

    def ints(values: list[int]) -> int:
        return b.CreateNumpyVector(np.array(values, dtype=np.int32))

    def table_vector(start, offsets: list[int]) -> int:
        start(b, len(offsets))
        for offset in reversed(offsets):
            b.PrependUOffsetTRelative(offset)
        return b.EndVector()

    tensor_offsets = []
    for name, shape, kind, buffer in tensors:
        name_offset, shape_offset = b.CreateString(name), ints(shape)
        tflite.TensorStart(b)
        tflite.TensorAddShape(b, shape_offset)
        tflite.TensorAddType(b, kind)
        tflite.TensorAddBuffer(b, buffer)
        tflite.TensorAddName(b, name_offset)
        tensor_offsets.append(tflite.TensorEnd(b))
    operator_offsets = []
    for code, inputs, outputs in operators:
        inputs_offset, outputs_offset = ints(inputs), ints(outputs)
        tflite.OperatorStart(b)
        tflite.OperatorAddOpcodeIndex(b, code)
        tflite.OperatorAddInputs(b, inputs_offset)
        tflite.OperatorAddOutputs(b, outputs_offset)
        operator_offsets.append(tflite.OperatorEnd(b))
    tensors_vector = table_vector(tflite.SubGraphStartTensorsVector, tensor_offsets)
    operators_vector = table_vector(tflite.SubGraphStartOperatorsVector, operator_offsets)
    inputs_vector, outputs_vector = ints([0, 1, 2]), ints([12, 7, 9])
    subgraph_name = b.CreateString("main")
    tflite.SubGraphStart(b)
    tflite.SubGraphAddTensors(b, tensors_vector)
    tflite.SubGraphAddInputs(b, inputs_vector)
    tflite.SubGraphAddOutputs(b, outputs_vector)
    tflite.SubGraphAddOperators(b, operators_vector)
    tflite.SubGraphAddName(b, subgraph_name)
    subgraph = tflite.SubGraphEnd(b)

    code_offsets = []
    for code in codes:
        tflite.OperatorCodeStart(b)
        tflite.OperatorCodeAddDeprecatedBuiltinCode(b, min(code, 127))
        tflite.OperatorCodeAddBuiltinCode(b, code)
        tflite.OperatorCodeAddVersion(b, 1)
        code_offsets.append(tflite.OperatorCodeEnd(b))
    buffer_offsets = []
    for data in buffers:
        data_offset = b.CreateNumpyVector(np.frombuffer(data, dtype=np.uint8)) if data else None
        tflite.BufferStart(b)
        if data_offset is not None:
            tflite.BufferAddData(b, data_offset)
        buffer_offsets.append(tflite.BufferEnd(b))

    def tensor_map(name: str, index: int) -> int:
        name_offset = b.CreateString(name)
        tflite.TensorMapStart(b)
        tflite.TensorMapAddName(b, name_offset)
        tflite.TensorMapAddTensorIndex(b, index)
        return tflite.TensorMapEnd(b)

    signature_inputs = [tensor_map("image", 0), tensor_map(CHANNEL_SUM, 1), tensor_map(FRAME_COUNT, 2)]
    signature_outputs = [tensor_map("logits", 12), tensor_map(CHANNEL_SUM, 7), tensor_map(FRAME_COUNT, 9)]
    inputs_map = table_vector(tflite.SignatureDefStartInputsVector, signature_inputs)
    outputs_map = table_vector(tflite.SignatureDefStartOutputsVector, signature_outputs)
    key = b.CreateString("serving_default")
    tflite.SignatureDefStart(b)
    tflite.SignatureDefAddInputs(b, inputs_map)
    tflite.SignatureDefAddOutputs(b, outputs_map)
    tflite.SignatureDefAddSignatureKey(b, key)
    tflite.SignatureDefAddSubgraphIndex(b, 0)
    signature = tflite.SignatureDefEnd(b)

    codes_vector = table_vector(tflite.ModelStartOperatorCodesVector, code_offsets)
    subgraphs_vector = table_vector(tflite.ModelStartSubgraphsVector, [subgraph])
    buffers_vector = table_vector(tflite.ModelStartBuffersVector, buffer_offsets)
    signatures_vector = table_vector(tflite.ModelStartSignatureDefsVector, [signature])
    description = b.CreateString("MoViNet-shaped stream test model")
    tflite.ModelStart(b)
    tflite.ModelAddVersion(b, 3)
    tflite.ModelAddOperatorCodes(b, codes_vector)
    tflite.ModelAddSubgraphs(b, subgraphs_vector)
    tflite.ModelAddDescription(b, description)
    tflite.ModelAddBuffers(b, buffers_vector)
    tflite.ModelAddSignatureDefs(b, signatures_vector)
    b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
    Path(path).write_bytes(b.Output())
    return StreamModel(Path(path), weights, bias)
