"""Building an ONNX graph node by node from a converted network's named weights."""

from __future__ import annotations

from pathlib import Path

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

    def weight(self, name: str) -> str:
        """The network's weight ``name`` as an initializer of the same name."""
        return self.constant(name, self.get(name))

    def op(self, op_type: str, inputs: list[str], name: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [name], name=name, **attrs))
        return name

    def model(self, name: str, inputs: dict[str, list], outputs: dict[str, list], producer: str,
              doc_string: str) -> onnx.ModelProto:
        """The checked model of this graph, its float32 inputs and outputs given as name: dims,
        at opset 17, IR version 8 (loads in onnxruntime 1.13 and later)."""
        graph = helper.make_graph(self.nodes, name, [float_tensor(n, d) for n, d in inputs.items()],
                                  [float_tensor(n, d) for n, d in outputs.items()],
                                  self.initializers)
        model = helper.make_model(graph, producer_name=producer, doc_string=doc_string,
                                  opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model


def float_tensor(name: str, dims: list) -> onnx.ValueInfoProto:
    """A float32 graph input or output of the given dimensions (a name: free)."""
    return helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, dims)


def save_model(model: onnx.ModelProto, path: Path) -> None:
    """Write a model's deterministic bytes (the manifest pins their sha256)."""
    Path(path).write_bytes(model.SerializeToString(deterministic=True))
