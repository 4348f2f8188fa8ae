"""Benchmark: the overhead of a tfkd training step over its bare parts.

On the correlation paper's VGG pair (`tfkd.models.vgg_teacher` /
`vgg_student`, 32×32×3, batch 128 by default) it times, in one process and
interleaved (see `benchmarks/_common.py`):

- `teacher`: the teacher's inference alone, `teacher(x, training=False)`
  in its own `tf.function`;
- `student`: the student's training step alone (cross entropy, SGD with
  momentum) in its own `tf.function`;
- each distiller's `train_step` in one `tf.function` (what `fit` compiles):
  `kd` (`tfkd.Distiller`), `correlation` (`CorrelationDistiller`, both
  Gram matrices, `alpha = 0.3`), `correlation-direct` (the same with the
  loss computed in the direct form, both Grams built, as tfkd did before
  the kernel form; opt-in), `fitnet` (`FitNetDistiller`, 1×1 conv
  regressor), `attention` (`AttentionDistiller`) and `lp`
  (`LocalityPreservingDistiller`), all tapping the guided layer
  `block4_relu1` on both networks.

The overhead ratio is `step / (teacher + student)`, per round, median over
rounds. Targets: ≤ 1.10 for KD and correlation, ≤ 1.25 for the other
feature distillers.

    python benchmarks/step_overhead.py --batch 128 --rounds 10

A method name with the suffix `-unchecked` (e.g. `kd-unchecked`) is the
same distiller with `check_finite = False` (no NaN/Inf guard on images and
gradients); `--check-finite` times `kd` and `fitnet` with and without the
guard and prints each guarded / unguarded ratio. All distillers share the
student, so it runs at learning rate 0 (the same work per step: gradients,
momentum, updates), else a diverging FitNets step would make the guard
stop the run:

    python benchmarks/step_overhead.py --batch 128 --rounds 10 --check-finite
"""

import argparse
import contextlib

import keras
import tensorflow as tf

import _common

TAP = "block4_relu1"


def optimizer():
    return keras.optimizers.SGD(ARGS.lr, momentum=0.9)


@contextlib.contextmanager
def direct_correlation_form():
    """While active, `correlation_loss` takes the direct form (both Grams
    built, as tfkd did before the kernel form) whatever the shapes; a step
    traced inside keeps it. Yields the list of form decisions made."""
    from tfkd.methods import correlation

    original, decisions = correlation._gram_form, []

    def direct(*args):
        decisions.append(args)
        return "direct"

    correlation._gram_form = direct
    try:
        yield decisions
    finally:
        correlation._gram_form = original


def build_steps(teacher, student, methods):
    """`{name: zero-arg callable}` for the baseline and each distiller."""
    import tfkd

    x, y = _common.batch(ARGS.batch)

    teacher_fn = tf.function(lambda x: teacher(x, training=False))
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

    steps = {
        "teacher": lambda: teacher_fn(x),
        "student": lambda: student_step(x, y),
    }
    if ARGS.check_finite:
        steps["guard alone"] = guard_alone(student, x)
    taps = {"teacher_layer_name": TAP, "student_layer_name": TAP}
    factories = {
        "kd": lambda: tfkd.Distiller(teacher, student, alpha=0.5),
        "correlation": lambda: tfkd.CorrelationDistiller(
            teacher, student, stage=None, mode="both", alpha=0.3, **taps),
        "correlation-direct": lambda: tfkd.CorrelationDistiller(
            teacher, student, stage=None, mode="both", alpha=0.3, **taps),
        "fitnet": lambda: tfkd.FitNetDistiller(teacher, student, stage=None,
                                               alpha=0.5,
                                               **taps),
        "attention": lambda: tfkd.AttentionDistiller(teacher, student,
                                                     **taps),
        "lp": lambda: tfkd.LocalityPreservingDistiller(teacher, student,
                                                       **taps),
    }
    for name in methods:
        base = name[:-len(UNCHECKED)] if name.endswith(UNCHECKED) else name
        distiller = factories[base]()
        distiller.check_finite = base == name
        distiller.compile(optimizer=optimizer())
        step = tf.function(distiller.train_step)
        if name == "correlation-direct":
            # Traced (twice: the first call may create optimizer
            # variables) with the direct form; later calls reuse it.
            with direct_correlation_form() as decisions:
                step((x, y))
                step((x, y))
            if not decisions:
                raise RuntimeError("correlation-direct: the step did not "
                                   "go through correlation_loss.")
            TRACED[name] = (step, step.experimental_get_tracing_count())
        steps[name] = (lambda step: lambda: step((x, y)))(step)
    return steps


def guard_alone(student, x):
    """The finite guard's own work, without a step: the image check and
    the gradient check on gradients shaped like the student's."""
    from tfkd import optimizers as base

    gradients = [tf.random.normal(v.shape)
                 for v in student.trainable_variables]

    @tf.function
    def guard(x, gradients):
        finite = tf.logical_and(
            tf.reduce_all(base._finite_examples(x)),
            base._all_finite(gradients))
        tf.debugging.Assert(finite, ["guard"])
        return finite

    return lambda: guard(x, gradients)


#: Suffix of a method timed without the finite guard.
UNCHECKED = "-unchecked"

# Steps whose trace must not change after set-up: name -> (fn, count).
TRACED = {}


