"""Benchmark: tfkd against Keras's own `keras.distillation.Distiller`.

Two teacher/student pairs (`--pair`): the correlation paper's VGG pair
(`tfkd.models.vgg_teacher` / `vgg_student`) and ResNet-56 → ResNet-20
(`tfkd.models.resnet56` / `resnet20`), 32×32×3 images, the same batch,
the same optimizer (SGD with momentum), each distiller's `train_step` in
one `tf.function` (what `fit` compiles), timed in one process, interleaved
(see `benchmarks/_common.py`). Both libraries optimise the **same
objective**, checked before timing:

- logits only: `0.5 · CE + 0.5 · T² · KL(softmax(t/T) ‖ softmax(s/T))`,
  `T = 4`. Keras: `LogitsDistillation(temperature=4,
  loss=keras.losses.KLDivergence())` with `student_loss_weight=0.5`;
  tfkd: `Distiller(alpha=0.5, temperature=4)`. The loss must be a
  `KLDivergence` *instance*: Keras 3.15's default `loss="kl_divergence"`
  resolves to the plain function, which `LogitsDistillation` applies to
  the raw scaled logits (no softmax, no `T²`), a different loss (printed
  below as "Keras default").
- one feature loss: `0.5 · CE + ½ ‖f_S − f_T‖²` (summed over the
  elements of one tapped map, batch mean) between same-shape layers.
  Keras: `FeatureDistillation(loss="mse")` (a mean over the `H·W·C`
  elements) with `student_loss_weight=0.5` and
  `distillation_loss_weights=[H·W·C]`; tfkd: `FitNetDistiller(
  regressor=False, alpha=1, beta=0.5)` (no regressor: shapes match).

Before timing, one step of each distiller with learning rate 0 on the
same batch must report the same loss (relative difference ≤ 1e-5), or the
script stops.

Keras's distiller runs the student a second time (training mode, inside
the gradient tape) to read its features; tfkd taps them in its one pass.
Targets: tfkd / Keras ≤ 1.0 with logits, ≤ 0.8 with features.

It also prints the floor of a tfkd feature step against Keras's (tfkd's
logits-only step over Keras's feature step), the parts (`teacher`
inference, the `student` training step alone, the student's forward pass
in training mode `student fwd`, which Keras runs a second time), and
`tfkd features cached`: the same tfkd step on a batch carrying cached
teacher outputs (`tfkd.data.cache_teacher_outputs`), which Keras's
distiller has no equivalent of.

    python benchmarks/vs_keras.py --pair resnet --batch 128 --rounds 10
    python benchmarks/vs_keras.py --pair vgg --batch 128 --rounds 10
"""

import argparse

import keras
import numpy as np
import tensorflow as tf

import _common

PAIRS = {
    # name: (teacher builder, student builder, teacher tap, student tap)
    "vgg": ("vgg_teacher", "vgg_student", "block4_relu1", "block4_relu1"),
    # End of stage 2 (16×16×32 on both): FitNets' middle hint.
    "resnet": ("resnet56", "resnet20", "stage2_block9_out",
               "stage2_block3_out"),
}

TEMPERATURE = 4.0
STUDENT_WEIGHT = 0.5
RTOL = 1e-5


def optimizer(learning_rate=0.01):
    return keras.optimizers.SGD(learning_rate, momentum=0.9)


