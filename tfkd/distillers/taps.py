"""Taps: one fused extractor per network, for every layer the terms read.

A distiller's terms name the layers they need (`None` for the logits).
`Extractor` gathers them into one functional model per network whose
outputs are the logits followed by every tapped layer, so each network
runs forward exactly once per step however many terms read it.
"""

import keras

from tfkd import _compat
from tfkd.terms.base import LOGITS


def _layer_names(model):
    return [layer.name for layer in model.layers]


def _single_output(model, role):
    outputs = model.outputs
    if len(outputs) != 1:
        raise ValueError(
            f"The {role} {model.name!r} has {len(outputs)} outputs; tfkd "
            "distillers expect one logits output. Build a model view with "
            "`keras.Model(inputs, logits)` first."
        )
    return outputs[0]


def resolve_tap(model, name, role):
    """The symbolic output of layer `name` of a functional `model`.

    Raises a `ValueError` naming the model and listing its layers when
    there is no such layer, or when the layer is called more than once.
    """
    names = _layer_names(model)
    if name not in names:
        raise ValueError(
            f"`{role}_layer`={name!r} is not a layer of the {role} model "
            f"{model.name!r}. Existing layers: {names}."
        )
    layer = model.get_layer(name)
    try:
        return layer.output
    except (AttributeError, ValueError) as e:
        raise ValueError(
            f"Cannot tap {role} layer {name!r}: it is called more than once "
            "in the model (shared layer) or was never called, so its output "
            "is ambiguous. Tap a layer that is used exactly once (e.g. the "
            f"activation after it). Details: {e}"
        ) from e


class Extractor:
    """Runs one network once and returns its logits and tapped outputs.

    Args:
        model: The teacher or the student.
        taps: Layer names to tap (duplicates and `None`, the logits, are
            folded in).
        role: `"teacher"` or `"student"`, for messages.
    """

    def __init__(self, model, taps, role):
        self.model = model
        self.role = role
        self.names = []
        for name in taps:
            if name is not LOGITS and name not in self.names:
                self.names.append(name)
        self.functional = _compat.is_functional(model)
        self.model_fn = None
        if self.names and not self.functional:
            raise ValueError(
                f"Cannot tap layers {self.names} of the {role} "
                f"{model.name!r}: it is a subclassed model, whose "
                "intermediate outputs Keras cannot reach by name. Build the "
                f"{role} with the functional API or `keras.Sequential` (with "
                "a `keras.Input`), or use terms that read only the logits."
            )
        if self.functional:
            logits = _single_output(model, role)
            tapped = [resolve_tap(model, n, role) for n in self.names]
            self.tensors = {LOGITS: logits, **dict(zip(self.names, tapped))}
            if self.names:
                # A single input is passed as a tensor, not a one-element
                # list, so calling the extractor on a batch matches it.
                inputs = model.inputs[0] if len(model.inputs) == 1 \
                    else model.inputs
                self.model_fn = keras.Model(inputs, [logits] + tapped,
                                            name=f"{model.name}_taps")
        else:
            self.tensors = {LOGITS: None}

    def symbolic(self, taps):
        """Symbolic tensors of `taps` (`None` entries where unknown)."""
        return [self.tensors.get(name) for name in taps]

    def __call__(self, x, training):
        """`{tap: tensor}` for the logits (key `None`) and every tap."""
        if self.model_fn is None:
            return {LOGITS: self.model(x, training=training)}
        outputs = self.model_fn(x, training=training)
        return {LOGITS: outputs[0], **dict(zip(self.names, outputs[1:]))}
