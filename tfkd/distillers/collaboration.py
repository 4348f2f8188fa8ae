"""Student-teacher collaboration (STC): the student's front, the teacher's back.

STC connects the front of the student (up to `student_layer`) to the back of
the frozen teacher (after `teacher_layer`). The collaboration network's
output `O_c = T_back(S_front(x))` is trained to match the teacher's own
output `O_t = T(x)`; the gradient of that loss reaches the student's front
*through* the teacher's frozen back, so the teacher tells the student's
front not only what to produce but how its later layers will use it.

Reference:
    - [Knowledge Transfer via Student-Teacher Collaboration](
      https://openreview.net/forum?id=H1ersoRqtm) (STC), §3, eqs. 1-5.
"""

import keras
import tensorflow as tf

from tfkd.distillers.base import Distiller
from tfkd.distillers.base import _as_name_list
from tfkd.losses import kd as kd_losses
from tfkd.losses._utils import check_non_negative
from tfkd.losses._utils import check_positive
from tfkd.models.surgery import split_model

#: Accepted values of `target` (the paper's Table 5 ablation).
TARGETS = ("teacher", "soft", "labels")


def _single_layer(value, name):
    names = _as_name_list(value, name)
    if len(names) != 1:
        raise ValueError(
            f"STC cuts each network once, so `{name}` must name exactly one "
            f"layer. Received: {name}={value!r}. Pass a single layer name, "
            f"e.g. a block boundary from `tfkd.models.block_boundaries`."
        )
    return names[0]


def _get_loss(value, name):
    """Resolves a per-example loss (None, str, config dict or callable)."""
    if value is None:
        return None
    if not (callable(value) or isinstance(value, (str, dict))):
        raise TypeError(
            f"`{name}` must be None, a callable `(target, prediction) -> "
            f"per-example loss`, a `keras.losses.Loss` or a Keras loss "
            f"name / config. Received: {name}={value!r} of type "
            f"{type(value).__name__}."
        )
    if not callable(value):
        try:
            value = keras.losses.get(value)
        except (ValueError, TypeError) as e:
            raise ValueError(
                f"`{name}` does not name a Keras loss. Received: "
                f"{name}={value!r}. Pass e.g. `keras.losses.Huber("
                f"reduction=None)` or \"huber\". Details: {e}"
            ) from e
    if isinstance(value, keras.losses.Loss) and value.reduction not in (
        None, "none"
    ):
        raise ValueError(
            f"`{name}` must return one value per example (the distiller "
            f"reduces the batch itself, honouring sample weights), but the "
            f"loss reduces with reduction={value.reduction!r}. Received: "
            f"{name}={value!r}. Build it with `reduction=None`, e.g. "
            f"`keras.losses.Huber(reduction=None)`."
        )
    return value


def _serialize_loss(loss):
    return None if loss is None else keras.losses.serialize(loss)


def _shape(shape):
    return tuple(None if d is None else int(d) for d in shape)


def _float32(x):
    """Floating tensors to float32 (mixed-precision heads); ids untouched."""
    x = tf.convert_to_tensor(x)
    return tf.cast(x, tf.float32) if x.dtype.is_floating else x


def _mismatch(got, expected):
    """Whether a front output of shape `got` cannot feed a back of `expected`
    (batch dimension excluded; unknown dimensions match anything)."""
    if len(got) != len(expected):
        return True
    return any(a is not None and b is not None and a != b
               for a, b in zip(got, expected))


