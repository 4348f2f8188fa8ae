"""Benchmark: tfkd against Keras's own `keras.distillation.Distiller`.

Same VGG pair (`tfkd.models.vgg_teacher` / `vgg_student`, 32×32×3), same
batch, same optimizer (SGD with momentum), each distiller's `train_step` in
one `tf.function` (what `fit` compiles), timed in one process, interleaved
(see `benchmarks/_common.py`):

- logits only: `keras.distillation.Distiller` with `LogitsDistillation(
  temperature=4)` and `student_loss_weight=0.5` against `tfkd.Distiller(
  alpha=0.5, temperature=4)`;
- one feature loss: Keras's `FeatureDistillation(loss="mse")` between the
  same-shape layers `block4_relu1` (4×4×512 on both networks) with
  `student_loss_weight=0.5`, against `tfkd.FitNetDistiller(regressor=False,
  alpha=1, beta=1)` on the same pair (hint loss + cross entropy; no
  regressor, since the shapes match).

Keras's distiller runs the student a second time to get features; tfkd
taps all layers in one pass. Targets: tfkd / Keras ≤ 1.0 with logits,
≤ 0.8 with features.

To explain the feature ratio it also prints the floor of any tfkd feature
step against Keras's: tfkd's own logits-only step over Keras's feature
step (a feature step cannot cost less than the same step without the
feature loss), and the parts: the teacher's inference (`teacher`), the
student's training step alone (`student`) and its forward pass in
training mode (`student fwd`, which Keras runs a second time, and
differentiates through). And it times `tfkd features cached`: the same
tfkd step on a batch carrying cached teacher outputs
(`tfkd.data.cache_teacher_outputs`), which Keras's distiller has no
equivalent of.

    python benchmarks/vs_keras.py --batch 128 --rounds 10
"""

import argparse

import keras
import tensorflow as tf

import _common

TAP = "block4_relu1"


def optimizer():
    return keras.optimizers.SGD(0.01, momentum=0.9)


def keras_distiller(teacher, student, features):
    from keras import distillation

    if features:
        losses = distillation.FeatureDistillation(
            loss="mse", teacher_layer_name=TAP, student_layer_name=TAP)
    else:
        losses = distillation.LogitsDistillation(temperature=4.0)
    distiller = distillation.Distiller(teacher, student,
                                       distillation_losses=losses,
                                       student_loss_weight=0.5)
    distiller.compile(
        optimizer=optimizer(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return distiller


def tfkd_distiller(teacher, student, features):
    import tfkd

    if features:
        distiller = tfkd.FitNetDistiller(
            teacher, student, teacher_layer=TAP, student_layer=TAP,
            regressor=False, alpha=1.0, beta=1.0)
    else:
        distiller = tfkd.Distiller(teacher, student, alpha=0.5,
                                   temperature=4.0)
    distiller.compile(optimizer=optimizer())
    return distiller


def main():
    print(_common.environment(), flush=True)
    teacher, student = _common.vgg_pair()
    x, y = _common.batch(ARGS.batch)
    steps = {}
    for kind, features in (("logits", False), ("features", True)):
        for lib, factory in (("keras", keras_distiller),
                             ("tfkd", tfkd_distiller)):
            distiller = factory(teacher, student, features)
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
    cached_distiller = tfkd_distiller(teacher, student, True)
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
    print(f"\nVGG pair, batch {ARGS.batch}, {ARGS.rounds} rounds (median, "
          f"25th–75th percentile of per-round ratios)")
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
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    return parser.parse_args()


if __name__ == "__main__":
    ARGS = parse_args()
    main()
