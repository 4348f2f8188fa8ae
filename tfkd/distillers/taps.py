"""Taps: one fused extractor per network, for every layer the terms read.

A distiller's terms name the layers they need (`None` for the logits).
`Extractor` runs each network's functional graph once per step and
collects, on the way, the logits and every tapped layer's output, however
many terms read it.

- **Nested models.** A tap name may be a path through nested functional
  models, `/`-separated (Keras forbids `/` in layer names), e.g.
  `"MobileNetV3Small/expanded_conv_2_add"` for a `keras.applications`
  backbone used as a layer. The nested model's node runs through the
  nested model's own graph, so the network still runs once, and no layer
  is called on new symbolic inputs (which would add inbound nodes to the
  user's layers and break their `layer.output`).
- **Logits.** A network ending in a softmax (a `Softmax` layer, an
  `Activation("softmax")`, or a `Dense` / convolution with
  `activation="softmax"`, as `keras.applications` classifiers are built by
  default) is read before it: the extractor's logits are the softmax's
  input, or the same layer computed without its activation (same weights).
  It warns once; a softmax it cannot reach this way is refused. The model
  itself is unchanged.
"""

import contextlib
import difflib
import re
import warnings

import keras
import tensorflow as tf

from tfkd import _compat
from tfkd.checks import IMAGES_KEY
from tfkd.checks import split_cached_inputs
from tfkd.optimizers import assert_finite_images
from tfkd.terms.base import LOGITS

#: Separates the names of a tap path through nested models.
SEPARATOR = "/"

# Layers whose `call` ends with `self.activation(x)`: without it they
# compute the pre-softmax logits with their own weights.
_ACTIVATION_LAST = (
    keras.layers.Dense, keras.layers.EinsumDense,
    keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
    keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose, keras.layers.SeparableConv1D,
    keras.layers.SeparableConv2D, keras.layers.DepthwiseConv1D,
    keras.layers.DepthwiseConv2D,
)
# Layers that only move values: a softmax behind them still makes the
# output probabilities, but its input is no longer the output's logits.
_SHAPE_ONLY = (keras.layers.Flatten, keras.layers.Reshape,
               keras.layers.Identity, keras.layers.Dropout)


def _is_graph(layer):
    """A nested model whose graph the extractor can walk."""
    return isinstance(layer, keras.Model) and _compat.is_functional(layer)


def layer_paths(model):
    """Names of `model`'s layers, nested functional models' layers as
    `/`-separated paths (e.g. `"backbone/conv1"`)."""
    paths = []
    for layer in model.layers:
        paths.append(layer.name)
        if _is_graph(layer):
            paths += [f"{layer.name}{SEPARATOR}{p}" for p in layer_paths(layer)]
    return paths


#: At most this many layer names are listed in an error message.
MAX_LISTED = 20


def _last(path):
    return path.rsplit(SEPARATOR, 1)[-1]


