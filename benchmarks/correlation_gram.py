"""Profile: the channel correlation loss, direct vs through the M×M kernel.

`correlation_loss(mode="channel")` forms, per example, the `N × N` channel
Gram `C = FᵀF` of a feature map `F ∈ R^{M×N}` (`M = H·W` positions, `N`
channels), standardises it and takes the Euclidean distance. On the VGG
pair's guided layer (`block4_relu1`, 4×4×512: `M = 16`, `N = 512`) that is
a 512×512 matrix per example — 128 MiB per Gram at batch 128 — and its
loss plus gradient costs about as much as the teacher's forward pass
(see `step_overhead.py --profile`).

Every quantity the standardised distance needs has an `M × M` form when
`M < N`:

- `Σ_ij C_ij = ‖F·1‖²` (row sums of `F`), so `mean(C) = ‖F·1‖² / N²`;
- `‖C‖²_F = ‖F Fᵀ‖²_F` (`F Fᵀ` is `M × M`);
- `⟨C_S, C_T⟩ = ‖F_S F_Tᵀ‖²_F` (also `M × M`);
- `‖norm(C_S) − norm(C_T)‖² = N²·var_S/d_S² + N²·var_T/d_T²
  − 2 (⟨C_S, C_T⟩ − N²·mean_S·mean_T) / (d_S d_T)`, with
  `d = sqrt(var + ε²·mean(C²) + 1e-30)` exactly as `standardize` guards.

This script checks that formula against `tfkd.losses.correlation_loss` on
the VGG features (value and gradient) and times both, interleaved. It is
the measured basis of the plan in `docs/benchmarks.md`; tfkd's loss itself
is unchanged.

    python benchmarks/correlation_gram.py --batch 128 --rounds 8
"""

import argparse

import numpy as np
import tensorflow as tf

import _common

TAP = "block4_relu1"


def channel_loss_via_kernel(teacher_features, student_features,
                            epsilon=1e-6):
    """`correlation_loss(t, s, mode="channel")` through `M × M` matrices."""
    t = tf.cast(teacher_features, tf.float32)
    s = tf.cast(student_features, tf.float32)
    n = t.shape[-1]
    ft = tf.reshape(t, (tf.shape(t)[0], -1, n))
    fs = tf.reshape(s, (tf.shape(s)[0], -1, n))
    n2 = float(n) ** 2

    def moments(f):
        gram_sq = tf.reduce_sum(tf.square(tf.matmul(f, f, transpose_b=True)),
                                axis=[1, 2])  # ‖C‖²_F
        mean = tf.reduce_sum(tf.square(tf.reduce_sum(f, axis=2)), 1) / n2
        var = gram_sq / n2 - tf.square(mean)
        denom = tf.sqrt(var + epsilon**2 * gram_sq / n2 + 1e-30)
        return mean, var, denom

    mean_t, var_t, d_t = moments(ft)
    mean_s, var_s, d_s = moments(fs)
    cross = tf.reduce_sum(
        tf.square(tf.matmul(fs, ft, transpose_b=True)), axis=[1, 2])
    covariance = cross - n2 * mean_s * mean_t
    squared = (n2 * var_s / tf.square(d_s) + n2 * var_t / tf.square(d_t)
               - 2.0 * covariance / (d_s * d_t))
    return tf.sqrt(tf.maximum(squared, 0.0) + 1e-12)


def main():
    import tfkd

    print(_common.environment(), flush=True)
    teacher, student = _common.vgg_pair()
    x, _ = _common.batch(ARGS.batch)
    distiller = tfkd.FitNetDistiller(teacher, student, teacher_layer=TAP,
                                     student_layer=TAP)
    _, (t,) = distiller.teacher_forward(x)
    _, (s,) = distiller.student_forward(x, training=True)

    def direct(t, s):
        return tfkd.losses.correlation_loss(t, s, mode="channel")

    def with_gradient(loss):
        @tf.function
        def run(s):
            with tf.GradientTape() as tape:
                tape.watch(s)
                value = tf.reduce_mean(loss(t, s))
            return value, tape.gradient(value, s)
        return run

    run_direct = with_gradient(direct)
    run_kernel = with_gradient(channel_loss_via_kernel)
    ref, got = direct(t, s).numpy(), channel_loss_via_kernel(t, s).numpy()
    (_, g_ref), (_, g_got) = run_direct(s), run_kernel(s)
    value_err = float(np.max(np.abs(got - ref) / np.abs(ref)))
    grad_err = float(np.max(np.abs(g_got - g_ref)) / np.max(np.abs(g_ref)))
    times = _common.interleaved({"direct": lambda: run_direct(s),
                                 "kernel": lambda: run_kernel(s)},
                                ARGS.rounds, warmup=ARGS.warmup, log=False)
    print(f"\nChannel correlation loss + gradient, VGG {TAP} "
          f"(M = 16, N = 512), batch {ARGS.batch}, {ARGS.rounds} rounds")
    print(_common.table(
        ["form", "median ms", "max rel. error (value)",
         "max rel. error (gradient)"],
        [["direct (N×N Grams)", f"{_common.median_ms(times, 'direct'):.1f}",
          "reference", "reference"],
         ["M×M kernel", f"{_common.median_ms(times, 'kernel'):.1f}",
          f"{value_err:.1e}", f"{grad_err:.1e}"]]))
    print("speed-up (paired median): "
          f"{1 / _common.paired_ratio(times, 'kernel', 'direct')[0]:.0f}×")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    return parser.parse_args()


if __name__ == "__main__":
    ARGS = parse_args()
    main()
