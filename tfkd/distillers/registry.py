"""Names of the distillation methods, for the CLI, recipes and tuning.

Each entry maps a method name to its distiller class (imported lazily) and
whether it taps features. `build` constructs a distiller on any
teacher/student pair from a method name, so `tfkd demo --method`,
`tfkd tune --method` and the recipes share one table.
"""

import dataclasses
import importlib


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """How to build one method's distiller.

    Attributes:
        target: `"module:ClassName"` of the distiller.
        uses_features: Whether it needs `teacher_layer` / `student_layer`.
        defaults: Constructor arguments the method uses by default here.
        description: One line for `--help` and tables.
    """

    target: str
    uses_features: bool
    defaults: dict = dataclasses.field(default_factory=dict)
    description: str = ""

    def load(self):
        module, name = self.target.split(":")
        return getattr(importlib.import_module(module), name)


_METHODS = {
    "stc": MethodSpec(
        "tfkd.distillers.collaboration:CollaborationDistiller", True,
        {"alpha": 0.5, "temperature": 1.0, "adapter": True},
        "student-teacher collaboration: student front + frozen teacher back"),
    "kd": MethodSpec("tfkd.distillers.base:Distiller", False,
                     {"alpha": 0.5, "temperature": 4.0},
                     "Hinton KD (soft targets)"),
    "correlation": MethodSpec(
        "tfkd.distillers.correlation:CorrelationDistiller", True,
        {"mode": "both", "alpha": 1.0, "beta": 0.1, "adapter": True},
        "correlation-based learning (channel + spatial Gram matrices)"),
    "fitnet": MethodSpec(
        "tfkd.distillers.fitnet:FitNetDistiller", True,
        {"alpha": 1.0, "beta": 0.1},
        "FitNets hints through a distiller-owned regressor"),
    "attention": MethodSpec(
        "tfkd.distillers.attention:AttentionDistiller", True,
        {"adapter": True},
        "attention transfer (AT, beta = 1000 / 2 per pair)"),
    "ktan": MethodSpec(
        "tfkd.distillers.adversarial:AdversarialDistiller", True,
        # Phase 1 (CE + beta·MSE) for 100 steps, then adversarial steps; the
        # paper leaves phase 1's length open. `fit` pre-trains the regressor.
        {"alpha": 0.6, "beta": 0.5, "pretrain_steps": 100},
        "KTAN: teacher-to-student regressor + discriminator"),
    "lp": MethodSpec("tfkd.distillers.locality:LocalityPreservingDistiller",
                     True,
                     {"k": 5, "gamma": 1.0, "lam": 2.0, "temperature": 0.5},
                     "locality-preserving loss + soft targets (LP, eq. 8)"),
}


def register_method(name, spec):
    """Adds (or replaces) a method in the table."""
    _METHODS[name] = spec


def method_names():
    """Names of the methods whose distiller is importable, sorted."""
    names = []
    for name, spec in _METHODS.items():
        try:
            spec.load()
        except (ImportError, AttributeError):
            continue
        names.append(name)
    return sorted(names)


def get(name):
    """Returns the `MethodSpec` of `name` or raises a clear `ValueError`."""
    if name not in method_names():
        raise ValueError(
            f"Unknown distillation method. Received: method={name!r}. "
            f"Choose one of {method_names()}."
        )
    return _METHODS[name]


#: Per-method taps on the digits pair where the default does not suit:
#: LP pulls in-batch neighbours together, and on the 8×8 conv maps its term
#: (~100) swamps the class loss until the student's features collapse; the
#: pooled embedding trains well (see docs/results_lp_digits.md).
_DIGITS_TAPS = {"lp": ("gap", "gap")}


def digits_taps(method=None):
    """`(teacher_layer, student_layer)` tapped on the digits demo pair.

    Args:
        method: Optional method name; most methods tap the last conv
            block's activation, LP taps the pooled embedding.

    Returns:
        A `(teacher_layer, student_layer)` pair of layer names.

    Example:

    >>> digits_taps("lp")
    ('gap', 'gap')
    """
    from tfkd.models.digits import DIGITS_FEATURE_LAYER

    return _DIGITS_TAPS.get(method, (DIGITS_FEATURE_LAYER,
                                     DIGITS_FEATURE_LAYER))


def build(name, teacher, student, feature_layers=None, **overrides):
    """Builds the distiller of method `name` on `teacher` and `student`.

    Args:
        name: A method name (see `method_names()`).
        teacher: The trained teacher `keras.Model`.
        student: The student `keras.Model`.
        feature_layers: `(teacher_layer, student_layer)` for feature methods.
        **overrides: Constructor arguments replacing the method's defaults.

    Returns:
        The constructed distiller (not compiled).
    """
    spec = get(name)
    kwargs = dict(spec.defaults)
    kwargs.update(overrides)
    if spec.uses_features:
        if feature_layers is None:
            raise ValueError(
                f"Method {name!r} distils intermediate features: pass "
                f"`feature_layers=(teacher_layer, student_layer)`. "
                f"Received: feature_layers=None."
            )
        kwargs.setdefault("teacher_layer", feature_layers[0])
        kwargs.setdefault("student_layer", feature_layers[1])
    return spec.load()(teacher, student, **kwargs)


def fit(distiller, *args, **kwargs):
    """Fits a distiller the way its method trains.

    Two-stage distillers run both stages; KTAN first pre-trains its
    teacher-to-student regressor on the training data (Algorithm 1).
    """
    if hasattr(distiller, "pretrain_regressor") and args:
        distiller.pretrain_regressor(args[0], epochs=1)
    if getattr(distiller, "stage", None) is not None and hasattr(
        distiller, "fit_two_stage"
    ):
        return distiller.fit_two_stage(*args, **kwargs)
    return distiller.fit(*args, **kwargs)
