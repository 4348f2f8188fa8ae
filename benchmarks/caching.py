"""Benchmark: a KD epoch on cached teacher outputs vs a student-only epoch.

Same VGG pair, `--examples` random 32×32×3 images in batches of
`--batch`, one process, interleaved (see `benchmarks/_common.py`). Each
round fits one epoch (`fit(..., epochs=1)`) of:

- `student only`: the student compiled alone (cross entropy, SGD with
  momentum) on `(images, labels)` shuffled and batched;
- `kd cached`: `tfkd.Distiller` on `tfkd.data.cache_teacher_outputs(...)`
  (the teacher's logits computed once, before the rounds; each epoch
  reshuffles the cached examples), so each step runs only the student;
- `kd live`: `tfkd.Distiller` on the plain data, running the teacher every
  step (for reference).

Target: `kd cached / student only` ≤ 1.10.

    python benchmarks/caching.py --examples 1024 --batch 128 --rounds 6
"""

import argparse
import time

import keras
import numpy as np
import tensorflow as tf

import _common


def optimizer():
    return keras.optimizers.SGD(0.01, momentum=0.9)


def main():
    import tfkd

    print(_common.environment(), flush=True)
    rng = np.random.default_rng(0)
    x = rng.random((ARGS.examples,) + _common.IMAGE_SHAPE, dtype=np.float32)
    y = rng.integers(0, _common.NUM_CLASSES, ARGS.examples).astype("int32")
    plain = (tf.data.Dataset.from_tensor_slices((x, y))
             .shuffle(ARGS.examples, seed=0, reshuffle_each_iteration=True)
             .batch(ARGS.batch).prefetch(tf.data.AUTOTUNE))

    teacher, _ = _common.vgg_pair()
    student_alone = tfkd.models.vgg_student()
    student_alone.compile(
        optimizer=optimizer(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    cached_kd = tfkd.Distiller(teacher, tfkd.models.vgg_student(), alpha=0.5)
    cached_kd.compile(optimizer=optimizer())
    live_kd = tfkd.Distiller(teacher, tfkd.models.vgg_student(), alpha=0.5)
    live_kd.compile(optimizer=optimizer())

    start = time.perf_counter()
    unbatched = tf.data.Dataset.from_tensor_slices((x, y)).batch(ARGS.batch)
    cached = tfkd.data.cache_teacher_outputs(cached_kd, unbatched,
                                             shuffle=True, seed=0)
    print(f"cache built in {time.perf_counter() - start:.1f} s (one "
          f"teacher pass over {ARGS.examples} examples)", flush=True)

    def epoch(model, data):
        return lambda: model.fit(data, epochs=1, verbose=0,
                                 shuffle=False).history["loss"]

    steps = {
        "student only": epoch(student_alone, plain),
        "kd cached": epoch(cached_kd, cached),
        "kd live": epoch(live_kd, plain),
    }
    times = _common.interleaved(steps, ARGS.rounds, warmup=ARGS.warmup)
    rows = [["student only", f"{_common.median_ms(times, 'student only'):.0f}",
             "1.00", ""]]
    for name in ("kd cached", "kd live"):
        ratio = _common.paired_ratio(times, name, "student only")
        target = ("≤ 1.10 " + ("met" if ratio[0] <= 1.10 else "MISSED")
                  if name == "kd cached" else "")
        rows.append([name, f"{_common.median_ms(times, name):.0f}",
                     _common.fmt_ratio(ratio), target])
    print(f"\nVGG pair, {ARGS.examples} examples, batch {ARGS.batch}, "
          f"{ARGS.rounds} rounds of one epoch each (median, 25th–75th "
          f"percentile of per-round ratios)")
    print(_common.table(["epoch", "median ms", "epoch / student only",
                         "target"], rows))
    print(_common.environment())


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=1)
    return parser.parse_args()


if __name__ == "__main__":
    ARGS = parse_args()
    main()
