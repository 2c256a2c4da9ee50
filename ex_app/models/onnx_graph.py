"""Building an ONNX graph node by node from a converted network's named weights."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


class GraphBuilder:
    """Nodes and initializers of a graph under construction, over a network's named weights;
    a weight the network lacks raises ``format_error``."""

    format_error: type[ValueError] = ValueError

    def __init__(self, weights: dict[str, np.ndarray]):
        self.weights = weights
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def get(self, name: str) -> np.ndarray:
        try:
            return self.weights[name]
        except KeyError:
            raise self.format_error(f"the weights have no {name}") from None

    def constant(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], name: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [name], name=name, **attrs))
        return name