def loss_only_steps(distillers):
    """`{name: callable}` timing each distiller's loss terms and their
    gradient with respect to the student's logits and tapped features (and
    the terms' own parts), on fixed outputs of both networks: the cost a
    method adds."""
    x, y = _common.batch(ARGS.batch)
    steps = {}
    for name, distiller in distillers.items():
        teacher_out, student_out = distiller.forward(x, training=True)
        keys = list(student_out)
        owned = [v for v in distiller.step_variables()
                 if not any(v is w for w in distiller.student.weights)]

        @tf.function
        def loss_step(values, distiller=distiller, teacher_out=teacher_out,
                      keys=keys, owned=owned):
            with tf.GradientTape() as tape:
                tape.watch(values)
                student = dict(zip(keys, values))
                total = distiller.compute_losses(
                    x, y, training=True, outputs=(teacher_out, student))[0]
            return tape.gradient(total, list(values) + owned)

        values = [student_out[k] for k in keys]
        steps[f"{name} loss"] = (
            lambda f, v: lambda: f(v))(loss_step, values)
    return steps


def profile(teacher, student):
    """Sub-step times of each method: its loss (+ gradient) alone, the
    fused extractors against the plain forward passes."""
    import tfkd

    x, _ = _common.batch(ARGS.batch)
    taps = {"teacher_layer_name": TAP, "student_layer_name": TAP}
    distillers = {
        "correlation": tfkd.CorrelationDistiller(
            teacher, student, stage=None, mode="both", alpha=0.3, **taps),
        "correlation-channel": tfkd.CorrelationDistiller(
            teacher, student, stage=None, mode="channel", alpha=0.3, **taps),
        "correlation-spatial": tfkd.CorrelationDistiller(
            teacher, student, stage=None, mode="spatial", alpha=0.3, **taps),
        "fitnet": tfkd.FitNetDistiller(teacher, student, stage=None, alpha=0.5,
                                       **taps),
        "lp": tfkd.LocalityPreservingDistiller(teacher, student, **taps),
        "kd": tfkd.Distiller(teacher, student, alpha=0.5),
    }
    steps = loss_only_steps(distillers)
    tapped = distillers["fitnet"]
    steps["teacher plain"] = (
        lambda f: lambda: f(x))(tf.function(
            lambda x: teacher(x, training=False)))
    steps["teacher taps"] = (
        lambda f: lambda: f(x))(tf.function(tapped.teacher_forward))
    steps["student fwd plain"] = (
        lambda f: lambda: f(x))(tf.function(
            lambda x: student(x, training=True)))
    steps["student fwd taps"] = (
        lambda f: lambda: f(x))(tf.function(
            lambda x: tapped.student_forward(x, training=True)))
    times = _common.interleaved(steps, ARGS.rounds, warmup=ARGS.warmup)
    print(f"\nSub-steps, VGG pair, batch {ARGS.batch}, {ARGS.rounds} rounds")
    print(_common.table(
        ["sub-step", "median ms"],
        [[n, f"{_common.median_ms(times, n):.0f}"] for n in steps]))


def main():
    print(_common.environment(), flush=True)
    teacher, student = _common.vgg_pair()
    if ARGS.profile:
        profile(teacher, student)
        return
    steps = build_steps(teacher, student, ARGS.methods)
    times = _common.interleaved(steps, ARGS.rounds, warmup=ARGS.warmup)
    for name, (fn, count) in TRACED.items():
        if fn.experimental_get_tracing_count() != count:
            raise RuntimeError(f"{name} was retraced during timing, so it "
                               "no longer measures what it was set up to.")
    rows = [[name, f"{_common.median_ms(times, name):.0f}", "", ""]
            for name in ("teacher", "student", "guard alone")
            if name in times]
    targets = {"kd": 1.10, "correlation": 1.10}
    for name in ARGS.methods:
        ratio = _common.paired_ratio(times, name, ["teacher", "student"])
        target = targets.get(name.removesuffix(UNCHECKED), 1.25)
        rows.append([name, f"{_common.median_ms(times, name):.0f}",
                     _common.fmt_ratio(ratio),
                     f"≤ {target:.2f} {'met' if ratio[0] <= target else 'MISSED'}"])
    print(f"\nVGG pair, batch {ARGS.batch}, {ARGS.rounds} rounds "
          f"(median, 25th–75th percentile of per-round ratios)")
    print(_common.table(
        ["step", "median ms", "step / (teacher + student)", "target"], rows))
    guarded = [n for n in ARGS.methods if n + UNCHECKED in ARGS.methods]
    if guarded:
        print("\nFinite guard, guarded / unguarded step: " + ", ".join(
            f"{n} " + _common.fmt_ratio(
                _common.paired_ratio(times, n, n + UNCHECKED))
            for n in guarded))
    if "kd" in ARGS.methods:
        against_kd = [
            f"{name} / kd "
            + _common.fmt_ratio(_common.paired_ratio(times, name, "kd"))
            for name in ARGS.methods if name != "kd"]
        print("\nPaired against the KD step: " + ", ".join(against_kd))
    print(_common.environment())


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--profile", action="store_true",
                        help="time sub-steps (losses alone, extractors)")
    parser.add_argument("--methods", nargs="+",
                        default=["kd", "correlation", "fitnet", "attention",
                                 "lp"])
    parser.add_argument("--lr", type=float, default=0.0,
                        help="SGD learning rate (default 0: the same work "
                             "per step, and the shared student cannot "
                             "diverge and trip the finite guard)")
    parser.add_argument("--check-finite", action="store_true",
                        help="time kd and fitnet with and without the "
                             "finite guard (overrides --methods)")
    args = parser.parse_args()
    if args.check_finite:
        args.methods = ["kd", "kd" + UNCHECKED, "fitnet",
                        "fitnet" + UNCHECKED]
    return args


if __name__ == "__main__":
    ARGS = parse_args()
    main()
