"""Student-teacher collaboration (STC): the student's front feeds the
teacher's back, and the collaboration loss trains it.

One module holds the method whole: its pure function(s), its knowledge
term(s) and the term's `method` record (see `tfkd.methods`).
"""

import keras
import tensorflow as tf

from tfkd import hyperparameters as hp
from tfkd.methods import kd as kd_losses
from tfkd.models.surgery import split_model
from tfkd.losses._utils import check_option
from tfkd.terms.base import LOGITS
from tfkd.terms.base import DistillationTerm
from tfkd.terms.base import Method


#: Accepted values of `target` (the STC paper's Table 5 ablation).
TARGETS = ("teacher", "soft", "labels")


def get_loss(value, name):
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
    if isinstance(value, dict):
        value = keras.losses.deserialize(value)
    elif not callable(value):
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


def serialize_loss(loss):
    return None if loss is None else keras.losses.serialize(loss)


def _float32(x):
    """Floating tensors to float32 (mixed-precision heads); ids untouched."""
    x = tf.convert_to_tensor(x)
    return tf.cast(x, tf.float32) if x.dtype.is_floating else x


def _mismatch(got, expected):
    """Whether a front output of shape `got` cannot feed a back of
    `expected` (batch excluded; unknown dimensions match anything)."""
    if len(got) != len(expected):
        return True
    return any(a is not None and b is not None and a != b
               for a, b in zip(got, expected))


