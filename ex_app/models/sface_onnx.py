"""OpenCV Zoo's SFace as a plain float32 ONNX graph that onnxruntime loads and batches.

The published file (``face_recognition_sface_2021dec_int8bq.onnx``) stores its weights as
int8 blocks that ``DequantizeLinear`` + ``Reshape`` nodes expand at every run, and it also
declares 29 graph inputs that nothing reads: onnxruntime refuses it as it is. The converter
computes every weight once (``(q - zero_point) * scale`` per block, then the reshape), keeps
only the image input ``data`` with a free batch dimension, and drops what no node uses. The
network is unchanged otherwise: ``data`` [batch, 3, 112, 112] RGB 0..255 of an aligned
face, ``fc1`` [batch, 128] out. The bytes are deterministic, so the manifest pins them.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ex_app.models.onnx_graph import float_tensor, save_model

INPUT_NAME = "data"
OUTPUT_NAME = "fc1"
BATCH_DIM = "batch"


def _dequantize(quantized: np.ndarray, scales: np.ndarray, zero_points: np.ndarray,
                axis: int, block_size: int) -> np.ndarray:
    """DequantizeLinear with per-block scales along ``axis`` (block_size 0: per axis)."""
    if block_size:
        length = quantized.shape[axis]
        scales = np.repeat(scales, block_size, axis=axis).take(range(length), axis=axis)
        zero_points = np.repeat(zero_points, block_size, axis=axis).take(range(length), axis=axis)
    elif scales.ndim == 1 and quantized.ndim > 1:
        shape = [1] * quantized.ndim
        shape[axis] = -1
        scales, zero_points = scales.reshape(shape), zero_points.reshape(shape)
    values = (quantized.astype(np.float32) - zero_points.astype(np.float32)) * scales
    return values.astype(np.float32)


def float32_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with its dequantized weights as float32 initializers and one batched input."""
    graph = model.graph
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    folded: dict[str, np.ndarray] = {}
    kept = []
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and all(name in constants for name in node.input):
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            quantized, scales, zero_points = (constants[name] for name in node.input)
            axis, block_size = attrs.get("axis", 1), attrs.get("block_size", 0)
            value = _dequantize(quantized, scales, zero_points, axis, block_size)
            folded[node.output[0]] = constants[node.output[0]] = value
        elif node.op_type == "Reshape" and node.input[0] in folded and node.input[1] in constants:
            value = folded[node.input[0]].reshape(constants[node.input[1]])
            folded[node.output[0]] = constants[node.output[0]] = value
        else:
            kept.append(node)

    used = {name for node in kept for name in node.input}
    initializers = [numpy_helper.from_array(constants[name], name)
                    for name in sorted(used) if name in constants]
    image = float_tensor(INPUT_NAME, [BATCH_DIM, 3, 112, 112])
    embedding = float_tensor(OUTPUT_NAME, [BATCH_DIM, 128])
    new_graph = helper.make_graph(kept, graph.name, [image], [embedding], initializers)
    result = helper.make_model(new_graph, opset_imports=list(model.opset_import),
                               producer_name="recognize sface_onnx", ir_version=model.ir_version)
    onnx.checker.check_model(result)
    return result


def convert_sface(source: Path, target: Path) -> None:
    """Write the float32, batched SFace graph made from the published int8 file."""
    save_model(float32_graph(onnx.load(str(source))), target)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="face_recognition_sface_2021dec_int8bq.onnx")
    parser.add_argument("target", type=Path, help="where to write the float32 ONNX")
    args = parser.parse_args(argv)
    convert_sface(args.source, args.target)


if __name__ == "__main__":
    main()
