"""Cutting functional Keras models into a front and a back.

Student-teacher collaboration (STC) runs the student's front through the
teacher's frozen back, so we need both halves of a trained model as models
of their own that still use the original layers (and so the original
weights). `split_model` does this by walking the functional graph; it works
on any functional model or built `keras.Sequential`, including models with
skip connections, as long as exactly one tensor crosses the cut.

Reference:
    - [Knowledge Transfer via Student-Teacher Collaboration](
      https://openreview.net/forum?id=H1ersoRqtm) (STC), §3.2.
"""

import difflib
import re

import keras

from tfkd import _compat

__all__ = ["split_model", "cut_points", "block_boundaries"]

# Zoo naming scheme (see tfkd/models/resnet.py, wrn.py, cifar_vgg.py):
# block outputs end in "_out"; the stem and the final pre-pool activation
# are groups of layers named "stem_*" / "final_*", whose last layer is the
# boundary; "pool" and "logits" are the head.
_OUT_PATTERN = re.compile(r"_out$")
_GROUP_PREFIXES = ("stem_", "final_")
_HEAD_NAMES = ("pool", "logits")


def split_model(model, layer_name):
    """Cuts a functional model after a named layer into a front and a back.

    The front maps the model's inputs to the output of `layer_name`; the
    back maps a tensor of that shape to the model's outputs. Both are
    functional `keras.Model`s built from the *same* layer objects as `model`
    (no copies): training or freezing one of them trains or freezes the
    original, and `back(front(x))` equals `model(x)`.

    The cut is valid only where a single tensor crosses it. Cutting inside a
    residual block, where the skip connection jumps over `layer_name`, raises
    a `ValueError` that names the crossing tensors and the nearest valid
    block boundaries. `cut_points(model)` lists every valid cut.

    Args:
        model: A functional `keras.Model` (built with `keras.Model(inputs,
            outputs)`) or a built `keras.Sequential`.
        layer_name: String, name of the layer after which to cut. Must be a
            single-output layer used once in `model`, and not an input.

    Returns:
        A tuple `(front, back)` of functional `keras.Model`s named
        `"{model.name}_front"` and `"{model.name}_back"`. The back's input
        layer is named `"{layer_name}_cut"`. If `layer_name` is the model's
        output layer, the back is the identity.

    Raises:
        TypeError: If `model` is not a functional or Sequential Keras model
            (for example a subclassed model), or `layer_name` is not a string.
        ValueError: If `layer_name` is unknown, is an input, is used more
            than once, has several outputs, or if more than one tensor
            crosses the cut.

    Example:

    >>> import numpy as np
    >>> inputs = keras.Input((8,))
    >>> h = keras.layers.Dense(4, name="hidden")(inputs)
    >>> outputs = keras.layers.Dense(2, name="logits")(h)
    >>> model = keras.Model(inputs, outputs)
    >>> front, back = split_model(model, "hidden")
    >>> front.get_layer("hidden") is model.get_layer("hidden")
    True
    >>> x = np.ones((3, 8), "float32")
    >>> bool(np.allclose(back(front(x)), model(x)))
    True

    Reference:
        - [Student-Teacher Collaboration](
          https://openreview.net/forum?id=H1ersoRqtm), eq. 1:
          `O_c = T_sub(S_front(x))`.
    """
    if not isinstance(layer_name, str):
        raise TypeError(
            "`layer_name` must be a string naming a layer of the model. "
            f"Received: layer_name={layer_name!r} "
            f"(of type {type(layer_name).__name__})"
        )
    graph = _functional_graph(model)
    topo = _topological_nodes(graph)
    cut_node = _cut_node(model, graph, topo, layer_name)
    cut_tensor = cut_node.outputs[0]

    front_nodes = _ancestors(cut_node, topo)
    crossing = _crossing_tensors(graph, topo, front_nodes)
    if len(crossing) != 1 or crossing[0] is not cut_tensor:
        raise ValueError(_crossing_message(model, graph, topo, layer_name,
                                           cut_tensor, crossing))

    front = keras.Model(
        _compat.graph_inputs(graph), cut_tensor, name=f"{model.name}_front"
    )
    back = _build_back(model, graph, topo, front_nodes, cut_tensor,
                       layer_name)
    return front, back


def cut_points(model):
    """Lists the names of the layers after which `split_model` can cut.

    A layer is a valid cut point when exactly one tensor (its output) crosses
    the cut. In a residual network these are the block outputs and the
    layers between blocks, never the layers inside a block, where the
    skip connection also crosses.

    Args:
        model: A functional `keras.Model` or a built `keras.Sequential`.

    Returns:
        A list of layer names in topological order (inputs first).

    Example:

    >>> inputs = keras.Input((8,))
    >>> a = keras.layers.Dense(8, name="a")(inputs)
    >>> b = keras.layers.Dense(8, name="b")(a)
    >>> s = keras.layers.Add(name="s")([a, b])
    >>> model = keras.Model(inputs, keras.layers.Dense(2, name="c")(s))
    >>> cut_points(model)
    ['a', 's', 'c']
    """
    graph = _functional_graph(model)
    topo = _topological_nodes(graph)
    return [node.operation.name for node in _valid_cut_nodes(graph, topo)]


