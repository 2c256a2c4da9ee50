"""musicnn as an ONNX graph, built from the TensorFlow checkpoints PyPI's ``musicnn`` 0.1.0
ships (``MSD_musicnn``, ``MTT_musicnn``), read without TensorFlow.

The network (Pons & Serra's musicnn, in inference mode): a batch norm of the mel patch; a
front end of two timbral convolutions (7×38 and 7×67, 204 filters, time padded by 3) and
three temporal ones (128×1, 64×1, 32×1, 51 filters, "same"), each ReLU then batch norm then
a max over frequency; a mid end of three 7-frame convolutions of 64 filters with residual
adds; a back end of max and mean over time (interleaved per feature, as TensorFlow's
flatten of their concat), batch norm, dense 200 + ReLU + batch norm, dense 50 + sigmoid.
Every batch norm has epsilon 1e-3. The graph works channels-first: a [batch, time, features]
map of the original is [batch, features, time] here.

Graph contract: input ``melspec:0`` float32 [patches, 187, 96] (log mel patches as the
manifest says); output ``tags:0`` float32 [patches, 50] sigmoid scores. Deterministic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from ex_app.models.onnx_graph import GraphBuilder, save_model
from ex_app.models.tf_checkpoint import read_checkpoint

INPUT_NAME = "melspec:0"
OUTPUT_NAME = "tags:0"
FRAMES = 187
MELS = 96
BN_EPSILON = 1e-3
PRODUCER = "recognize.musicnn_onnx"
TIMBRAL = ("conv2d", "conv2d_1")  # with batch_normalization_1, _2
TEMPORAL = ("conv2d_2", "conv2d_3", "conv2d_4")  # with batch_normalization_3, _4, _5
MIDEND = ("conv2d_5", "conv2d_6", "conv2d_7")  # with batch_normalization_6, _7, _8


class MusicnnFormatError(ValueError):
    """The checkpoint is not the musicnn network this converter knows."""


class _Graph(GraphBuilder):
    format_error = MusicnnFormatError

    def batch_norm(self, x: str, layer: str) -> str:
        """TensorFlow's frozen batch norm over axis 1 (channels-first)."""
        parts = ("gamma", "beta", "moving_mean", "moving_variance")
        inputs = [x] + [self.weight(f"{layer}/{part}") for part in parts]
        return self.op("BatchNormalization", inputs, f"{layer}/bn", epsilon=BN_EPSILON)

    def conv_relu_bn(self, x: str, conv: str, bn: str, pads: tuple[int, int]) -> str:
        """conv (TensorFlow kernel [rows, cols, in, out]) + bias, ReLU, batch norm."""
        kernel = self.get(f"{conv}/kernel")
        weights = self.constant(f"{conv}/kernel", kernel.transpose(3, 2, 0, 1))
        bias = self.weight(f"{conv}/bias")
        rows, cols = kernel.shape[:2]
        y = self.op("Conv", [x, weights, bias], f"{conv}/conv", kernel_shape=[rows, cols],
                    pads=[pads[0], 0, pads[1], 0])
        return self.batch_norm(self.op("Relu", [y], f"{conv}/relu"), bn)

    def axes(self, name: str, values: list[int]) -> str:
        return self.constant(name, np.array(values, np.int64))


def build_onnx(variables: dict[str, np.ndarray], name: str) -> onnx.ModelProto:
    """The ONNX model of one musicnn checkpoint."""
    g = _Graph(variables)
    squeeze_3 = g.axes("axes_3", [3])
    # [patches, frames, mels] -> [patches, 1, frames, mels], normalised.
    x = g.op("Unsqueeze", [INPUT_NAME, g.axes("axes_1", [1])], "input")
    x = g.batch_norm(x, "batch_normalization")

    front = []
    for number, conv in enumerate(TIMBRAL + TEMPORAL, start=1):
        rows = g.get(f"{conv}/kernel").shape[0]
        pads = (3, 3) if conv in TIMBRAL else ((rows - 1) // 2, rows // 2)
        y = g.conv_relu_bn(x, conv, f"batch_normalization_{number}", pads)
        y = g.op("ReduceMax", [y], f"{conv}/max_over_frequency", axes=[3], keepdims=0)
        front.append(y)  # [patches, filters, frames]
    features = g.op("Concat", front, "frontend", axis=1)  # [patches, 561, frames]

    # Each mid-end layer convolves all features of 7 frames: features as the image's width.
    midend = [features]
    layer_input = g.op("Unsqueeze", [g.op("Transpose", [features], "frontend_t", perm=[0, 2, 1]),
                                      g.axes("axes_1b", [1])], "midend_in")  # fmt: skip
    residual = None
    for number, conv in enumerate(MIDEND, start=6):
        y = g.conv_relu_bn(layer_input, conv, f"batch_normalization_{number}", (3, 3))
        y = g.op("Squeeze", [y, squeeze_3], f"{conv}/squeeze")  # [patches, 64, frames]
        if residual is not None:
            y = g.op("Add", [y, residual], f"{conv}/residual")
        residual = y
        midend.append(y)
        layer_input = g.op("Unsqueeze", [g.op("Transpose", [y], f"{conv}/t", perm=[0, 2, 1]),
                                          g.axes(f"{conv}/axes", [1])], f"{conv}/next")  # fmt: skip
    features = g.op("Concat", midend, "midend", axis=1)  # [patches, 753, frames]

    pooled_max = g.op("ReduceMax", [features], "max_pool", axes=[2], keepdims=1)
    pooled_mean = g.op("ReduceMean", [features], "mean_pool", axes=[2], keepdims=1)
    pooled = g.op("Concat", [pooled_max, pooled_mean], "pool", axis=2)  # [patches, 753, 2]
    flat = g.op("Flatten", [pooled], "flat_pool", axis=1)  # max, mean of feature 0, then 1...
    x = g.batch_norm(flat, "batch_normalization_9")
    x = g.op("Gemm", [x, g.weight("dense/kernel"), g.weight("dense/bias")], "dense")
    x = g.batch_norm(g.op("Relu", [x], "dense/relu"), "batch_normalization_10")
    x = g.op("Gemm", [x, g.weight("dense_1/kernel"), g.weight("dense_1/bias")], "logits")
    g.op("Sigmoid", [x], OUTPUT_NAME)
    tags = g.get("dense_1/bias").shape[0]

    return g.model(name, {INPUT_NAME: ["patches", FRAMES, MELS]}, {OUTPUT_NAME: ["patches", tags]},
                   PRODUCER, f"musicnn {name} (ISC), converted from its TensorFlow checkpoint.")


def _convert(index: Path, data: Path, output: Path, name: str) -> None:
    save_model(build_onnx(read_checkpoint(index, data), name), output)


def convert_musicnn_msd(index: Path, data: Path, output: Path) -> None:
    """Write the ONNX model of ``MSD_musicnn`` (50 Million Song Dataset tags)."""
    _convert(index, data, output, "MSD_musicnn")


def convert_musicnn_mtt(index: Path, data: Path, output: Path) -> None:
    """Write the ONNX model of ``MTT_musicnn`` (50 MagnaTagATune tags)."""
    _convert(index, data, output, "MTT_musicnn")
