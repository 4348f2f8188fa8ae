"""Benchmark: training cost of LP vs FitNets vs KD (LP paper, Table I).

The LP paper claims (Proposition 1, Table I) that its loss is cheaper than
FitNets' because it needs no regressor between the teacher's hint layer and
the student's guided layer: no extra parameters, and O(m²(d_S + d_T))
instead of O(m·d_S·d_T) work per step. This script measures, in one
process, on LP Student 4 <- the LP maxout teacher, tapping `pool2` on both
(8×8×80 vs 6×6×192, the paper's d_S = 5120, d_T = 6912), batch 128 of
random 32×32×3 images:

- `kd`: `tfkd.Distiller` (Hinton KD, no taps);
- `fitnet`: `tfkd.FitNetDistiller`, single stage (`L_hint + beta·L_Class`,
  `L_Class = 0.5·CE + 0.5·KD`) through FitNets' 3×3 conv regressor (80 ->
  192 channels, 'valid': 8×8 -> 6×6);
- `fitnet-fc`: the same with the fully-connected regressor (5120 -> 6912)
  the LP paper's Table I counts as FitNet's "additional params" (~35M);
  off with `--no-fc`;
- `lp`: `tfkd.LocalityPreservingDistiller` with the paper's settings.

Step time: one `train_on_batch` each, after `--warmup` steps, then the
median of `--steps` steps. The methods are interleaved (the order rotates
every round), so load from other processes hits them all alike. It also
times the knowledge term alone (loss plus its gradient with respect to the
student's features and the regressor), which is what Proposition 1 is
about. Not a test.

    python benchmarks/lp_cost.py --steps 10 --warmup 2
"""

import argparse
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfkd  # noqa: E402
from tfkd.losses import hint_loss  # noqa: E402
from tfkd.losses import locality_preserving_loss  # noqa: E402

TAP = "pool2"


class FCRegressor(keras.layers.Layer):
    """Stand-in for the LP paper's FitNet regressor: a fully-connected layer
    from the flattened guided map to the flattened hint map."""

    def __init__(self, target_shape, **kwargs):
        super().__init__(**kwargs)
        self.target_shape = tuple(target_shape)

    def build(self, input_shape):
        self.dense = keras.layers.Dense(int(np.prod(self.target_shape)),
                                        dtype=self.dtype_policy)
        self.dense.build((None, int(np.prod(input_shape[1:]))))

    def call(self, inputs):
        x = keras.ops.reshape(inputs, (keras.ops.shape(inputs)[0], -1))
        return keras.ops.reshape(self.dense(x), (-1,) + self.target_shape)

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + self.target_shape


class FCHintDistillation(tfkd.losses.HintDistillation):
    """The FitNets hint term with the fully-connected regressor above."""

    def make_adapter(self, index, t, s, dtype):
        return FCRegressor(t[1:], dtype=dtype, name=f"fc_regressor_{index}")


def build(method, teacher, initial_weights):
    student = tfkd.models.lp_student(4)
    student.set_weights(initial_weights)
    if method == "kd":
        return tfkd.Distiller(teacher, student, alpha=0.5, temperature=4.0)
    if method == "fitnet":
        return tfkd.FitNetDistiller(teacher, student, stage=None,
                                    teacher_layer_name=TAP,
                                    student_layer_name=TAP, alpha=0.5)
    if method == "fitnet-fc":
        return tfkd.FeatureDistiller(
            teacher, student, knowledge=FCHintDistillation(TAP, TAP),
            alpha=0.5)
    if method == "lp":
        return tfkd.LocalityPreservingDistiller(
            teacher, student, teacher_layer_name=TAP, student_layer_name=TAP)
    raise ValueError(method)


def extra_params(distiller):
    """Trainable parameters updated besides the student's own."""
    total = sum(int(np.prod(v.shape))
                for v in distiller.step_variables())
    own = sum(int(np.prod(v.shape))
              for v in distiller.student.trainable_weights)
    return total - own


def knowledge_term_fns(distillers, f_t, f_s):
    """`tf.function`s computing each method's knowledge term + gradient."""
    fns = {}

    def regressor_fn(regressor):
        @tf.function
        def fn():
            with tf.GradientTape() as tape:
                tape.watch(f_s)
                loss = tf.reduce_mean(hint_loss(f_t, regressor(f_s)))
            return tape.gradient(loss, [f_s] + regressor.trainable_weights)
        return fn

    for name, distiller in distillers.items():
        if name.startswith("fitnet"):
            fns[name] = regressor_fn(distiller.knowledge.regressors[0])

    @tf.function
    def lp_fn():
        with tf.GradientTape() as tape:
            tape.watch(f_s)
            loss = locality_preserving_loss(f_t, f_s, k=5)
        return tape.gradient(loss, [f_s])

    if "lp" in distillers:
        fns["lp"] = lp_fn
    return fns