def block_boundaries(model):
    """Lists the block-boundary layer names of a tfkd zoo model.

    These are the layers at which the zoo models are meant to be tapped
    (feature distillation) or cut (`split_model`): the last layer of the
    stem (`stem_relu` / `stem_conv`), every block output (`*_out`, e.g.
    `stage2_block1_out`), the last layer before pooling (`final_relu`, if
    any), `pool` and `logits`. Only names that are valid cut points are
    returned, so any of them can be passed to `split_model`.

    Args:
        model: A functional `keras.Model` or a built `keras.Sequential`,
            usually one from `tfkd.models`.

    Returns:
        A list of layer names in topological order (inputs first). Empty if
        the model follows none of the naming scheme.

    Example:

    >>> from tfkd.models import resnet20
    >>> block_boundaries(resnet20())[:3]
    ['stem_relu', 'stage1_block1_out', 'stage1_block2_out']
    """
    return _boundary_filter(cut_points(model))


# --------------------------------------------------------------------------
# Graph helpers.


def _functional_graph(model):
    """Returns the `Functional` that holds `model`'s graph."""
    graph = _compat.functional_graph(model)
    if isinstance(model, keras.Sequential):
        if graph is None:
            raise ValueError(
                f"The Sequential model '{model.name}' is not built, so it has "
                "no graph to cut. Build it first: start it with "
                "`keras.Input(shape)` or call `model.build(input_shape)`. "
                f"Received: model={model.name!r} (unbuilt)"
            )
        return graph
    if graph is not None:
        return graph
    raise TypeError(
        "`split_model` needs a functional Keras model, built with "
        "`keras.Model(inputs, outputs)` or `keras.Sequential`, because it "
        "cuts the model's layer graph. Received: "
        f"model of type {type(model).__name__}, which has no such graph "
        "(a subclassed model, or not a model). Rewrite it functionally, or "
        "build the front and back yourself as two models."
    )


def _topological_nodes(graph):
    """All nodes of the graph, inputs first.

    Keras gives each node a depth (distance to the outputs); a parent is
    always deeper than its children, so sorting by decreasing depth is a
    topological order. Ties follow `graph._operations` for determinism.
    """
    op_index = {id(op): i for i, op in
                enumerate(_compat.graph_operations(graph))}
    nodes = []
    for depth, depth_nodes in _compat.nodes_by_depth(graph).items():
        for node in depth_nodes:
            nodes.append((-depth, op_index.get(id(node.operation), -1), node))
    nodes.sort(key=lambda item: item[:2])
    return [node for _, _, node in nodes]


def _producer(tensor):
    """The node that produced a KerasTensor."""
    return _compat.producer(tensor)[1]


def _ancestors(node, topo):
    """`node` and every graph node it depends on (including input nodes)."""
    in_graph = {id(n) for n in topo}
    seen = {}
    stack = [node]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen[id(current)] = current
        for tensor in current.input_tensors:
            parent = _producer(tensor)
            if id(parent) in in_graph:
                stack.append(parent)
    return seen


def _crossing_tensors(graph, topo, front_nodes):
    """Tensors made in the front (or by inputs) that the back needs.

    A tensor crosses if a node outside the front consumes it, or if it is a
    model output computed in the front.
    """
    crossing = {}
    for node in topo:
        if id(node) in front_nodes or node.is_input:
            continue
        for tensor in node.input_tensors:
            producer = _producer(tensor)
            if id(producer) in front_nodes or producer.is_input:
                crossing[id(tensor)] = tensor
    for tensor in graph.outputs:
        producer = _producer(tensor)
        if id(producer) in front_nodes or producer.is_input:
            crossing[id(tensor)] = tensor
    return list(crossing.values())


def _nodes_per_operation(topo):
    counts = {}
    for node in topo:
        counts[id(node.operation)] = counts.get(id(node.operation), 0) + 1
    return counts


def _valid_cut_nodes(graph, topo):
    """Nodes after which exactly their own (single) output crosses."""
    counts = _nodes_per_operation(topo)
    valid = []
    for node in topo:
        if node.is_input or len(node.outputs) != 1:
            continue
        if counts[id(node.operation)] != 1:
            continue
        crossing = _crossing_tensors(graph, topo, _ancestors(node, topo))
        if len(crossing) == 1 and crossing[0] is node.outputs[0]:
            valid.append(node)
    return valid


