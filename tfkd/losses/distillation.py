"""`keras.distillation.DistillationLoss` adapters for tfkd's feature losses.

These let the weight-free tfkd losses (correlation, attention transfer,
locality preserving, and hints between same-shape layers) run inside Keras's
own `keras.distillation.Distiller`, tapping layers by name as
`keras.distillation.FeatureDistillation` does. Losses that need trainable
adapters or regressors live in tfkd's distillers instead.
"""

import keras
import tensorflow as tf

from tfkd.losses._utils import check_option
from tfkd.losses._utils import check_positive
from tfkd.losses._utils import check_positive_int
from tfkd.losses.attention import ATTENTION_MODES
from tfkd.losses.attention import attention_transfer_loss
from tfkd.losses.correlation import CORRELATION_MODES
from tfkd.losses.correlation import DEFAULT_MAX_SPATIAL_POSITIONS
from tfkd.losses.correlation import correlation_loss
from tfkd.losses.hint import hint_loss
from tfkd.losses.locality import locality_preserving_loss


class _LayerTapDistillation(keras.distillation.DistillationLoss):
    """Shared layer tapping, validation and config of the adapters below.

    Subclasses implement `_loss(teacher, student)` (per-example or scalar)
    and `_config()` (their own arguments).
    """

    def __init__(self, teacher_layer_name=None, student_layer_name=None):
        for name, value in (("teacher_layer_name", teacher_layer_name),
                            ("student_layer_name", student_layer_name)):
            if value is not None and not isinstance(value, str):
                raise TypeError(
                    f"`{name}` must be a layer name (str) or None. "
                    f"Received: {name}={value!r}."
                )
        if (teacher_layer_name is None) != (student_layer_name is None):
            # Keras's Distiller decides on `teacher_layer_name` alone, so a
            # lone student name would silently be ignored.
            raise ValueError(
                "Pass both `teacher_layer_name` and `student_layer_name`, or "
                "neither (to compare the final outputs). Received: "
                f"teacher_layer_name={teacher_layer_name!r}, "
                f"student_layer_name={student_layer_name!r}."
            )
        self.teacher_layer_name = teacher_layer_name
        self.student_layer_name = student_layer_name

    def _loss(self, teacher_outputs, student_outputs):
        raise NotImplementedError

    def _config(self):
        return {}

    def validate_model_compatibility(self, teacher, student):
        """Checks the tapped layers exist and their shapes suit the loss."""
        name = type(self).__name__
        shapes = []
        for role, model, layer_name in (
            ("teacher", teacher, self.teacher_layer_name),
            ("student", student, self.student_layer_name),
        ):
            if getattr(model, "inputs", None) is None:
                if layer_name is not None:
                    raise ValueError(
                        f"{name} with layer names needs a Functional or "
                        f"Sequential {role}; {model.name!r} looks subclassed "
                        f"(no symbolic inputs). Received: "
                        f"{role}_layer_name={layer_name!r}."
                    )
                return  # Subclassed models: shapes are only known at fit.
            try:
                if layer_name is None:
                    tensor = model.outputs[0] if len(model.outputs) == 1 \
                        else None
                else:
                    tensor = model.get_layer(name=layer_name).output
            except ValueError as e:
                raise ValueError(f"In {role} model: {e}") from e
            except AttributeError:
                tensor = None  # A shared layer has no single output.
            if tensor is None:
                return
            shapes.append(tf.TensorShape(tensor.shape))
        # Trace the loss on symbolic inputs: every static check of the loss
        # runs (with its own message) before training, nothing is computed.
        try:
            tf.function(self._loss, autograph=False).get_concrete_function(
                tf.TensorSpec(shapes[0], tf.float32),
                tf.TensorSpec(shapes[1], tf.float32),
            )
        except ValueError as e:
            raise ValueError(
                f"{name}(teacher_layer_name={self.teacher_layer_name!r}, "
                f"student_layer_name={self.student_layer_name!r}) cannot "
                f"compare these layers: {e}"
            ) from e

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        """Scalar loss: the batch mean of the per-example values."""
        return tf.reduce_mean(self._loss(teacher_outputs, student_outputs))

    def get_config(self):
        config = self._config()
        config.update({
            "teacher_layer_name": self.teacher_layer_name,
            "student_layer_name": self.student_layer_name,
        })
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="tfkd")
class CorrelationDistillation(_LayerTapDistillation):
    """Correlation-based distillation loss for `keras.distillation.Distiller`.

    Batch mean of `correlation_loss` between a teacher and a student feature
    map (standardised channel and/or spatial Gram matrices). Keras's
    Distiller adds no adapter, so `"channel"` needs equal channel counts and
    `"spatial"` equal spatial sizes; tfkd's own distillers can insert one.

    Args:
        mode: `"channel"`, `"spatial"` or `"both"`.
        max_spatial_positions: Largest `H · W` accepted by the spatial Gram.
        teacher_layer_name: Teacher layer to tap, or `None` for the output.
        student_layer_name: Student layer to tap, or `None` for the output.

    Example:

    >>> loss = CorrelationDistillation(mode="channel")
    >>> f = tf.random.stateless_normal((2, 4, 4, 3), seed=(1, 2))
    >>> float(loss.compute_loss(f, f))
    0.0

    Reference:
        Wang, Xu, Xu, Yu, Wang, "Student-Centric Network Learning for
        Improved Knowledge Transfer", 2019, eqs. 1–4.
    """

    def __init__(self, mode="both",
                 max_spatial_positions=DEFAULT_MAX_SPATIAL_POSITIONS,
                 teacher_layer_name=None, student_layer_name=None):
        super().__init__(teacher_layer_name, student_layer_name)
        self.mode = check_option(mode, "mode", CORRELATION_MODES)
        self.max_spatial_positions = check_positive_int(
            max_spatial_positions, "max_spatial_positions"
        )

    def _loss(self, teacher_outputs, student_outputs):
        return correlation_loss(
            teacher_outputs, student_outputs, mode=self.mode,
            max_spatial_positions=self.max_spatial_positions,
        )

    def _config(self):
        return {"mode": self.mode,
                "max_spatial_positions": self.max_spatial_positions}