def interleaved_medians(fns, steps, warmup):
    """Median seconds per call of each function, calls interleaved."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times = {name: [] for name in names}
    for i in range(steps):
        order = names[i % len(names):] + names[:i % len(names)]
        for name in order:
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return {n: statistics.median(t) for n, t in times.items()}, times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--term-steps", type=int, default=30,
                        help="repetitions of the knowledge-term timing")
    parser.add_argument("--no-fc", action="store_true",
                        help="skip the fully-connected-regressor FitNet")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((args.batch_size, 32, 32, 3)),
                    tf.float32)
    y = tf.constant(rng.integers(0, 10, args.batch_size), tf.int32)

    teacher = tfkd.models.lp_teacher()
    initial = tfkd.models.lp_student(4).get_weights()
    methods = ["kd", "fitnet"] + ([] if args.no_fc else ["fitnet-fc"]) + [
        "lp"]
    distillers = {}
    for method in methods:
        distiller = build(method, teacher, initial)
        distiller.compile(
            optimizer=keras.optimizers.SGD(0.001, momentum=0.9))
        distillers[method] = distiller

    def step_fn(distiller):
        return lambda: distiller.train_on_batch(x, y)

    print(f"tfkd LP cost benchmark: LP Student 4 <- LP teacher, taps "
          f"{TAP!r}, batch {args.batch_size}, 32x32x3 random data; "
          f"{args.warmup} warm-up + {args.steps} interleaved steps each",
          flush=True)
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, "
          f"{platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs visible, load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    t0 = time.time()
    step, raw = interleaved_medians(
        {m: step_fn(d) for m, d in distillers.items()}, args.steps,
        args.warmup)
    print(f"(train steps took {time.time() - t0:.0f} s)", flush=True)

    t_view = keras.Model(teacher.input, teacher.get_layer(TAP).output)
    s_view = keras.Model(distillers["lp"].student.input,
                         distillers["lp"].student.get_layer(TAP).output)
    f_t = tf.constant(t_view(x, training=False))
    f_s = tf.constant(s_view(x, training=False))
    terms, _ = interleaved_medians(
        knowledge_term_fns(distillers, f_t, f_s), args.term_steps,
        args.warmup)

    student_params = distillers["kd"].student.count_params()
    print(f"\nd_T = {int(np.prod(f_t.shape[1:]))}, d_S = "
          f"{int(np.prod(f_s.shape[1:]))}; student {student_params:,} "
          f"params, teacher {teacher.count_params():,} params\n")
    print("| method | step time, median (s) | min–max (s) | extra "
          "trainable params | knowledge term + grad, median (ms) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for m in methods:
        term = f"{terms[m] * 1e3:.1f}" if m in terms else "—"
        print(f"| {m} | {step[m]:.3f} | {min(raw[m]):.3f}–"
              f"{max(raw[m]):.3f} | {extra_params(distillers[m]):,} | "
              f"{term} |")
    print("\nStep-time ratios: of the medians, and the median (quartiles) "
          "of the per-round ratios (the two steps of a ratio run in the "
          "same round, seconds apart, so slow load drifts cancel):")
    ratios = [("LP/KD", "lp", "kd"), ("FitNet/KD", "fitnet", "kd"),
              ("LP/FitNet", "lp", "fitnet")]
    if "fitnet-fc" in step:
        ratios += [("FitNet-FC/KD", "fitnet-fc", "kd"),
                   ("LP/FitNet-FC", "lp", "fitnet-fc")]
    for label, a, b in ratios:
        paired = [ta / tb for ta, tb in zip(raw[a], raw[b])]
        q1, q2, q3 = (statistics.quantiles(paired, n=4)
                      if len(paired) > 1 else (paired[0],) * 3)
        print(f"  {label:<13} {step[a] / step[b]:.3f}   paired "
              f"{q2:.3f} ({q1:.3f}–{q3:.3f})")
    print("Ratios of knowledge-term times:")
    for label, a, b in [("LP/FitNet", "lp", "fitnet"),
                        ("LP/FitNet-FC", "lp", "fitnet-fc")]:
        if a in terms and b in terms:
            print(f"  {label:<13} {terms[a] / terms[b]:.3f}")
    return step, terms


if __name__ == "__main__":
    main()
    sys.exit(0)