@keras.saving.register_keras_serializable(package="tfkd")
class CollaborationDistiller(Distiller):
    """Student-teacher collaboration (STC) distillation.

    The teacher is cut after `teacher_layer` (with
    `tfkd.models.split_model`, so ResNets and WRNs can be cut at block
    boundaries) and the student after `student_layer`. Each step runs the
    teacher once (`O_t = T(x)`, no gradient) and the student once, which
    gives both the student's logits `S(x)` and its front output
    `S_front(x)` (the tapped layer); the front output then runs through the
    teacher's back: `O_c = T_back(S_front(x))`. The loss is (eqs. 3-5)

    `alpha · L_STC + (1 − alpha) · CE(y, S(x)) + kd_weight · KD(T(x), S(x))`

    with `L_STC = CE(softmax(O_t / T), O_c / T)`, a soft cross entropy at
    temperature `T = temperature` (1 by default). The KD term is Hinton's
    `kd_loss` at `kd_temperature`; `kd_weight > 0` gives the paper's "+KD"
    rows. Metrics: `stc_loss`, `class_loss`, `kd_loss` (the KD term is
    reported even at `kd_weight = 0`, for monitoring).

    The teacher's back shares the teacher's layers: it is frozen (its
    weights, including batch-norm statistics, never change; it runs with
    `training=False`) but it is differentiable, so `L_STC` trains the
    student's front and only the front: the student's layers after
    `student_layer` get no gradient from `L_STC`.

    Targets (the paper's Table 5 ablation), `target=`:

    - `"teacher"` (default, "output tensor (t)"): `L_STC` as above.
    - `"soft"` ("soft target (t)", Hinton's fashion):
      `kd_temperature² · CE(softmax(O_t / τ), softmax(O_c / τ))`,
      `τ = kd_temperature`. Classification only.
    - `"labels"` ("ground-truth (d)"): `CE(y, O_c)`, no teacher knowledge
      beyond its back.

    Other heads (the paper's §3.3: "replacing the cross-entropy loss with
    the corresponding loss, such as smooth-L1 for bounding-box
    regression"): pass `collaboration_loss`, a per-example loss
    `(target, prediction) -> (batch,)` that replaces `L_STC` (e.g.
    `keras.losses.Huber(reduction=None)`; `temperature` is then unused),
    and `student_loss`, the same kind of loss replacing `CE(y, S(x))` so
    the labels may be of the head's kind (e.g. float box coordinates). With
    `student_loss` set, labels are not checked as class ids and the KD term
    is neither computed nor reported unless `kd_weight > 0`.

    If `S_front(x)` has a different shape from the teacher back's input,
    `adapter=True` inserts a distiller-owned, trainable adapter (built
    here, never part of `distiller.student`): a bilinear `Resizing` when
    the spatial size differs, then a 1×1 `Conv2D` to the teacher's channels
    (a `Dense` on the last axis for non-image features). Without it a
    mismatch raises a `ValueError` naming both shapes.

    Args:
        teacher: A trained functional `keras.Model` that outputs logits (or
            the head's outputs). It is frozen.
        student: The functional `keras.Model` to train, with the teacher's
            output shape.
        teacher_layer: Name of the teacher layer after which to cut; only
            one tensor may cross the cut (`tfkd.models.cut_points`).
        student_layer: Name of the student layer whose output is the
            student's front; same cut rule.
        alpha: Weight of `L_STC` in `[0, 1]`; `1 − alpha` weighs the class
            loss. The paper uses 0.3 on CIFAR-10, 0.5 on CIFAR-100 and
            ImageNet.
        temperature: Temperature `T > 0` of `L_STC` (target `"teacher"`).
        kd_weight: Weight `>= 0` of the extra KD term ("+KD" rows).
        kd_temperature: Temperature `> 0` of the KD term and of the
            `"soft"` target.
        target: `"teacher"`, `"soft"` or `"labels"`: what `O_c` is trained
            towards (see above).
        adapter: Whether to bridge a shape mismatch between the student's
            front and the teacher's back with a trainable adapter.
        collaboration_loss: Optional per-example loss replacing `L_STC`: a
            callable, a `keras.losses.Loss` built with `reduction=None`, or
            a Keras loss name / serialised config. Serialised with
            `keras.losses.serialize`; register custom functions with
            `keras.saving.register_keras_serializable` to reload them.
        student_loss: Optional per-example loss replacing `CE(y, S(x))`;
            same forms as `collaboration_loss`.
        **kwargs: Passed to `keras.Model` (e.g. `name`).

    Example:

    >>> from tfkd.testing import random_images, tiny_conv_model
    >>> teacher = tiny_conv_model("teacher", width=8)
    >>> student = tiny_conv_model("student", width=4)
    >>> distiller = CollaborationDistiller(
    ...     teacher, student, teacher_layer="conv1", student_layer="conv1",
    ...     alpha=0.3, adapter=True)
    >>> distiller.compile(optimizer="adam", metrics=["accuracy"])
    >>> x, y = random_images(16)
    >>> history = distiller.fit(x, y, epochs=1, verbose=0)
    >>> sorted(history.history)
    ['accuracy', 'class_loss', 'kd_loss', 'loss', 'stc_loss']

    Reference:
        - [Knowledge Transfer via Student-Teacher Collaboration](
          https://openreview.net/forum?id=H1ersoRqtm) (STC), eqs. 1-5,
          Tables 1, 2 and 5.
    """

    def __init__(self, teacher, student, *, teacher_layer, student_layer,
                 alpha=0.5, temperature=1.0, kd_weight=0.0,
                 kd_temperature=4.0, target="teacher", adapter=False,
                 collaboration_loss=None, student_loss=None, **kwargs):
        teacher_layer = _single_layer(teacher_layer, "teacher_layer")
        student_layer = _single_layer(student_layer, "student_layer")
        if target not in TARGETS:
            raise ValueError(
                f"`target` must be one of {list(TARGETS)}. Received: "
                f"target={target!r}."
            )
        if not isinstance(adapter, bool):
            raise TypeError(
                f"`adapter` must be True or False. Received: "
                f"adapter={adapter!r}."
            )
        kd_weight = check_non_negative(kd_weight, "kd_weight")
        kd_temperature = check_positive(kd_temperature, "kd_temperature")
        collaboration_loss = _get_loss(collaboration_loss,
                                       "collaboration_loss")
        student_loss = _get_loss(student_loss, "student_loss")
        if target == "soft" and collaboration_loss is not None:
            raise ValueError(
                "`target='soft'` softens logits with a temperature, which "
                "only makes sense for a classification head, but a "
                "`collaboration_loss` was given. Received: target='soft', "
                f"collaboration_loss={collaboration_loss!r}. Use "
                "target='teacher' (or 'labels') with a custom loss."
            )
        # The term names must be known before the base class builds its
        # metric trackers; object.__setattr__ bypasses Keras's tracking,
        # which is not set up yet.
        with_kd = student_loss is None or kd_weight > 0
        object.__setattr__(
            self, "_stc_terms",
            ("stc_loss", "class_loss") + (("kd_loss",) if with_kd else ()),
        )
        super().__init__(
            teacher, student, alpha=alpha, temperature=temperature,
            teacher_layer=teacher_layer, student_layer=student_layer,
            **kwargs,
        )
        self.kd_weight = kd_weight
        self.kd_temperature = kd_temperature
        self.target = target
        self.adapter = adapter
        self.collaboration_loss = collaboration_loss
        self.student_loss = student_loss
        # STC feeds the whole front output to the teacher's back, including
        # any self-taught channels a feature method would hide.
        self._guided = [None]

        teacher_back = self._cut("teacher", self.teacher, teacher_layer)
        self._cut("student", self.student, student_layer)
        # Kept out of Keras's tracking, like the base class's extractors:
        # the back shares (and the teacher saves) every weight.
        object.__setattr__(self, "_teacher_back", teacher_back)

        front_shape = _shape(
            self.student.get_layer(student_layer).output.shape[1:])
        back_shape = _shape(teacher_back.inputs[0].shape[1:])
        self.adapter_layer = None
        if _mismatch(front_shape, back_shape):
            if not adapter:
                raise ValueError(
                    f"The student's front output (layer {student_layer!r}) "
                    f"has shape {(None,) + front_shape}, but the teacher's "
                    f"back (after layer {teacher_layer!r}) expects "
                    f"{(None,) + back_shape}. Pass `adapter=True` to insert "
                    f"a trainable 1x1-conv (and resize) adapter, or choose "
                    f"layers whose outputs have the same shape."
                )
            self.adapter_layer = self._build_adapter(front_shape, back_shape)

    @property
    def loss_term_names(self):
        """`stc_loss`, `class_loss` and (unless omitted) `kd_loss`."""
        return self._stc_terms

    @property
    def teacher_back(self):
        """The teacher's frozen back `T_back` (shares the teacher's layers)."""
        return self._teacher_back

    # ------------------------------------------------------------------
    # Construction helpers.

    @staticmethod
    def _cut(role, model, layer_name):
        try:
            return split_model(model, layer_name)[1]
        except (ValueError, TypeError) as e:
            raise type(e)(
                f"Cannot cut the {role} for STC after "
                f"`{role}_layer`={layer_name!r}: {e}"
            ) from e

    def _build_adapter(self, front_shape, back_shape):
        if len(front_shape) != len(back_shape):
            raise ValueError(
                f"No adapter can connect the student's front output of shape "
                f"{(None,) + front_shape} to the teacher's back expecting "
                f"{(None,) + back_shape}: their ranks differ. Received: "
                f"adapter=True. Choose `student_layer` / `teacher_layer` "
                f"with outputs of the same kind (both feature maps or both "
                f"vectors)."
            )
        channels = back_shape[-1]
        if channels is None:
            raise ValueError(
                "The teacher's back takes an input with an unknown last "
                f"dimension ({(None,) + back_shape}), so the adapter cannot "
                "be sized. Received: adapter=True. Cut the teacher after a "
                "layer with a known number of channels."
            )
        dtype = self.student.dtype_policy
        layers = [keras.Input(front_shape)]
        if len(front_shape) == 3:
            (h, w), (th, tw) = front_shape[:2], back_shape[:2]
            if th is not None and tw is not None and (h, w) != (th, tw):
                layers.append(keras.layers.Resizing(
                    th, tw, interpolation="bilinear", dtype=dtype,
                    name="stc_adapter_resize",
                ))
            layers.append(keras.layers.Conv2D(
                channels, 1, dtype=dtype, name="stc_adapter_conv"))
        elif len(front_shape) == 1 or front_shape[:-1] == back_shape[:-1]:
            layers.append(keras.layers.Dense(
                channels, dtype=dtype, name="stc_adapter_dense"))
        else:
            raise ValueError(
                f"The adapter resizes only image feature maps (batch, H, W, "
                f"C); the student's front output has shape "
                f"{(None,) + front_shape} and the teacher's back expects "
                f"{(None,) + back_shape}. Received: adapter=True. Choose "
                f"layers whose outputs agree except in the last dimension."
            )
        return keras.Sequential(layers, name="stc_adapter")

    def _owned_layers(self):
        return [] if self.adapter_layer is None else [self.adapter_layer]

    # ------------------------------------------------------------------
    # The method.

    def collaboration_output(self, student_front):
        """The collaboration network's output `O_c = T_back(S_front(x))`.

        Args:
            student_front: The student's front output (its tapped layer).

        Returns:
            The teacher back's output on it, differentiable with respect to
            `student_front` (and the adapter), computed with the teacher's
            frozen weights in inference mode.
        """
        if self.adapter_layer is not None:
            student_front = self.adapter_layer(student_front)
        return self._teacher_back(student_front, training=False)

    def compute_loss_terms(self, y, teacher_logits, student_logits,
                           teacher_features, student_features):
        collaboration = self.collaboration_output(student_features[0])
        if self.target == "labels":
            target = y
        else:
            target = teacher_logits
        if self.collaboration_loss is not None:
            stc = self.collaboration_loss(
                _float32(target), _float32(collaboration))
        elif self.target == "teacher":
            stc = kd_losses.soft_cross_entropy(
                teacher_logits, collaboration, self.temperature)
        elif self.target == "soft":
            stc = self.kd_temperature**2 * kd_losses.soft_cross_entropy(
                teacher_logits, collaboration, self.kd_temperature)
        else:
            stc = kd_losses.cross_entropy(y, collaboration)
        if self.student_loss is not None:
            class_term = self.student_loss(
                _float32(y), _float32(student_logits))
        else:
            class_term = kd_losses.cross_entropy(y, student_logits)
        terms = {"stc_loss": stc, "class_loss": class_term}
        if "kd_loss" in self.loss_term_names:
            terms["kd_loss"] = kd_losses.kd_loss(
                teacher_logits, student_logits, self.kd_temperature)
        return terms

    def loss_weights(self):
        return {
            "stc_loss": self.alpha,
            "class_loss": 1.0 - self.alpha,
            "kd_loss": self.kd_weight,
        }

    def _check_labels(self, y, logits):
        if self.student_loss is None:
            return super()._check_labels(y, logits)
        if y is None:
            raise ValueError(
                "Distillers need labels: call `fit(x, y)` or pass a dataset "
                "of `(inputs, targets)` pairs. Received: y=None."
            )
        return y

    # ------------------------------------------------------------------
    # Serialisation.

    def get_config(self):
        config = super().get_config()
        config.update({
            "kd_weight": self.kd_weight,
            "kd_temperature": self.kd_temperature,
            "target": self.target,
            "adapter": self.adapter,
            "collaboration_loss": _serialize_loss(self.collaboration_loss),
            "student_loss": _serialize_loss(self.student_loss),
        })
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        for key in ("collaboration_loss", "student_loss"):
            if isinstance(config.get(key), dict):
                config[key] = keras.losses.deserialize(
                    config[key], custom_objects=custom_objects)
        return super().from_config(config, custom_objects=custom_objects)