def _cut_node(model, graph, topo, layer_name):
    """Finds and checks the graph node of the layer to cut after."""
    matches = [n for n in topo if n.operation.name == layer_name]
    if not matches:
        names = [n.operation.name for n in topo]
        close = difflib.get_close_matches(layer_name, names, n=3)
        hint = f" Did you mean one of {close}?" if close else ""
        raise ValueError(
            f"No layer named '{layer_name}' in model '{model.name}'. "
            f"Received: layer_name={layer_name!r}.{hint} Existing layer "
            f"names, inputs first: {names}"
        )
    if len(matches) > 1:
        raise ValueError(
            f"Layer '{layer_name}' is used {len(matches)} times in model "
            f"'{model.name}' (a shared layer), so 'after {layer_name}' names "
            f"no single place in the graph. Received: "
            f"layer_name={layer_name!r}. Cut after a layer used once, e.g. "
            f"one of {_suggestions(graph, topo, matches[0])}."
        )
    node = matches[0]
    if node.is_input:
        raise ValueError(
            f"Layer '{layer_name}' is an input of model '{model.name}'; "
            "cutting after it would leave the front empty. Received: "
            f"layer_name={layer_name!r}. Cut after a later layer, e.g. "
            f"one of {cut_points(model)[:5]}."
        )
    if len(node.outputs) != 1:
        raise ValueError(
            f"Layer '{layer_name}' has {len(node.outputs)} outputs, but the "
            "back of a split model takes one tensor. Received: "
            f"layer_name={layer_name!r}. Cut after a single-output layer, "
            f"e.g. one of {_suggestions(graph, topo, node)}."
        )
    return node


def _suggestions(graph, topo, node):
    """The nearest valid cut points before and after `node`, as names.

    Block boundaries (zoo naming) are preferred; other valid cut points are
    used only if the model has none.
    """
    valid = _valid_cut_nodes(graph, topo)
    names = [n.operation.name for n in valid]
    boundary_names = set(_boundary_filter(names))
    preferred = [n for n in valid if n.operation.name in boundary_names]
    candidates = preferred or valid
    position = {id(n): i for i, n in enumerate(topo)}
    here = position[id(node)]
    before = [n for n in candidates if position[id(n)] < here]
    after = [n for n in candidates if position[id(n)] > here]
    picks = []
    if before:
        picks.append(before[-1].operation.name)
    if after:
        picks.append(after[0].operation.name)
    return picks


def _boundary_filter(names):
    last_in_group = {}
    for name in names:
        for prefix in _GROUP_PREFIXES:
            if name.startswith(prefix):
                last_in_group[prefix] = name
    keep = set(last_in_group.values()) | set(_HEAD_NAMES)
    return [n for n in names if n in keep or _OUT_PATTERN.search(n)]


def _describe(tensor, topo, front_nodes):
    """'<producer layer>' output (consumed by '<layer>', ...)."""
    producer = _producer(tensor).operation.name
    consumers = []
    for node in topo:
        if id(node) in front_nodes or node.is_input:
            continue
        if any(t is tensor for t in node.input_tensors):
            consumers.append(node.operation.name)
    text = f"output of '{producer}'"
    if consumers:
        text += " (used by " + ", ".join(f"'{c}'" for c in consumers) + ")"
    else:
        text += " (a model output)"
    return text


def _crossing_message(model, graph, topo, layer_name, cut_tensor, crossing):
    cut_node = _producer(cut_tensor)
    front_nodes = _ancestors(cut_node, topo)
    described = "; ".join(_describe(t, topo, front_nodes) for t in crossing)
    suggestions = _suggestions(graph, topo, cut_node)
    hint = (
        " or ".join(f"'{s}'" for s in suggestions)
        if suggestions
        else "none found"
    )
    return (
        f"Cannot cut model '{model.name}' after layer '{layer_name}': "
        f"{len(crossing)} tensors cross the cut, but the back of a split "
        f"model takes exactly one. Crossing: {described}. A skip connection "
        "or parallel branch jumps over this layer. Received: "
        f"layer_name={layer_name!r}. Cut at the nearest valid block "
        f"boundary instead: {hint}. `tfkd.models.cut_points(model)` lists "
        "every valid cut."
    )


def _build_back(model, graph, topo, front_nodes, cut_tensor, layer_name):
    """Re-calls the back's layers, in topological order, on a new Input."""
    layer_names = {op.name for op in _compat.graph_operations(graph)}
    input_name = f"{layer_name}_cut"
    while input_name in layer_names:
        input_name += "_"
    new_input = keras.Input(
        batch_shape=tuple(cut_tensor.shape),
        dtype=cut_tensor.dtype,
        name=input_name,
    )
    tensor_map = {id(cut_tensor): new_input}
    for node in topo:
        if id(node) in front_nodes or node.is_input:
            continue
        args, kwargs = node.arguments.fill_in(tensor_map)
        outputs = node.operation(*args, **kwargs)
        for old, new in zip(node.outputs, keras.tree.flatten(outputs)):
            tensor_map[id(old)] = new
    outputs = keras.tree.map_structure(
        lambda t: tensor_map[id(t)], _compat.graph_outputs(graph)
    )
    return keras.Model(new_input, outputs, name=f"{model.name}_back")