@keras.saving.register_keras_serializable(package="tfkd")
class CollaborationDistillation(DistillationTerm):
    """STC: the student's front runs through the teacher's frozen back.

    The teacher is cut after `teacher_layer_name` (with
    `tfkd.models.split_model`, so ResNets and WRNs can be cut at block
    boundaries); the student's front is its tapped `student_layer_name`.
    The collaboration output `O_c = T_back(S_front(x))` is trained towards
    the teacher's output `O_t = T(x)` (eqs. 3-4), per example:

    - `target="teacher"` (default): `L_STC = CE(softmax(O_t / T), O_c / T)`,
      a soft cross entropy at `temperature` (1 in the paper);
    - `target="soft"`: `T² · CE(softmax(O_t / T), softmax(O_c / T))`;
    - `target="labels"`: `CE(y, O_c)`.

    The teacher's back shares the teacher's layers: frozen (weights and
    batch-norm statistics never change; it runs with `training=False`) but
    differentiable, so the term trains the student's front and only the
    front. For other heads pass `collaboration_loss`, a per-example loss
    `(target, prediction) -> (batch,)` replacing the cross entropy (e.g.
    `keras.losses.Huber(reduction=None)`). A front whose shape differs from
    what the back expects gets a trainable adapter with `adapter=True`
    (bilinear resize then 1×1 conv, or a `Dense` for vectors), owned by the
    term; otherwise binding raises. The term reads the teacher's logits and
    the student's front, so it runs in `tfkd.Distiller` only.

    Args:
        teacher_layer_name: The teacher layer after which to cut (one name).
        student_layer_name: The student layer whose output is the front.
        temperature: `T > 0` of the `"teacher"` and `"soft"` targets.
        target: `"teacher"`, `"soft"` or `"labels"` (Table 5).
        adapter: Bridge a shape mismatch with a trainable adapter.
        collaboration_loss: Optional per-example loss replacing the cross
            entropy (a callable, a `keras.losses.Loss` with
            `reduction=None`, or a Keras loss name / config).
        **kwargs: Layer arguments (`name`, default `"stc"`).

    Example:

    >>> import tfkd
    >>> from tfkd import testing
    >>> teacher = testing.tiny_conv_model("teacher", width=8)
    >>> student = testing.tiny_conv_model("student", width=8)
    >>> term = CollaborationDistillation("conv1", "conv1")
    >>> distiller = tfkd.Distiller(teacher, student, [term],
    ...                            student_loss_weight=0.7)
    >>> term.teacher_back.name
    'teacher_back'

    Reference:
        [Knowledge Transfer via Student-Teacher Collaboration](
        https://openreview.net/forum?id=H1ersoRqtm), §3, eqs. 1-5.
    """

    method = Method(
        name="stc",
        description=("student-teacher collaboration: student front + "
                     "frozen teacher back"),
        paper="STC (OpenReview H1ersoRqtm)",
        preset="tfkd.distillers.collaboration:CollaborationDistiller",
        build_defaults={"adapter": True},
        # alpha = 0.3 (CIFAR-10) / 0.5 (CIFAR-100), T = 1; "+KD" weight.
        search_space={
            "alpha": {"type": "float", "min_value": 0.3, "max_value": 0.5},
            "temperature": {"type": "float", "min_value": 1.0,
                            "max_value": 4.0},
            "kd_weight": {"type": "float", "min_value": 0.0,
                          "max_value": 1.0},
        },
    )
    slice_guided = False

    temperature = hp.Hyperparameter(hp.positive, doc="Softening temperature.")

    def __init__(self, teacher_layer_name=None, student_layer_name=None, *,
                 temperature=1.0, target="teacher", adapter=False,
                 collaboration_loss=None, **kwargs):
        kwargs.setdefault("name", "stc")
        for name, value in (("teacher_layer_name", teacher_layer_name),
                            ("student_layer_name", student_layer_name)):
            if not isinstance(value, str):
                raise ValueError(
                    f"STC cuts each network once, so `{name}` must name "
                    f"exactly one layer. Received: {name}={value!r}. Pass a "
                    "single layer name, e.g. a block boundary from "
                    "`tfkd.models.block_boundaries`."
                )
        check_option(target, "target", TARGETS, {
            "teacher": "the teacher's logits, the default",
            "soft": "its softened probabilities",
            "labels": "the labels"})
        collaboration_loss = get_loss(collaboration_loss,
                                      "collaboration_loss")
        if target == "soft" and collaboration_loss is not None:
            raise ValueError(
                "`target='soft'` softens logits with a temperature, which "
                "only makes sense for a classification head, but a "
                "`collaboration_loss` was given. Received: target='soft', "
                f"collaboration_loss={collaboration_loss!r}. Use "
                "target='teacher' (or 'labels') with a custom loss."
            )
        super().__init__(teacher_layer_name, student_layer_name,
                         adapter=adapter, **kwargs)
        self.temperature = temperature
        self.target = target
        self.collaboration_loss = collaboration_loss
        self.adapter_layer = None

    @property
    def teacher_taps(self):
        # The target is the teacher's own output; `teacher_layer_name` is
        # where its back starts.
        return (LOGITS,)

    @property
    def teacher_back(self):
        """The teacher's frozen back `T_back` (shares the teacher's layers),
        available once the term is bound to a distiller."""
        back = self.__dict__.get("_teacher_back")
        if back is None:
            raise ValueError(
                f"The STC term {self.name!r} is not bound to a teacher yet: "
                "pass it to `tfkd.Distiller` first."
            )
        return back

    def validate_model_compatibility(self, teacher, student):
        raise ValueError(
            "CollaborationDistillation needs the teacher's logits and the "
            "student's front in one step, which Keras's "
            "`keras.distillation.Distiller` cannot provide. Use "
            "`tfkd.Distiller(teacher, student, [CollaborationDistillation("
            "...)])` or `tfkd.CollaborationDistiller`."
        )

    def build_parts(self, teacher, student, teacher_shapes, student_shapes):
        try:
            back = split_model(teacher, self.teacher_layer_name)[1]
        except (ValueError, TypeError) as e:
            raise type(e)(
                "Cannot cut the teacher for STC after "
                f"`teacher_layer_name`={self.teacher_layer_name!r}: {e}"
            ) from e
        try:
            split_model(student, self.student_layer_name)
        except (ValueError, TypeError) as e:
            raise type(e)(
                "Cannot cut the student for STC after "
                f"`student_layer_name`={self.student_layer_name!r}: {e}"
            ) from e
        # Not tracked: the back shares (and the teacher saves) every weight.
        object.__setattr__(self, "_teacher_back", back)
        front_shape = tuple(student_shapes[0][1:])
        back_shape = tuple(
            None if d is None else int(d) for d in back.inputs[0].shape[1:])
        if not _mismatch(front_shape, back_shape):
            return
        if not self.adapter:
            raise ValueError(
                "The student's front output (layer "
                f"{self.student_layer_name!r}) has shape "
                f"{(None,) + front_shape}, but the teacher's back (after "
                f"layer {self.teacher_layer_name!r}) expects "
                f"{(None,) + back_shape}. Pass `adapter=True` to insert a "
                "trainable 1x1-conv (and resize) adapter, or choose layers "
                "whose outputs have the same shape."
            )
        self.adapter_layer = self._build_adapter(front_shape, back_shape,
                                                 student.dtype_policy)

    def _build_adapter(self, front_shape, back_shape, dtype):
        if len(front_shape) != len(back_shape):
            raise ValueError(
                "No adapter can connect the student's front output of shape "
                f"{(None,) + front_shape} to the teacher's back expecting "
                f"{(None,) + back_shape}: their ranks differ. Received: "
                "adapter=True. Choose `student_layer` / `teacher_layer` "
                "with outputs of the same kind (both feature maps or both "
                "vectors)."
            )
        channels = back_shape[-1]
        if channels is None:
            raise ValueError(
                "The teacher's back takes an input with an unknown last "
                f"dimension ({(None,) + back_shape}), so the adapter cannot "
                "be sized. Received: adapter=True. Cut the teacher after a "
                "layer with a known number of channels."
            )
        layers = [keras.Input(front_shape)]
        if len(front_shape) == 3:
            (h, w), (th, tw) = front_shape[:2], back_shape[:2]
            if th is not None and tw is not None and (h, w) != (th, tw):
                layers.append(keras.layers.Resizing(
                    th, tw, interpolation="bilinear", dtype=dtype,
                    name="stc_adapter_resize"))
            layers.append(keras.layers.Conv2D(
                channels, 1, dtype=dtype, name="stc_adapter_conv"))
        elif len(front_shape) == 1 or front_shape[:-1] == back_shape[:-1]:
            layers.append(keras.layers.Dense(
                channels, dtype=dtype, name="stc_adapter_dense"))
        else:
            raise ValueError(
                "The adapter resizes only image feature maps (batch, H, W, "
                "C); the student's front output has shape "
                f"{(None,) + front_shape} and the teacher's back expects "
                f"{(None,) + back_shape}. Received: adapter=True. Choose "
                "layers whose outputs agree except in the last dimension."
            )
        return keras.Sequential(layers, name="stc_adapter")

    def collaboration_output(self, student_front):
        """`O_c = T_back(S_front(x))`, differentiable in `student_front`."""
        if self.adapter_layer is not None:
            student_front = self.adapter_layer(student_front)
        return self.teacher_back(student_front, training=False)

    def call(self, teacher_outputs, student_outputs, labels=None,
             training=False):
        collaboration = self.collaboration_output(student_outputs)
        target = labels if self.target == "labels" else teacher_outputs
        if self.target == "labels" and labels is None:
            raise ValueError("STC with target='labels' needs labels.")
        if self.collaboration_loss is not None:
            return self.collaboration_loss(_float32(target),
                                           _float32(collaboration))
        if self.target == "teacher":
            return kd_losses.soft_cross_entropy(
                teacher_outputs, collaboration, self.temperature)
        if self.target == "soft":
            return self.temperature ** 2 * kd_losses.soft_cross_entropy(
                teacher_outputs, collaboration, self.temperature)
        return kd_losses.cross_entropy(labels, collaboration)

    def get_config(self):
        config = super().get_config()
        config.update({
            "temperature": self.temperature,
            "target": self.target,
            "adapter": self.adapter,
            "collaboration_loss": serialize_loss(self.collaboration_loss),
        })
        return config