@keras.saving.register_keras_serializable(package="tfkd")
class AttentionDistillation(_LayerTapDistillation):
    """Attention-transfer loss for `keras.distillation.Distiller`.

    Batch mean of `attention_transfer_loss`. Spatial sizes must match;
    channel counts may differ. With the default `mode="code"` the authors
    weight each tapped pair by `1000 / 2`: pass it through the Distiller's
    `distillation_loss_weights`.

    Args:
        p: Exponent `p > 0` of the attention map.
        mode: `"code"` (default) or `"paper"`; see
            `attention_transfer_loss`.
        teacher_layer_name: Teacher layer to tap, or `None` for the output.
        student_layer_name: Student layer to tap, or `None` for the output.

    Example:

    >>> loss = AttentionDistillation()
    >>> f = tf.ones((2, 3, 3, 4))
    >>> float(loss.compute_loss(f, f[..., :2]))
    0.0

    Reference:
        Zagoruyko & Komodakis, "Paying More Attention to Attention",
        ICLR 2017.
    """

    def __init__(self, p=2, mode="code", teacher_layer_name=None,
                 student_layer_name=None):
        super().__init__(teacher_layer_name, student_layer_name)
        self.p = check_positive(p, "p")
        self.mode = check_option(mode, "mode", ATTENTION_MODES)

    def _loss(self, teacher_outputs, student_outputs):
        return attention_transfer_loss(teacher_outputs, student_outputs,
                                       p=self.p, mode=self.mode)

    def _config(self):
        return {"p": self.p, "mode": self.mode}


@keras.saving.register_keras_serializable(package="tfkd")
class LocalityPreservingDistillation(_LayerTapDistillation):
    """Locality-preserving loss for `keras.distillation.Distiller`.

    `locality_preserving_loss` over the mini-batch (already a scalar). The
    teacher's and the student's features may have different sizes.

    Args:
        k: Number of in-batch nearest neighbours (paper: 5).
        sigma: Gaussian width `σ > 0`, or `None` for the batch estimate.
        teacher_layer_name: Teacher layer to tap, or `None` for the output.
        student_layer_name: Student layer to tap, or `None` for the output.

    Example:

    >>> loss = LocalityPreservingDistillation(k=1, sigma=1.0)
    >>> t = [[0.0], [1.0], [3.0]]
    >>> s = [[0.0], [2.0], [2.0]]
    >>> round(float(loss.compute_loss(t, s)), 4)
    0.4905

    Reference:
        Chen, Wang, Xu, Xu, Tao, "Learning Student Networks via Feature
        Embedding", arXiv:1812.06597.
    """

    def __init__(self, k=5, sigma=None, teacher_layer_name=None,
                 student_layer_name=None):
        super().__init__(teacher_layer_name, student_layer_name)
        self.k = check_positive_int(k, "k")
        self.sigma = None if sigma is None else check_positive(sigma, "sigma")

    def _loss(self, teacher_outputs, student_outputs):
        return locality_preserving_loss(teacher_outputs, student_outputs,
                                        k=self.k, sigma=self.sigma)

    def _config(self):
        return {"k": self.k, "sigma": self.sigma}


@keras.saving.register_keras_serializable(package="tfkd")
class HintDistillation(_LayerTapDistillation):
    """FitNets hint loss between same-shape layers, for Keras's Distiller.

    Batch mean of `hint_loss`. Keras's Distiller has no place for the
    trainable regressor FitNets puts on the student side, so the tapped
    layers must already have the same shape; use tfkd's hint distiller
    otherwise.

    Args:
        teacher_layer_name: Teacher layer to tap, or `None` for the output.
        student_layer_name: Student layer to tap, or `None` for the output.

    Example:

    >>> loss = HintDistillation()
    >>> float(loss.compute_loss([[0.0, 0.0]], [[1.0, 1.0]]))
    1.0

    Reference:
        Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015.
    """

    def _loss(self, teacher_outputs, student_outputs):
        return hint_loss(teacher_outputs, student_outputs)
