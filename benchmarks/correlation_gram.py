"""Profile: the correlation loss, direct Gram form vs tfkd's kernel form.

`tfkd.losses.correlation_loss` computes each standardised Gram distance in
the cheaper of two exact forms (see `tfkd/methods/correlation.py`): the
direct form builds both Grams (`N × N` channel, `M × M` spatial, `M = H·W`);
the kernel form needs only products of the other side's size (`M × M` for
the channel loss, `N_T × N_S` for the spatial loss). The direct form, kept
as `tfkd.methods.correlation._direct_distance`, is what `correlation_loss`
computed before.

Two parts, each timed in one process, interleaved (`_common.interleaved`),
loss plus its gradient with respect to the student's features, each
candidate in its own `tf.function`:

- `vgg`: the channel loss on the VGG pair's guided layer (`block4_relu1`,
  4×4×512: `M = 16`, `N = 512`), real teacher and student features of a
  random batch; direct form vs `correlation_loss(mode="channel")`;
- `spatial`: the spatial loss on random ReLU maps with 64 channels at 8×8
  and 32×32 positions (and 16×16), direct form vs `correlation_loss(
  mode="spatial")`: how the cost grows with the number of positions.

Each part first checks the two forms agree (maximum relative error of the
values and of the gradient, relative to the gradient's largest entry).

    python benchmarks/correlation_gram.py --part vgg --batch 128 --rounds 8
    python benchmarks/correlation_gram.py --part spatial --batch 32 \\
        --rounds 8
"""

import argparse

import numpy as np
import tensorflow as tf

import _common

TAP = "block4_relu1"


def with_gradient(loss, teacher_features):
    """`s -> (mean loss, d loss / d s)` in one `tf.function`."""
    @tf.function
    def run(s):
        with tf.GradientTape() as tape:
            tape.watch(s)
            value = tf.reduce_mean(loss(teacher_features, s))
        return value, tape.gradient(value, s)
    return run


def errors(direct, kernel, t, s):
    """Max relative error of the values and of the gradient (relative to
    its largest entry) of `kernel` against `direct`."""
    ref, got = direct(t, s).numpy(), kernel(t, s).numpy()
    (_, g_ref), (_, g_got) = (with_gradient(direct, t)(s),
                              with_gradient(kernel, t)(s))
    value_err = float(np.max(np.abs(got - ref) / np.abs(ref)))
    grad_err = float(np.max(np.abs(g_got - g_ref)) / np.max(np.abs(g_ref)))
    return value_err, grad_err


def losses(mode):
    from tfkd.methods import correlation

    def direct(t, s):
        return correlation._direct_distance(
            t, s, mode, correlation.DEFAULT_MAX_SPATIAL_POSITIONS)

    def tfkd_loss(t, s):
        return correlation.correlation_loss(t, s, mode=mode)

    return direct, tfkd_loss


def vgg_part():
    import tfkd

    teacher, student = _common.vgg_pair()
    x, _ = _common.batch(ARGS.batch)
    distiller = tfkd.FitNetDistiller(teacher, student, stage=None,
                                     teacher_layer_name=TAP,
                                     student_layer_name=TAP)
    _, (t,) = distiller.teacher_forward(x)
    _, (s,) = distiller.student_forward(x, training=True)
    direct, kernel = losses("channel")
    value_err, grad_err = errors(direct, kernel, t, s)
    run_direct, run_kernel = with_gradient(direct, t), with_gradient(kernel,
                                                                     t)
    times = _common.interleaved({"direct": lambda: run_direct(s),
                                 "tfkd": lambda: run_kernel(s)},
                                ARGS.rounds, warmup=ARGS.warmup, log=False)
    print(f"\nChannel correlation loss + gradient, VGG {TAP} "
          f"(M = 16, N = 512), batch {ARGS.batch}, {ARGS.rounds} rounds")
    print(_common.table(
        ["form", "median ms", "time / direct", "max rel. error (value)",
         "max rel. error (gradient)"],
        [["direct (N×N Grams, before)",
          f"{_common.median_ms(times, 'direct'):.1f}", "1", "reference",
          "reference"],
         ["correlation_loss (M×M kernel)",
          f"{_common.median_ms(times, 'tfkd'):.1f}",
          _common.fmt_ratio(_common.paired_ratio(times, "tfkd", "direct")),
          f"{value_err:.1e}", f"{grad_err:.1e}"]]))
    print("speed-up (paired median): "
          f"{1 / _common.paired_ratio(times, 'tfkd', 'direct')[0]:.0f}×")


def spatial_part():
    channels = 64
    direct, kernel = losses("spatial")
    steps, rows = {}, []
    for side in ARGS.sides:
        shape = (ARGS.batch, side, side, channels)
        rng = np.random.default_rng(side)
        # ReLU-like maps (non-negative, mean-dominated Grams).
        t = tf.constant(np.maximum(rng.standard_normal(shape), 0),
                        tf.float32)
        s = tf.constant(np.maximum(rng.standard_normal(shape), 0),
                        tf.float32)
        value_err, grad_err = errors(direct, kernel, t, s)
        rows.append((side, value_err, grad_err))
        for name, loss in (("direct", direct), ("tfkd", kernel)):
            fn = with_gradient(loss, t)
            steps[f"{name} {side}"] = (lambda f, s: lambda: f(s))(fn, s)
    times = _common.interleaved(steps, ARGS.rounds, warmup=ARGS.warmup,
                                log=False)
    small = min(ARGS.sides)
    print(f"\nSpatial correlation loss + gradient, {channels} channels, "
          f"batch {ARGS.batch}, {ARGS.rounds} rounds (ratios: median, "
          f"25th–75th percentile of per-round ratios)")
    table = []
    for side, value_err, grad_err in rows:
        table.append([
            f"{side}×{side}",
            f"{_common.median_ms(times, f'direct {side}'):.1f}",
            f"{_common.median_ms(times, f'tfkd {side}'):.1f}",
            _common.fmt_ratio(_common.paired_ratio(
                times, f"direct {side}", f"direct {small}")),
            _common.fmt_ratio(_common.paired_ratio(
                times, f"tfkd {side}", f"tfkd {small}")),
            _common.fmt_ratio(_common.paired_ratio(
                times, f"tfkd {side}", f"direct {side}")),
            f"{value_err:.1e}", f"{grad_err:.1e}"])
    print(_common.table(
        ["positions", "direct ms", "tfkd ms",
         f"direct / direct {small}×{small}", f"tfkd / tfkd {small}×{small}",
         "tfkd / direct", "max rel. error (value)",
         "max rel. error (gradient)"], table))


def main():
    print(_common.environment(), flush=True)
    if ARGS.part in ("vgg", "all"):
        vgg_part()
    if ARGS.part in ("spatial", "all"):
        spatial_part()
    print(_common.environment())


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["vgg", "spatial", "all"],
                        default="all")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--sides", type=int, nargs="+", default=[8, 16, 32],
                        help="spatial part: map sides (H = W)")
    return parser.parse_args()


if __name__ == "__main__":
    ARGS = parse_args()
    main()
