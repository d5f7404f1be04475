"""The SE block's form in an exported ONNX graph, and where the SE blocks are in one.

onnxruntime's x86 optimiser runs convolutions in a blocked channel layout (NCHWc) and keeps a tensor in
that layout only through the operators it knows there: GlobalAveragePool, activations, and Add/Mul whose
inputs have *equal* shapes. The SE block's plain formula x * s (Sec. 3, Eq. 4) has neither: the exporter
writes the squeeze as ReduceMean (or ReduceSum / Div) and the scale as a Mul of an N x C x H x W map by an
N x C x 1 x 1 gate, so each block converts its map out of the blocked layout and back (36 ReorderOutput and
31 ReorderInput nodes in SE-ResNet-50 against 1 in ResNet-50). `runtime_form` rewrites the two into
operators onnxruntime keeps blocked, with the same values:

- squeeze: a mean over every spatial axis (ReduceMean, or ReduceSum followed by a Div by H*W) ->
  GlobalAveragePool;
- scale: Mul(x, s) -> Mul(x, Resize(s)), the gate repeated over H x W by a nearest-neighbour Resize with
  constant scales (1, 1, H, W), which onnxruntime runs blocked (as its NCHWc Upsample), so the Mul sees
  equal shapes.

`se_nodes` finds the SE blocks (squeeze, excitation, scale) by structure, for `senet quantize`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

try:  # the `export` extra; callers check with `senet.interop.export.require` first
    import onnx
    from onnx import helper, numpy_helper
except ImportError:  # pragma: no cover
    onnx = None  # type: ignore[assignment]

SCALE_TAG = "senet_se_scale"  # the name prefix of the Resize that repeats a gate over H x W


@dataclass
class FormReport:
    """How many squeezes and scales `runtime_form` rewrote."""

    squeezes: int = 0
    scales: int = 0


def _shapes(model: "onnx.ModelProto") -> dict[str, list[int | str | None]]:
    """Every value's shape (static ints, symbolic names or None), from ONNX shape inference."""
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes: dict[str, list[int | str | None]] = {}
    graph = inferred.graph
    for value in list(graph.input) + list(graph.value_info) + list(graph.output):
        tensor = value.type.tensor_type
        if tensor.HasField("shape"):
            shapes[value.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim]
    for init in graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def _constants(graph: "onnx.GraphProto") -> dict[str, np.ndarray]:
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def _reduce_axes(node: "onnx.NodeProto", constants: dict[str, np.ndarray], rank: int) -> tuple[list[int], bool] | None:
    """(axes normalised to 0..rank-1, keepdims) of a ReduceMean / ReduceSum node, None if not constant."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if "axes" in attrs:
        axes = list(attrs["axes"])
    elif len(node.input) > 1 and node.input[1]:
        if node.input[1] not in constants:
            return None
        axes = [int(a) for a in constants[node.input[1]].reshape(-1)]
    else:
        return None
    return sorted(a % rank for a in axes), bool(attrs.get("keepdims", 1))


def _static(shape: list[int | str | None] | None) -> bool:
    return shape is not None and all(isinstance(d, int) and d > 0 for d in shape[1:])


def _only_user(value: str, op: str, consumers: dict[str, list["onnx.NodeProto"]]) -> "onnx.NodeProto | None":
    users = consumers.get(value, [])
    return users[0] if len(users) == 1 and users[0].op_type == op and users[0].input[0] == value else None


def _squeeze_chain(node: "onnx.NodeProto", shape: list[int | str | None] | None, constants: dict[str, np.ndarray],
                   consumers: dict[str, list["onnx.NodeProto"]]) -> list["onnx.NodeProto"] | None:
    """The nodes that compute a spatial mean of a 4-D map kept as (N, C, 1, 1), starting at the reduction
    `node`: ReduceMean, or ReduceSum then a Div by H * W; without keepdims, then an Unsqueeze of the two
    axes. None if `node` starts no such chain."""
    if not shape or len(shape) != 4:
        return None
    axes = _reduce_axes(node, constants, 4)
    if axes is None or axes[0] != [2, 3]:
        return None
    chain = [node]
    if node.op_type == "ReduceSum":  # a mean written as a sum / (H * W)
        div = _only_user(node.output[0], "Div", consumers)
        divisor = None if div is None else constants.get(div.input[1])
        if div is None or divisor is None or divisor.size != 1 or not _static(shape):
            return None
        if float(divisor.reshape(-1)[0]) != float(shape[2] * shape[3]):  # type: ignore[operator]
            return None
        chain.append(div)
    if not axes[1]:  # (N, C): only where an Unsqueeze restores (N, C, 1, 1)
        unsqueeze = _only_user(chain[-1].output[0], "Unsqueeze", consumers)
        if unsqueeze is None:
            return None
        attrs = {a.name: helper.get_attribute_value(a) for a in unsqueeze.attribute}
        restored = attrs.get("axes")
        if restored is None and len(unsqueeze.input) > 1:
            restored = constants.get(unsqueeze.input[1])
        if restored is None or sorted(int(a) % 4 for a in np.asarray(restored).reshape(-1)) != [2, 3]:
            return None
        chain.append(unsqueeze)
    return chain


def runtime_form(model: "onnx.ModelProto") -> FormReport:
    """Rewrite, in place, every SE squeeze into GlobalAveragePool and every SE scale Mul(x[N,C,H,W], s[N,C,1,1])
    into Mul(x, Resize(s, scales=(1, 1, H, W), nearest)); the values are the same (module docstring)."""
    graph = model.graph
    shapes = _shapes(model)
    constants = _constants(graph)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    report = FormReport()
    dropped: list[onnx.NodeProto] = []
    for node in list(graph.node):
        if node.op_type in ("ReduceMean", "ReduceSum") and node.input:
            chain = _squeeze_chain(node, shapes.get(node.input[0]), constants, consumers)
            if chain is None:
                continue
            node.output[0] = chain[-1].output[0]
            dropped += chain[1:]
            node.op_type = "GlobalAveragePool"
            del node.input[1:]
            del node.attribute[:]
            report.squeezes += 1
    for node in dropped:
        graph.node.remove(node)
    scales: list[tuple[int, onnx.NodeProto]] = []
    for index, node in enumerate(graph.node):
        if node.op_type != "Mul" or len(node.input) != 2:
            continue
        a, b = (shapes.get(name) for name in node.input)
        for map_index, (x, s) in enumerate(((a, b), (b, a))):
            if x is None or s is None or len(x) != 4 or len(s) != 4 or not _static(x):
                continue
            if s[1] == x[1] and s[2] == 1 and s[3] == 1 and x[2] * x[3] > 1 and s[0] == x[0]:  # type: ignore[operator]
                scales.append((map_index, node))
                break
    for map_index, node in scales:
        x_name, s_name = node.input[map_index], node.input[1 - map_index]
        height, width = shapes[x_name][2], shapes[x_name][3]
        name = f"{SCALE_TAG}_{report.scales}"
        factors = numpy_helper.from_array(np.array([1, 1, height, width], dtype=np.float32), name + "_scales")
        graph.initializer.append(factors)
        resize = helper.make_node(
            "Resize", [s_name, "", factors.name], [name + "_gate"], name=name, mode="nearest",
            coordinate_transformation_mode="asymmetric", nearest_mode="floor",
        )
        position = list(graph.node).index(node)
        graph.node.insert(position, resize)
        node.input[1 - map_index] = resize.output[0]
        report.scales += 1
    return report


def se_nodes(model: "onnx.ModelProto", *, scale: bool = True) -> list[str]:
    """The names of the nodes of every SE block in an exported graph: the squeeze, the excitation (FCs,
    activation, gate, and the gate's Resize in the runtime form) and, with `scale`, the scale (the Mul).

    Found by structure, whatever the exporter named them: a Mul(x, s) where s is computed from x alone
    through a global pooling of x (GlobalAveragePool, ReduceMean, ReduceSum/Div) and per-channel operators.
    """
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    names: list[str] = []
    pools = ("GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceSum", "ReduceMax")
    for node in graph.node:
        if node.op_type != "Mul" or len(node.input) != 2:
            continue
        for x, s in ((node.input[0], node.input[1]), (node.input[1], node.input[0])):
            block = _gate_nodes(s, x, producer, pools)
            if block:
                names += [n.name for n in block] + ([node.name] if scale else [])
                break
    return list(dict.fromkeys(names))


def _gate_nodes(value: str, x: str, producer: dict[str, "onnx.NodeProto"], pools: Iterable[str], limit: int = 16) -> list["onnx.NodeProto"]:
    """The nodes between a pooling of `x` and `value` (the gate), or [] if `value` is not computed from a
    pooling of `x` (with constants) within `limit` nodes."""
    found: list[onnx.NodeProto] = []
    frontier = [value]
    reached_pool = False
    while frontier:
        name = frontier.pop()
        node = producer.get(name)
        if node is None:
            continue  # an initializer or a graph input: a weight
        if node in found:
            continue
        found.append(node)
        if len(found) > limit:
            return []
        if node.op_type in pools:
            if node.input[0] != x:
                return []
            reached_pool = True
            continue
        for name in node.input:
            if name == x:
                return []  # x itself enters the gate other than through the pooling: not an SE block
            if name:
                frontier.append(name)
    return found if reached_pool else []
