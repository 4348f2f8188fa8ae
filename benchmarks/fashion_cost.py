"""Benchmark: an epoch of each method vs the student alone on Fashion-MNIST.

The recipes' Fashion-MNIST setting (`tfkd.app.experiment.DATA_SETTINGS`: 14×14
images, a stratified pool of `--examples` training images, batch 128) and
pair (`tfkd.models.digits_teacher` → `digits_student`, 1,490 parameters).
`--pair resnet` times the CIFAR zoo's pair instead, ResNet-56 → ResNet-20
(270K parameters) on the images at 32×32×3 (`load_fashion_mnist(
image_size=32, channels=3)`), tapping `pool` for the embedding methods
and the last block (`stage3_block9_out` / `stage3_block3_out`) for the
others: a student of a size people ship, whose step is not dwarfed by a
method's own term. One process; for each
method the rounds interleave (see `benchmarks/_common.py`) one epoch
(`fit(..., epochs=1)`) of:

- `student alone`: the student compiled alone (cross entropy) on the
  `tfkd.data.load_fashion_mnist` training pipeline;
- `<method> live`: the method's registry default (`registry.build`) on the
  same pipeline, running the teacher every step;
- `<method> cached`: the same distiller on
  `tfkd.data.cache_teacher_outputs(...)` (the teacher's logits and tapped
  features computed once before the rounds; every epoch reshuffles the
  cached examples).

Each ratio is the median over rounds of the per-round ratio to the student
alone's epoch of that round. Target: cached ≤ 1.10× the student alone.
Two-stage methods time the stage they are built in (their first); KTAN
and DLN time their phase 2 (`pretrain_steps=0`: the discriminator steps
from the first step on); the weights being untrained does not change the
cost.

Then the input pipeline: milliseconds per step of the student alone and of
KD (live) on the pipeline vs on one batch already in memory (no decoding,
scaling or shuffling).

    python benchmarks/fashion_cost.py --rounds 5 --threads 1
    python benchmarks/fashion_cost.py --pair resnet --examples 1280 \
        --rounds 5 --threads 1
"""

import argparse
import time

import keras
import tensorflow as tf

import _common