def missing_layer_hint(model, name, paths=None):
    """The end of a "no such layer" error: the closest names, bounded.

    Suggests the path of a nested layer whose own name is `name` (a
    forgotten nested-model prefix, or the wrong one), then the paths
    closest to `name` (`difflib`), and lists at most `MAX_LISTED` of the
    model's layers, so a large backbone (MobileNetV3 has hundreds of
    nested layers) still gets a message one can read.

    Args:
        model: The model searched.
        name: The layer name or `/`-path that was not found.
        paths: The names to choose from (default: `layer_paths(model)`).

    Returns:
        A string starting with a space, e.g. `" Did you mean
        'backbone/conv1'? ..."`.

    Example:

    >>> from tfkd import testing
    >>> model = testing.tiny_conv_model("net", width=4)
    >>> missing_layer_hint(model, "conv_2")
    " Did you mean 'conv2' or 'conv1'? Existing layers: ['images', 'conv1', 'conv2', 'pool', 'logits']."
    """
    paths = layer_paths(model) if paths is None else list(paths)
    # The same layer name under a nested model: the prefix was forgotten
    # (or another model's was used).
    suggestions = [p for p in paths
                   if SEPARATOR in p and _last(p) == _last(name)]
    suggestions += difflib.get_close_matches(name, paths, n=3, cutoff=0.6)
    # Nested paths compared by their last part: a typo inside a prefix.
    by_last = {}
    for p in paths:
        by_last.setdefault(_last(p), p)
    suggestions += [by_last[n] for n in difflib.get_close_matches(
        _last(name), list(by_last), n=3, cutoff=0.6)]
    suggestions = list(dict.fromkeys(s for s in suggestions if s != name))
    text = ""
    if suggestions:
        text += " Did you mean " + " or ".join(
            repr(s) for s in suggestions[:3]) + "?"
    if len(paths) <= MAX_LISTED:
        return text + f" Existing layers: {paths}."
    # Top-level names first: nested models' many paths come after them.
    top = [p for p in paths if SEPARATOR not in p]
    listed = (top if len(top) <= MAX_LISTED else
              top[:MAX_LISTED // 2] + ["..."] + top[-MAX_LISTED // 2:])
    return text + (
        f" The model has {len(paths)} layers and nested paths; its top-level "
        f"layers: {listed}. `tfkd.distillers.taps.layer_paths(model)` lists "
        "every path."
    )


def find_layer(model, path):
    """The layer at `path` (a name, or a `/`-separated path through nested
    models), or `None` if there is none."""
    layer = None
    for i, name in enumerate(path.split(SEPARATOR)):
        if i and not _is_graph(layer):
            return None
        owner = model if layer is None else layer
        if name not in [item.name for item in owner.layers]:
            return None
        layer = owner.get_layer(name)
    return layer


def _nodes_in(graph_model, layer):
    """The nodes of `graph_model`'s own graph at which `layer` is called
    (nodes elsewhere, e.g. in another model sharing the layer, are not)."""
    graph = _compat.functional_graph(graph_model)
    return [node for nodes in _compat.nodes_by_depth(graph).values()
            for node in nodes if node.operation is layer]


def _single_output(model, role):
    outputs = model.outputs
    if len(outputs) != 1:
        shapes = [tuple(t.shape) for t in outputs]
        raise ValueError(
            f"`{role}` must output one logits tensor, but the {role} model "
            f"{model.name!r} has {len(outputs)} outputs (shapes {shapes}). "
            "Pass a single-output view, e.g. "
            f"`keras.Model({role}.inputs, {role}.outputs[0])`."
        )
    return outputs[0]


def _is_softmax(fn):
    # `keras.activations.softmax`, `keras.ops.softmax`, `tf.nn.softmax`.
    return getattr(fn, "__name__", None) in ("softmax", "softmax_v2")


def _is_last_axis(axis, rank):
    axes = axis if isinstance(axis, (list, tuple)) else (axis,)
    return rank is not None and len(axes) == 1 and axes[0] in (-1, rank - 1)


@contextlib.contextmanager
def _without_activation(layer):
    """`layer` computes its pre-activation output while active (the same
    weights; only the call being traced sees it)."""
    activation = layer.activation
    layer.activation = keras.activations.linear
    try:
        yield
    finally:
        layer.activation = activation


class _Graph:
    """How one functional model (the network, or a model nested in it) is
    run: which layers to record, which nested models to run through their
    own plan, and the final softmax to skip."""

    def __init__(self, model):
        self.model = model
        self.record = {}    # id(layer) -> tap names recorded at its output
        self.nested = {}    # id(nested model) -> _Graph
        self.unwrap = None  # (layer, "input" | "activation" | "nested")

    def sub(self, layer):
        if id(layer) not in self.nested:
            self.nested[id(layer)] = _Graph(layer)
        return self.nested[id(layer)]

    def final_activation(self, logits):
        """The unwrapped softmax applied to `logits` (the model's true
        output, for a tap of a layer on the unwrapped path)."""
        layer, kind = self.unwrap
        if kind == "nested":
            return self.nested[id(layer)].final_activation(logits)
        if kind == "input":
            return layer(logits)
        return layer.activation(logits)

    def run(self, inputs, training, found):
        """The model's output (logits when unwrapped), recording taps in
        `found`."""

        def operation_fn(layer):
            call = _compat.layer_call(layer, training)
            keys = self.record.get(id(layer), ())
            unwrap = self.unwrap is not None and self.unwrap[0] is layer
            if id(layer) in self.nested:
                call = self._nested_call(self.nested[id(layer)], training,
                                         found)
            if unwrap and self.unwrap[1] == "input":
                call = self._input_call(call, keys, found)
            elif unwrap and self.unwrap[1] == "activation":
                call = self._pre_activation_call(layer, call, keys, found)
            elif unwrap and keys:
                # A nested model on the unwrapped path, itself tapped.
                call = self._recording(
                    call, keys, found,
                    self.nested[id(layer)].final_activation)
            elif keys:
                call = self._recording(call, keys, found)
            return call

        if self.record:
            # An input layer is not a node the graph walk computes.
            for tensor, value in zip(self.model.inputs,
                                     tf.nest.flatten(inputs)):
                layer, _ = _compat.producer(tensor)
                for key in self.record.get(id(layer), ()):
                    found[key] = value
        return _compat.run_graph(self.model, inputs, operation_fn)

    @staticmethod
    def _nested_call(plan, training, found):
        def call(*args, **kwargs):
            # As Keras's graph walk: the outer `training` wins over the one
            # the nested model was called with.
            mode = training if training is not None else kwargs.get(
                "training")
            return plan.run(args[0], mode, found)
        return call

    @staticmethod
    def _recording(call, keys, found, transform=None):
        def recorded(*args, **kwargs):
            outputs = call(*args, **kwargs)
            value = outputs if transform is None else transform(outputs)
            for key in keys:
                found[key] = value
            return outputs
        return recorded

    @staticmethod
    def _input_call(call, keys, found):
        def logits(*args, **kwargs):
            if keys:
                value = call(*args, **kwargs)
                for key in keys:
                    found[key] = value
            return args[0]
        return logits

    @staticmethod
    def _pre_activation_call(layer, call, keys, found):
        def logits(*args, **kwargs):
            with _without_activation(layer):
                outputs = call(*args, **kwargs)
            if keys:
                value = layer.activation(outputs)
                for key in keys:
                    found[key] = value
            return outputs
        return logits


class _Runner(keras.layers.Layer):
    """Runs a network's plan inside a Keras call, as `model(x, training=...)`
    does: the network's input checks apply, and layers that read `training`
    from the call context rather than an argument see it."""

    def __init__(self, graph, model):
        super().__init__(name=f"{model.name}_taps", autocast=False)
        object.__setattr__(self, "_plan", graph)  # shares the model's layers
        self.input_spec = model.input_spec
        self.built = True

    def call(self, inputs, training=None):
        found = {}
        return self._plan.run(inputs, training, found), found


class Extractor:
    """Runs one network once and returns its logits and tapped outputs.

    Args:
        model: The teacher or the student.
        taps: Layer names (or `/`-separated paths into nested functional
            models) to tap; duplicates and `None`, the logits, are folded
            in.
        role: `"teacher"` or `"student"`, for messages.
    """

    def __init__(self, model, taps, role):
        self.model = model
        self.role = role
        self.names = []
        for name in taps:
            if name is not LOGITS and name not in self.names:
                self.names.append(name)
        self._keys = [LOGITS] + self.names
        self.functional = _compat.is_functional(model)
        self.unwrapped = None
        self._runner = None
        if self.names and not self.functional:
            raise ValueError(
                f"Cannot tap layers {self.names} of the {role} "
                f"{model.name!r}: it is a subclassed model, whose "
                "intermediate outputs Keras cannot reach by name. Build the "
                f"{role} with the functional API or `keras.Sequential` (with "
                "a `keras.Input`), or use terms that read only the logits."
            )
        if not self.functional:
            self.tensors = {LOGITS: None}
            return
        logits = _single_output(model, role)
        graph = _Graph(model)
        self.unwrapped = self._plan_unwrap(graph, model, [])
        tensors = {LOGITS: logits}
        for name in self.names:
            tensors[name] = self._plan_tap(graph, name)
        if self.names or self.unwrapped:
            # One multi-output `keras.Model` over the network's own graph
            # when every tap is a node of it; a walk of the graph (the
            # `_Runner`) when a tap lies inside a nested model or the
            # logits need a layer run without its softmax.
            self._runner = self._graph_model(graph, tensors)
            if self._runner is None:
                self._runner = _Runner(graph, model)
        if any(tensors[name] is None for name in self.names):
            # A nested model's own shapes are looser than what this network
            # feeds it (e.g. a backbone built for any image size): trace the
            # extractor once (no Keras symbolic call: that would add nodes
            # to the user's layers) for the exact ones.
            tensors.update(self._traced_specs())
        self.tensors = tensors
        if self.unwrapped:
            warnings.warn(
                f"The {role} {model.name!r} ends in a softmax (layer "
                f"{self.unwrapped!r}); tfkd distils logits, so its terms and "
                "losses read the pre-softmax values and the model itself is "
                "unchanged. Build the model without the final softmax (e.g. "
                "`classifier_activation=None`) to silence this warning.",
                UserWarning, stacklevel=4)

    def _graph_model(self, graph, tensors):
        """`keras.Model(inputs, [logits] + tapped outputs)`, built once
        from the network's own tensors (no layer is called anew), or `None`
        when a tap or the logits are not a tensor of its graph."""
        logits = tensors[LOGITS]
        if graph.nested or any(tensors[n] is None for n in self.names):
            return None
        if graph.unwrap is not None:
            layer, kind = graph.unwrap
            node = _compat.producer(logits)[1]
            if kind != "input" or len(node.input_tensors) != 1:
                return None
            logits = node.input_tensors[0]
        for name in self.names:
            # An input's tap is the batch as fed (not cast to the input's
            # dtype, as the model's own call does): read by the graph walk.
            if isinstance(_compat.producer(tensors[name])[0],
                          keras.layers.InputLayer):
                return None
        outputs = [logits] + [tensors[n] for n in self.names]
        model = self.model
        # A Sequential's graph is its inner functional model's.
        inputs = _compat.functional_graph(model).input
        return keras.Model(inputs, outputs, name=f"{model.name}_taps",
                           dtype=model.dtype_policy)

    @property
    def outputs(self):
        """The symbolic outputs, listed as Keras's feature-extractor model
        lists them: the logits, then each tapped layer's output once."""
        return [self.tensors[LOGITS]] + [self.tensors[n] for n in self.names]

    # ------------------------------------------------------------------
    # Planning, once.

    def _plan_unwrap(self, graph, model, prefix):
        """Plans reading `model`'s final softmax's input; returns the
        softmax layer's path, or `None` when the output is not a softmax.
        """
        layer, node = _compat.producer(_single_output(model, self.role))
        path = SEPARATOR.join(prefix + [layer.name])
        rank = len(node.outputs[0].shape)
        if isinstance(layer, keras.layers.Softmax) or (
            isinstance(layer, keras.layers.Activation)
            and _is_softmax(layer.activation)
        ):
            axis = getattr(layer, "axis", -1)
            if not _is_last_axis(axis, rank):
                raise self._refusal(path, f"a softmax over axis {axis}, not "
                                          "the class axis")
            graph.unwrap = (layer, "input")
            return path
        if _is_softmax(getattr(layer, "activation", None)):
            if not isinstance(layer, _ACTIVATION_LAST):
                raise self._refusal(
                    path, f"a {type(layer).__name__} with `activation="
                          "'softmax'` (tfkd can only drop the activation of "
                          "a Dense or convolution layer)")
            graph.unwrap = (layer, "activation")
            return path
        if _is_graph(layer) and len(layer.outputs) == 1 and len(
            _nodes_in(model, layer)
        ) == 1:
            found = self._plan_unwrap(graph.sub(layer), layer,
                                      prefix + [layer.name])
            if found:
                graph.unwrap = (layer, "nested")
            return found
        if isinstance(layer, _SHAPE_ONLY):
            before = node.input_tensors
            if len(before) == 1:
                inner, _ = _compat.producer(before[0])
                if isinstance(inner, keras.layers.Softmax) or _is_softmax(
                    getattr(inner, "activation", None)
                ):
                    raise self._refusal(
                        SEPARATOR.join(prefix + [inner.name]),
                        f"a softmax followed by layer {layer.name!r}")
        return None

    def _refusal(self, path, what):
        return ValueError(
            f"The {self.role} {self.model.name!r} ends in a softmax that tfkd "
            f"cannot unwrap: layer {path!r} is {what}. tfkd distils logits: "
            "build the model without its final softmax (e.g. "
            "`classifier_activation=None` for `keras.applications` models, "
            "or `activation=None` on the last layer) and apply softmax only "
            "when predicting."
        )

    def _plan_tap(self, graph, name):
        """Plans recording tap `name`; returns its symbolic output in its
        own graph, or `None` when that graph's shapes may be looser than
        this network's (a nested model fed other shapes than it was built
        for)."""
        parts = name.split(SEPARATOR)
        owner, plan, exact = self.model, graph, True
        for depth, part in enumerate(parts):
            layer = find_layer(owner, part)
            if layer is None:
                raise ValueError(
                    f"`{self.role}_layer`={name!r} is not a layer of the "
                    f"{self.role} model {self.model.name!r}"
                    + (f" (no layer {part!r} in nested model {owner.name!r})"
                       if depth else "")
                    + "." + missing_layer_hint(self.model, name)
                )
            nodes = _nodes_in(owner, layer)
            if len(nodes) != 1:
                raise ValueError(
                    f"Cannot tap `{self.role}_layer`={name!r}: "
                    f"{layer.name!r} is called {len(nodes)} times in "
                    f"{owner.name!r} (a shared layer), so its output is "
                    "ambiguous. Tap a layer that is used exactly once (e.g. "
                    "the activation after it)."
                )
            if depth == len(parts) - 1:
                plan.record.setdefault(id(layer), []).append(name)
                outputs = nodes[0].outputs
                return outputs[0] if exact and len(outputs) == 1 else None
            if not _is_graph(layer):
                raise ValueError(
                    f"Cannot tap `{self.role}_layer`={name!r}: {part!r} is a "
                    f"{type(layer).__name__}, not a functional model, so "
                    "tfkd cannot look inside it. Tap a layer of the "
                    f"{self.role}'s own graph."
                    + missing_layer_hint(self.model, _last(name))
                )
            fed = [tuple(t.shape) for t in nodes[0].input_tensors]
            built = [tuple(t.shape) for t in layer.inputs]
            exact = exact and fed == built
            owner, plan = layer, plan.sub(layer)
        return None

    def _traced_specs(self):
        inputs = [tf.TensorSpec(t.shape, t.dtype) for t in self.model.inputs]
        signature = inputs[0] if len(inputs) == 1 else inputs

        def taps(x):
            outputs = self(x, training=False)
            return {n: outputs[n] for n in self.names}

        traced = tf.function(taps).get_concrete_function(signature)
        return {n: tf.TensorSpec(t.shape, t.dtype)
                for n, t in traced.structured_outputs.items()}

    # ------------------------------------------------------------------
    # Each step.

    def symbolic(self, taps):
        """Tensors (or specs) with the static shapes of `taps` (`None`
        entries where unknown)."""
        return [self.tensors.get(name) for name in taps]

    def __call__(self, x, training):
        """`{tap: tensor}` for the logits (key `None`) and every tap."""
        if self._runner is None:
            return {LOGITS: self._call_model(x, training)}
        if isinstance(self._runner, keras.Model):
            # A one-output model (a softmax teacher's logits alone) returns
            # its tensor, not a list of one.
            outputs = self._runner(x, training=training)
            if not isinstance(outputs, (list, tuple)):
                outputs = [outputs]
            return dict(zip(self._keys, outputs))
        logits, found = self._runner(x, training=training)
        return {LOGITS: logits, **{n: found[n] for n in self.names}}

    def _call_model(self, x, training):
        if self.functional:
            return self.model(x, training=training)
        try:
            outputs = self.model(x, training=training)
        except (ValueError, TypeError, tf.errors.InvalidArgumentError) as e:
            raise self._input_error(x, e) from e
        if isinstance(outputs, (list, tuple, dict)):
            count = len(outputs)
            raise ValueError(
                f"`{self.role}` must output one logits tensor, but the "
                f"{self.role} model {self.model.name!r} returned {count} "
                f"outputs ({type(outputs).__name__}). Return only the logits "
                "from its `call` (or wrap it in a model that does)."
            )
        return outputs

    def _input_error(self, x, error):
        shapes = [tuple(t.shape) for t in tf.nest.flatten(x)]
        shape = shapes[0] if len(shapes) == 1 else shapes
        try:
            expected = [tuple(s.shape) for s in tf.nest.flatten(
                _compat.input_signature(self.model))]
            expected = expected[0] if len(expected) == 1 else expected
            expects = f"it was built for inputs of shape {expected}"
        except Exception:  # noqa: BLE001 - only to phrase the message
            expects = "it was never built on an input"
        return ValueError(
            f"The {self.role} {self.model.name!r} failed on a batch of shape "
            f"{shape}; {expects}. Feed data of the shape the {self.role} "
            f"expects (resize it, or put a `keras.layers.Resizing` layer in "
            f"the model). Details: {_first_line(error)}"
        )


def _first_line(error):
    """The line of a (Keras-wrapped) error message that says what failed."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if line.startswith("Arguments received"):
            break
        if not line.startswith("Exception encountered"):
            return line
    return lines[0] if lines else type(error).__name__


class TappedForward:
    """The forward passes of `tfkd.Distiller` (a mixin): each network once
    per step through its fused `Extractor`, the teacher frozen (or its
    outputs cached with the data), the training images asserted finite."""

    def _build_extractors(self):
        teacher_taps = [n for t in self._terms for n in t.teacher_taps]
        student_taps = [n for t in self._terms for n in t.student_taps]
        # Kept out of Keras's attribute tracking: they share every layer
        # with teacher/student, which already own (and save) those weights.
        object.__setattr__(self, "_teacher_extractor",
                           Extractor(self.teacher, teacher_taps, "teacher"))
        object.__setattr__(self, "_student_extractor",
                           Extractor(self.student, student_taps, "student"))
        self._check_logit_widths()
        for term in self._terms:
            term.bind(
                self.teacher, self.student,
                self._teacher_extractor.symbolic(term.teacher_taps),
                self._student_extractor.symbolic(term.student_taps),
            )

    def teacher_forward(self, x):
        """Runs the frozen teacher once: `(logits, [tapped features])`,
        the features in the order of `teacher_taps`."""
        outputs = self._teacher_extractor(x, training=False)
        outputs = {k: tf.stop_gradient(v) for k, v in outputs.items()}
        return outputs[LOGITS], [outputs[n] for n in self.teacher_taps]

    def student_forward(self, x, training):
        """Runs the student once: `(logits, [tapped features])`."""
        outputs = self._student_extractor(x, training=training)
        return outputs[LOGITS], [outputs[n] for n in self.student_taps]

    @property
    def _teacher_feature_extractor(self):
        """The teacher's extractor when a term taps its layers, else `None`
        (the name and meaning of Keras's distiller's attribute)."""
        return self._teacher_extractor if self.teacher_taps else None

    @property
    def _student_feature_extractor(self):
        """The student's extractor when a term taps its layers, else
        `None` (as Keras's distiller's)."""
        return self._student_extractor if self.student_taps else None

    @property
    def teacher_taps(self):
        """Teacher layers tapped by the terms (besides the logits)."""
        return list(self._teacher_extractor.names)

    @property
    def student_taps(self):
        """Student layers tapped by the terms (besides the logits)."""
        return list(self._student_extractor.names)

    def forward(self, x, training):
        """Both networks once: `(teacher outputs, student outputs)`, each a
        `{tap: tensor}` dict (key `None`: the logits)."""
        if training:
            x = self._checked_inputs(x)
        teacher = self._teacher_outputs(x)
        student = self._student_outputs(x, training)
        if training:
            student = self._logits_checked(x, teacher, student)
        return teacher, student

    def _outputs_for(self, x, y_pred, training):
        """`(teacher, student)` outputs for a direct `compute_loss` call:
        `y_pred` as the student's logits, the student run only when it is
        missing or a term taps the student's layers."""
        teacher = self._teacher_outputs(x)
        if y_pred is None or self._student_extractor.names:
            student = self._student_outputs(x, training)
        else:
            student = {}
        if y_pred is not None:
            student[LOGITS] = y_pred
        return teacher, student

    def _teacher_outputs(self, x):
        """The teacher's `{tap: tensor}` (cached with the data, or one
        frozen forward pass), without gradient."""
        if isinstance(x, dict) and IMAGES_KEY in x:
            images, cached = split_cached_inputs(x)
            if cached is not None:
                return self._cached_outputs(cached)
            x = images
        outputs = self._teacher_extractor(x, training=False)
        for key, value in outputs.items():
            outputs[key] = tf.stop_gradient(value)
        return outputs

    def _student_outputs(self, x, training):
        return self._student_extractor(split_cached_inputs(x)[0],
                                       training=training)

    def _checked_inputs(self, x):
        """`x` with its images asserted finite (see `check_finite`)."""
        if not self._check_finite or self._guard_in_xla():
            return x
        return assert_finite_images(x, self._iterations)

    def _cached_outputs(self, cached):
        logits, features = cached
        names = self._teacher_extractor.names
        if len(features) != len(names):
            raise ValueError(
                f"The cached teacher outputs hold {len(features)} tapped "
                f"feature(s) but this distiller taps {len(names)} teacher "
                f"layer(s) ({names}). Rebuild the cache with "
                "`tfkd.data.cache_teacher_outputs(distiller, ...)` for this "
                "distiller."
            )
        outputs = {LOGITS: logits, **dict(zip(names, features))}
        return {k: tf.stop_gradient(v) for k, v in outputs.items()}
