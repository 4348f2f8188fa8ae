"""Benchmark: XLA and mixed precision on vs off, for KD and FitNets.

Same VGG pair, one process, interleaved (see `benchmarks/_common.py`).
Each distiller's `train_step` runs in one `tf.function`:

- `float32`: the default;
- `float32 + XLA`: `tf.function(..., jit_compile=True)` (what
  `compile(jit_compile=True)` does);
- `mixed_bfloat16`: teacher, student and distiller built under the
  `mixed_bfloat16` policy;
- `mixed_float16`: the same under `mixed_float16` (the optimizer wrapped
  in a `LossScaleOptimizer`).

Ratios are per round against `float32` of the same method. These are CPU
numbers: on a GPU with tensor cores mixed precision and XLA usually win,
while a CPU without native float16 arithmetic emulates it and loses.

    python benchmarks/xla_mixed.py --batch 64 --rounds 6
"""

import argparse

import keras
import tensorflow as tf

import _common

TAP = "block4_relu1"
MODES = ("float32", "float32 + XLA", "mixed_bfloat16", "mixed_float16")


def build(method, policy):
    import tfkd

    keras.mixed_precision.set_dtype_policy(policy)
    try:
        teacher, student = _common.vgg_pair()
        if method == "kd":
            distiller = tfkd.Distiller(teacher, student, alpha=0.5)
        else:
            distiller = tfkd.FitNetDistiller(
                teacher, student, stage=None, teacher_layer_name=TAP,
                student_layer_name=TAP,
                alpha=0.5)
        distiller.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
        distiller.optimizer.build(distiller.trainable_variables_for_step())
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    return distiller


def main():
    print(_common.environment(), flush=True)
    x, y = _common.batch(ARGS.batch)
    steps = {}
    for method in ARGS.methods:
        float32 = build(method, "float32")
        steps[f"{method} float32"] = (lambda f: lambda: f((x, y)))(
            tf.function(float32.train_step))
        steps[f"{method} float32 + XLA"] = (lambda f: lambda: f((x, y)))(
            tf.function(float32.train_step, jit_compile=True))
        for policy in ("mixed_bfloat16", "mixed_float16"):
            distiller = build(method, policy)
            steps[f"{method} {policy}"] = (lambda f: lambda: f((x, y)))(
                tf.function(distiller.train_step))
    times = _common.interleaved(steps, ARGS.rounds, warmup=ARGS.warmup)
    rows = []
    for method in ARGS.methods:
        for mode in MODES:
            name = f"{method} {mode}"
            ratio = ("1.00" if mode == "float32" else _common.fmt_ratio(
                _common.paired_ratio(times, name, f"{method} float32")))
            rows.append([method, mode,
                         f"{_common.median_ms(times, name):.0f}", ratio])
    print(f"\nVGG pair, batch {ARGS.batch}, {ARGS.rounds} rounds, CPU "
          f"(median, 25th–75th percentile of per-round ratios)")
    print(_common.table(["method", "mode", "median ms", "time / float32"],
                        rows))
    print(_common.environment())


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--methods", nargs="+", default=["kd", "fitnet"])
    return parser.parse_args()


if __name__ == "__main__":
    ARGS = parse_args()
    main()
