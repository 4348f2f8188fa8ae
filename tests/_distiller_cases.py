"""One small, deterministic configuration of every tfkd distiller, for tests.

`distiller_params()` yields one `pytest.param` per distiller: the explicit
cases below (each distiller class with options that exercise its own parts:
adapters, regressors, the STC back, KTAN's discriminator) plus any method
of `tfkd.distillers.registry` not covered by them (built with the
registry's defaults), so a new method is tested as soon as it is
registered. A case whose distiller is not importable yet is skipped with
a reason naming it.

The models are `tfkd.testing.tiny_conv_model`s (8×8×1 inputs, no batch
norm), so results do not depend on how a batch is split across replicas
except where a loss is batch-level by design (LP).
"""

import dataclasses
import importlib
import itertools

import keras
import pytest
import tensorflow as tf

from tfkd import testing


@dataclasses.dataclass(frozen=True)
class Case:
    """How to build and compile one distiller for a test.

    Attributes:
        name: Test id.
        target: `"module:ClassName"` of the distiller.
        kwargs: Constructor arguments besides teacher and student.
        two_optimizers: Whether `compile` takes `discriminator_optimizer`.
        batch_level: Names of loss terms computed over the (local) batch.
    """

    name: str
    target: str
    kwargs: dict = dataclasses.field(default_factory=dict)
    two_optimizers: bool = False
    batch_level: tuple = ()
    registry_method: str = None

    def load(self):
        module, cls = self.target.split(":")
        return getattr(importlib.import_module(module), cls)

    def build(self, teacher, student, **overrides):
        if self.registry_method is not None:
            from tfkd.distillers import registry

            return registry.build(self.registry_method, teacher, student,
                                  feature_layers=("conv2", "conv2"),
                                  **overrides)
        kwargs = dict(self.kwargs)
        kwargs.update(overrides)
        return self.load()(teacher, student, **kwargs)

    def compile(self, distiller, optimizer=None, **kwargs):
        def sgd():
            return keras.optimizers.SGD(0.05)

        if self.two_optimizers:
            distiller.compile(optimizer=optimizer or sgd(),
                              discriminator_optimizer=sgd(), **kwargs)
        else:
            distiller.compile(optimizer=optimizer or sgd(), **kwargs)
        return distiller


_D = "tfkd.distillers."

CASES = (
    Case("kd", _D + "base:Distiller", {"alpha": 0.5, "temperature": 4.0}),
    Case("kd_taps", _D + "base:Distiller",
         {"alpha": 0.5, "teacher_layer": "conv1", "student_layer": "conv1"}),
    Case("correlation", _D + "correlation:CorrelationDistiller",
         {"teacher_layer": "conv2", "student_layer": "conv2", "mode": "both",
          "adapter": True, "alpha": 0.5}),
    Case("correlation_stage1", _D + "correlation:CorrelationDistiller",
         {"teacher_layer": "conv1", "student_layer": "conv1",
          "mode": "channel", "adapter": True, "stage": 1}),
    Case("fitnet", _D + "fitnet:FitNetDistiller",
         {"teacher_layer": "conv1", "student_layer": "conv1", "alpha": 0.5}),
    Case("attention", _D + "attention:AttentionDistiller",
         {"teacher_layer": ["conv1", "conv2"],
          "student_layer": ["conv1", "conv2"], "alpha": 0.5}),
    Case("lp", _D + "locality:LocalityPreservingDistiller",
         {"teacher_layer": "conv2", "student_layer": "conv2", "k": 3,
          "gamma": 0.1}, batch_level=("lp_loss",)),
    Case("stc", _D + "collaboration:CollaborationDistiller",
         {"teacher_layer": "conv1", "student_layer": "conv1", "alpha": 0.3,
          "adapter": True, "kd_weight": 0.5}),
    Case("ktan", _D + "adversarial:AdversarialDistiller",
         {"teacher_layer": "conv2", "student_layer": "conv2",
          "pretrain_steps": 1, "discriminator_width": 4, "kd_weight": 0.5},
         two_optimizers=True),
)

def all_cases():
    """The explicit cases plus uncovered registry methods."""
    cases = list(CASES)
    try:
        from tfkd.distillers import registry

        names = registry.method_names()
    except ImportError:
        names = []
    known_targets = {c.target for c in CASES}
    for name in names:
        spec = registry.get(name)
        if spec.target in known_targets:
            continue  # Its class already has an explicit case.
        cases.append(Case(f"registry_{name}", spec.target,
                          registry_method=name,
                          two_optimizers="Adversarial" in spec.target))
    return cases


def distiller_params(exclude=()):
    """`pytest.param(case, id=case.name)` for each case, skipping the ones
    whose distiller class cannot be imported yet."""
    params = []
    for case in all_cases():
        if case.name in exclude:
            continue
        marks = ()
        try:
            case.load()
        except (ImportError, AttributeError) as e:
            marks = pytest.mark.skip(
                reason=f"distiller {case.target} ({case.name}) is not "
                       f"importable yet: {e}")
        params.append(pytest.param(case, id=case.name, marks=marks))
    return params


def tiny_pair(teacher_width=8, student_width=4, seed=1, **kwargs):
    """A deterministic tiny teacher/student pair (8×8×1 inputs, 10 classes,
    no batch norm)."""
    teacher = testing.tiny_conv_model("teacher", width=teacher_width,
                                      seed=seed, **kwargs)
    student = testing.tiny_conv_model("student", width=student_width,
                                      seed=seed + 10, **kwargs)
    return teacher, student



_key_bases = itertools.count(1)


def mirrored_strategy(devices):
    """A `MirroredStrategy` over `devices` with its own collective keys.

    Every `MirroredStrategy` numbers its collective ops from the same keys,
    so a second strategy on the same devices in one process reuses
    instance keys whose shapes TensorFlow has cached, and its first
    all-reduce of differently shaped gradients aborts with "Shape mismatch
    in the collective instance 100" (tensorflow/tensorflow#62790). TF's own
    tests give each strategy a distinct key base; so do we, since pytest
    runs many strategies in one process. Real programs should create one
    strategy per process and reuse it.
    """
    cls = tf.distribute.MirroredStrategy
    saved = cls._collective_key_base
    cls._collective_key_base = 100_000 * next(_key_bases)
    try:
        return cls(devices)
    finally:
        cls._collective_key_base = saved