def keras_distiller(teacher, student, features, taps, learning_rate=0.01,
                    logits_loss=None):
    from keras import distillation

    if features:
        t_tap, s_tap = taps
        size = int(np.prod(teacher.get_layer(t_tap).output.shape[1:]))
        # Keras's "mse" is a mean over the H·W·C elements; weighted by
        # H·W·C (and 1 − 0.5 from student_loss_weight) it is ½·sum.
        losses = distillation.FeatureDistillation(
            loss="mse", teacher_layer_name=t_tap, student_layer_name=s_tap)
        weights = [float(size)]
    else:
        # An instance: Keras softmaxes only for `KLDivergence` instances.
        losses = distillation.LogitsDistillation(
            temperature=TEMPERATURE,
            loss=logits_loss or keras.losses.KLDivergence())
        weights = None
    # A list: Keras ignores `distillation_loss_weights` (uses 1.0) when
    # given a single loss object.
    distiller = distillation.Distiller(teacher, student,
                                       distillation_losses=[losses],
                                       distillation_loss_weights=weights,
                                       student_loss_weight=STUDENT_WEIGHT)
    distiller.compile(
        optimizer=optimizer(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return distiller


def tfkd_distiller(teacher, student, features, taps, learning_rate=0.01):
    import tfkd

    if features:
        distiller = tfkd.FitNetDistiller(
            teacher, student, stage=None, teacher_layer_name=taps[0],
            student_layer_name=taps[1],
            regressor=False, alpha=1.0, beta=STUDENT_WEIGHT)
    else:
        distiller = tfkd.Distiller(teacher, student, alpha=STUDENT_WEIGHT,
                                   temperature=TEMPERATURE)
    distiller.compile(optimizer=optimizer(learning_rate))
    return distiller


def step_loss(distiller, x, y):
    """The loss one training step reports, with learning rate 0 (so the
    weights do not move; batch-norm moving statistics, unused in training
    mode, do)."""
    distiller.optimizer.build(distiller.trainable_variables)
    return float(distiller.train_step((x, y))["loss"])


def check_same_loss(teacher, student, taps, x, y):
    """Both libraries' loss on one batch; raises if they differ."""
    rows = []
    for kind, features in (("logits", False), ("features", True)):
        k = step_loss(keras_distiller(teacher, student, features, taps,
                                      learning_rate=0.0), x, y)
        t = step_loss(tfkd_distiller(teacher, student, features, taps,
                                     learning_rate=0.0), x, y)
        if features:
            # `FitNetDistiller` reports its paper's objective divided by
            # its normalisation `s = 1 + beta` (docs/architecture.md).
            t *= 1.0 + STUDENT_WEIGHT
        rel = abs(k - t) / abs(k)
        rows.append([kind, f"{k:.6f}", f"{t:.6f}", f"{rel:.1e}"])
        if rel > RTOL:
            raise AssertionError(
                f"{kind}: Keras's loss {k} and tfkd's {t} differ by {rel:.1e}"
                f" (relative) > {RTOL}: the two sides do not compute the "
                "same objective, so their times are not comparable.")
    default = step_loss(keras_distiller(teacher, student, False, taps,
                                        learning_rate=0.0,
                                        logits_loss="kl_divergence"), x, y)
    rows.append(['logits, Keras default loss="kl_divergence"',
                 f"{default:.6f}", "", "(a different loss)"])
    print("\nSame objective, one batch, learning rate 0:")
    print(_common.table(["distillation", "Keras loss", "tfkd loss",
                         "relative difference"], rows), flush=True)


def main():
    import tfkd

    print(_common.environment(), flush=True)
    t_name, s_name, *taps = PAIRS[ARGS.pair]
    teacher = getattr(tfkd.models, t_name)()
    student = getattr(tfkd.models, s_name)()
    x, y = _common.batch(ARGS.batch)
    check_same_loss(teacher, student, taps, x, y)

    steps = {}
    for kind, features in (("logits", False), ("features", True)):
        for lib, factory in (("keras", keras_distiller),
                             ("tfkd", tfkd_distiller)):
            distiller = factory(teacher, student, features, taps)
            distiller.optimizer.build(distiller.trainable_variables)
            step = tf.function(distiller.train_step)
            steps[f"{lib} {kind}"] = (lambda f: lambda: f((x, y)))(step)
    # The parts, for the bound of the feature ratio.
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    student_optimizer = optimizer()
    student_optimizer.build(student.trainable_variables)

    @tf.function
    def student_step(x, y):
        with tf.GradientTape() as tape:
            loss = ce(y, student(x, training=True))
        grads = tape.gradient(loss, student.trainable_variables)
        student_optimizer.apply_gradients(
            zip(grads, student.trainable_variables))
        return loss

    teacher_fn = tf.function(lambda x: teacher(x, training=False))
    student_fwd = tf.function(lambda x: student(x, training=True))
    steps["teacher"] = lambda: teacher_fn(x)
    steps["student"] = lambda: student_step(x, y)
    steps["student fwd"] = lambda: student_fwd(x)
    # tfkd's feature step on cached teacher outputs.
    cached_distiller = tfkd_distiller(teacher, student, True, taps)
    cached_distiller.optimizer.build(cached_distiller.trainable_variables)
    logits, features = cached_distiller.teacher_forward(x)
    cached_batch = ({"images": x, "teacher_logits": logits,
                     "teacher_features": tuple(features)}, y)
    cached_step = tf.function(cached_distiller.train_step)
    steps["tfkd features cached"] = lambda: cached_step(cached_batch)

    times = _common.interleaved(steps, ARGS.rounds, warmup=ARGS.warmup)
    rows = []
    for kind, target in (("logits", 1.0), ("features", 0.8)):
        ratio = _common.paired_ratio(times, f"tfkd {kind}", f"keras {kind}")
        rows.append([
            kind, f"{_common.median_ms(times, f'keras {kind}'):.0f}",
            f"{_common.median_ms(times, f'tfkd {kind}'):.0f}",
            _common.fmt_ratio(ratio),
            f"≤ {target:.1f} {'met' if ratio[0] <= target else 'MISSED'}"])
    ratio = _common.paired_ratio(times, "tfkd features cached",
                                 "keras features")
    rows.append([
        "features, tfkd on cached teacher outputs",
        f"{_common.median_ms(times, 'keras features'):.0f}",
        f"{_common.median_ms(times, 'tfkd features cached'):.0f}",
        _common.fmt_ratio(ratio),
        f"≤ 0.8 {'met' if ratio[0] <= 0.8 else 'MISSED'}"])
    print(f"\n{t_name} → {s_name} (taps {taps[0]} / {taps[1]}), batch "
          f"{ARGS.batch}, {ARGS.rounds} rounds (median, 25th–75th "
          f"percentile of per-round ratios)")
    print(_common.table(["distillation", "Keras ms", "tfkd ms",
                         "tfkd / Keras", "target"], rows))
    floor = _common.paired_ratio(times, "tfkd logits", "keras features")
    print("\nFloor, tfkd logits-only step / Keras feature step: "
          f"{_common.fmt_ratio(floor)}")
    print("Parts (median ms): " + ", ".join(
        f"{n} {_common.median_ms(times, n):.0f}"
        for n in ("teacher", "student", "student fwd")))
    print(_common.environment())


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pair", choices=sorted(PAIRS), default="resnet")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    return parser.parse_args()


if __name__ == "__main__":
    ARGS = parse_args()
    main()