def main():
    import tfkd
    from tfkd.distillers import registry
    from tfkd.app.experiment import compile_classifier
    from tfkd.app.experiment import load_data

    if ARGS.threads:
        # One op thread: each epoch's time is its work on one core, not
        # whether the shared machine's second core was free for it (with
        # two threads, epochs here took either 1× or 2× their time).
        tf.config.threading.set_intra_op_parallelism_threads(ARGS.threads)
        tf.config.threading.set_inter_op_parallelism_threads(ARGS.threads)
    print(_common.environment(), flush=True)
    image = {"image_size": 32, "channels": 3} if ARGS.pair == "resnet" \
        else {}
    data = load_data("fashion_mnist", batch_size=ARGS.batch, seed=0,
                     train_examples=ARGS.examples, **image)
    steps = int(sum(1 for _ in data.train))
    keras.utils.set_random_seed(0)
    if ARGS.pair == "resnet":
        teacher = tfkd.models.resnet56(input_shape=data.input_shape,
                                       num_classes=data.num_classes)

        def student():
            return tfkd.models.resnet20(input_shape=data.input_shape,
                                        num_classes=data.num_classes)

        def taps(method):
            if registry.get(method).method.embedding:
                return ("pool", "pool")
            return ("stage3_block9_out", "stage3_block3_out")
    else:
        teacher = tfkd.models.digits_teacher(data.num_classes,
                                             data.input_shape)

        def student():
            return tfkd.models.digits_student(data.num_classes,
                                              data.input_shape)

        taps = registry.digits_taps
    teacher.trainable = False

    alone = compile_classifier(student(), keras.optimizers.Adam(1e-3))

    def epoch(model, ds):
        return lambda: model.fit(ds, epochs=1, verbose=0).history["loss"]

    methods = ARGS.methods or registry.method_names()
    rows = []
    for method in methods:
        defaults = registry.get(method).defaults()
        # A two-stage method's one-epoch `fit` times its first stage.
        stage = {"stage": 1} if defaults.get("stage") == "both" else {}
        if "pretrain_steps" in defaults:
            # KTAN and DLN: their phase 2, whose discriminator step is
            # the costly part (at the default 100 phase-1 steps the
            # rounds would time phase 1 only).
            stage = {"pretrain_steps": 0}
        distiller = registry.build(method, teacher, student(),
                                   feature_layers=taps(method), **stage)
        distiller.compile(optimizer=keras.optimizers.Adam(1e-3))
        cached_distiller = registry.build(
            method, teacher, student(), feature_layers=taps(method),
            **stage)
        cached_distiller.compile(optimizer=keras.optimizers.Adam(1e-3))
        start = time.perf_counter()
        try:
            cached = tfkd.data.cache_teacher_outputs(
                cached_distiller, data.train, shuffle=True, seed=0)
        except (TypeError, ValueError) as e:
            print(f"{method}: no cache ({e})", flush=True)
            cached = None
        build = time.perf_counter() - start
        candidates = {"student alone": epoch(alone, data.train),
                      "live": epoch(distiller, data.train)}
        if cached is not None:
            candidates["cached"] = epoch(cached_distiller, cached)
        print(f"{method}:", flush=True)
        times = _common.interleaved(candidates, ARGS.rounds,
                                    warmup=ARGS.warmup)
        live = _common.paired_ratio(times, "live", "student alone")
        alone_ms = _common.median_ms(times, "student alone")
        row = [f"`{method}`", f"{alone_ms:.0f}",
               f"{_common.median_ms(times, 'live'):.0f}",
               _common.fmt_ratio(live)]
        if cached is None:
            row += ["n/a", "n/a", "", ""]
        else:
            ratio = _common.paired_ratio(times, "cached", "student alone")
            row += [f"{_common.median_ms(times, 'cached'):.0f}",
                    _common.fmt_ratio(ratio), f"{build:.1f}",
                    "met" if ratio[0] <= 1.10 else "MISSED"]
        rows.append(row)
        print(_common.table(HEADER, rows[-1:]), flush=True)

    print(f"\nFashion-MNIST at {data.input_shape[0]}×{data.input_shape[1]}"
          f"×{data.input_shape[2]}, {teacher.name} → {student().name}, "
          f"{ARGS.examples} training images ({steps} steps of "
          f"{ARGS.batch}), {ARGS.rounds} rounds of one epoch each (median, "
          "25th–75th percentile of per-round ratios)")
    print(_common.table(HEADER, rows))

    # The input pipeline's share: the same steps on one in-memory batch.
    x, y = next(iter(data.train))
    in_memory = tf.data.Dataset.from_tensors((x, y)).repeat(steps)
    kd = registry.build("kd", teacher, student())
    kd.compile(optimizer=keras.optimizers.Adam(1e-3))
    times = _common.interleaved({
        "student alone, pipeline": epoch(alone, data.train),
        "student alone, in memory": epoch(alone, in_memory),
        "kd live, pipeline": epoch(kd, data.train),
        "kd live, in memory": epoch(kd, in_memory),
    }, ARGS.rounds, warmup=ARGS.warmup)
    pipeline_rows = [
        [name, f"{_common.median_ms(times, name) / steps:.1f}"]
        for name in times]
    print(f"\nms per step ({steps} steps an epoch, median of "
          f"{ARGS.rounds} rounds)")
    print(_common.table(["epoch", "ms / step"], pipeline_rows))
    print(_common.environment())


HEADER = ["method", "student alone ms", "live ms", "live / alone",
          "cached ms", "cached / alone", "cache build s", "≤ 1.10"]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pair", choices=["digits", "resnet"],
                        default="digits",
                        help="teacher → student (default: the recipes' "
                             "digits pair; resnet: ResNet-56 → ResNet-20 "
                             "at 32×32×3)")
    parser.add_argument("--threads", type=int, default=0,
                        help="TensorFlow op threads (default 0: "
                             "TensorFlow's choice, every core)")
    parser.add_argument("--examples", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--methods", nargs="+", default=None)
    return parser.parse_args()


if __name__ == "__main__":
    ARGS = parse_args()
    main()
