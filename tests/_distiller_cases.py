"""The distiller test battery: one case per registered method, plus options.

`distiller_params()` yields one `pytest.param` per method of
`tfkd.distillers.registry` (built with `registry.build` on a tiny
teacher/student pair, so a new method is tested as soon as its term
declares it), plus explicit cases for options a method's default build does
not exercise (two-stage, several pairs, "+KD", a mixed Keras + tfkd term
list). A method that fails to build fails the suite; nothing is skipped.

The models are `tfkd.testing.tiny_conv_model`s (8×8×1 inputs, no batch
norm), so results do not depend on how a batch is split across replicas
except where a term is batch-level by design (LP).
"""

import dataclasses

import keras
import pytest

import tfkd
from tfkd import _compat
from tfkd import testing
from tfkd.distillers import registry

#: Both tiny models tap `conv2` (8×8×width) for feature methods.
TAPS = ("conv2", "conv2")

#: Smaller settings so every method trains in a couple of steps on the tiny
#: pair (the defaults are the papers', for real models).
_FAST = {
    "lp": {"k": 3, "gamma": 0.1},
    # One `fit` of one epoch: the hint stage alone (their default,
    # `stage="both"`, needs an epoch per stage; tests/methods/test_method_paths.py
    # runs it).
    "fitnet": {"stage": 1},
    "correlation": {"stage": 1},
    # No regressor pre-training run in `fit` (its own test is
    # tests/methods/test_method_paths.py): the battery counts the step's passes.
    "ktan": {"pretrain_steps": 1, "discriminator_width": 4,
             "kd_weight": 0.5, "pretrain_epochs": 0},
    "dln": {"pretrain_steps": 1, "discriminator_width": 4,
            "pretrain_epochs": 0},
}


def _mixed_terms():
    return [
        tfkd.losses.KDDistillation(temperature=2.0),
        tfkd.losses.AttentionDistillation(teacher_layer_name="conv1",
                                          student_layer_name="conv1"),
        tfkd.losses.CorrelationDistillation(
            "channel", teacher_layer_name="conv2",
            student_layer_name="conv2", adapter=True),
        keras.distillation.LogitsDistillation(
            temperature=3.0, loss=keras.losses.KLDivergence()),
        keras.distillation.FeatureDistillation(
            loss="mse", teacher_layer_name="logits",
            student_layer_name="logits"),
    ]


@dataclasses.dataclass(frozen=True)
class Case:
    """How to build and compile one distiller for a test.

    Attributes:
        name: Test id.
        method: The registry method (or `None` for a custom `make`).
        kwargs: Arguments on top of the method's defaults.
        make: Optional `make(teacher, student) -> distiller`.
    """

    name: str
    method: str = None
    kwargs: dict = dataclasses.field(default_factory=dict)
    make: object = None

    def build(self, teacher, student, **overrides):
        if self.make is not None:
            return self.make(teacher, student, **overrides)
        spec = registry.get(self.method)
        kwargs = {**self.kwargs, **overrides}
        return registry.build(self.method, teacher, student,
                              feature_layers=TAPS if spec.uses_features
                              else None, **kwargs)

    @property
    def two_optimizers(self):
        return self.method is not None and registry.get(
            self.method).two_optimizers

    def batch_level(self, distiller):
        """Metric names of batch-level terms of a built distiller."""
        return tuple(f"{name}_loss" for name, term in distiller.terms.items()
                     if getattr(term, "batch_level", False)
                     or not isinstance(term, tfkd.terms.DistillationTerm))

    def compile(self, distiller, optimizer=None, **kwargs):
        def sgd():
            return keras.optimizers.SGD(0.05)

        if self.two_optimizers:
            distiller.compile(optimizer=optimizer or sgd(),
                              discriminator_optimizer=sgd(), **kwargs)
        else:
            distiller.compile(optimizer=optimizer or sgd(), **kwargs)
        return distiller


def all_cases():
    """A case per registered method, then the option cases."""
    cases = [Case(name, name, _FAST.get(name, {}))
             for name in registry.method_names()]
    cases += [
        # The registry's correlation is two-stage (stage 1 here); this is
        # the paper's single-stage eq. 6 with its "+KD" class loss.
        Case("correlation_single_stage", "correlation",
             {"teacher_layer_name": "conv1", "student_layer_name": "conv1",
              "mode": "channel", "stage": None, "alpha": 0.3}),
        Case("attention_two_pairs", "attention",
             {"teacher_layer_name": ["conv1", "conv2"],
              "student_layer_name": ["conv1", "conv2"], "alpha": 0.5}),
        Case("stc_kd", "stc", {"teacher_layer_name": "conv1",
                               "student_layer_name": "conv1", "alpha": 0.3,
                               "kd_weight": 0.5}),
        Case("mixed_terms", make=lambda t, s, **kw: tfkd.Distiller(
            t, s, _mixed_terms(),
            distillation_loss_weights=[1.0, 10.0, 1.0, 0.5, 0.1],
            student_loss_weight=0.3, **kw)),
    ]
    return cases


def distiller_params(exclude=()):
    """`pytest.param(case, id=case.name)` for each case."""
    return [pytest.param(case, id=case.name) for case in all_cases()
            if case.name not in exclude]


def tiny_pair(teacher_width=8, student_width=4, seed=1, **kwargs):
    """A deterministic tiny teacher/student pair (8×8×1 inputs, 10 classes,
    no batch norm)."""
    teacher = testing.tiny_conv_model("teacher", width=teacher_width,
                                      seed=seed, **kwargs)
    student = testing.tiny_conv_model("student", width=student_width,
                                      seed=seed + 10, **kwargs)
    return teacher, student


def mirrored_strategy(devices):
    """A `MirroredStrategy` with its own collective keys (see
    `tfkd._compat.mirrored_strategy`)."""
    return _compat.mirrored_strategy(devices)
