"""Benchmark: training throughput and peak memory of every tfkd distiller.

Throughput (images/s): every distiller built on the same VGG pair in one
process, each `train_step` in one `tf.function` (what `fit` compiles),
timed interleaved (see `benchmarks/_common.py`); throughput is the batch
size over the median step time, and the ratio column is the per-round
ratio of the student-only step time to the distiller's (the fraction of
the student's own training speed the distiller keeps).

Peak memory: each distiller (and the student alone) runs `--memory-steps`
steps in its **own subprocess**, which reports its peak resident set size
(`VmHWM` of `/proc/self/status` on Linux, else
`resource.getrusage(RUSAGE_SELF).ru_maxrss`, which Linux carries over from
the parent through `fork` + `exec` and so cannot be used for children):
the whole process — the TensorFlow runtime, both models, activations and
the distiller's parts. (`tf.config.experimental.get_memory_info` is
GPU-only and `tracemalloc` does not see TensorFlow's C++ allocations.) The extra memory of a method
is its peak minus the student-only process's peak, which also holds the
runtime.

Methods (taps on `block4_relu1`, 4×4×512 on both networks, unless noted):
`kd`, `correlation` (both Grams), `correlation-spatial`, `fitnet`,
`attention`, `lp`, `stc` (cut after `block4_relu1` on both, the teacher's
back `block4_conv2`…`logits`), `ktan` (teacher `block4_relu3`, student
`block4_relu1`; adversarial phase, `pretrain_steps=0`).

    python benchmarks/throughput.py --batch 64 --rounds 5
    python benchmarks/throughput.py --batch 64 --no-memory   # speed only
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import keras
import tensorflow as tf

import _common

TAP = "block4_relu1"
METHODS = ("kd", "correlation", "correlation-spatial", "fitnet",
           "attention", "lp", "stc", "ktan")


def optimizer():
    return keras.optimizers.SGD(0.01, momentum=0.9)


def build(method, teacher, student):
    import tfkd

    taps = {"teacher_layer": TAP, "student_layer": TAP}
    if method == "kd":
        distiller = tfkd.Distiller(teacher, student, alpha=0.5)
    elif method == "correlation":
        distiller = tfkd.CorrelationDistiller(teacher, student, stage=None,
                                              mode="both",
                                              alpha=0.3, **taps)
    elif method == "correlation-spatial":
        distiller = tfkd.CorrelationDistiller(
            teacher, student, stage=None, mode="spatial", alpha=0.3, **taps)
    elif method == "fitnet":
        distiller = tfkd.FitNetDistiller(teacher, student, stage=None,
                                         alpha=0.5, **taps)
    elif method == "attention":
        distiller = tfkd.AttentionDistiller(teacher, student, **taps)
    elif method == "lp":
        distiller = tfkd.LocalityPreservingDistiller(teacher, student,
                                                     **taps)
    elif method == "stc":
        distiller = tfkd.CollaborationDistiller(teacher, student, alpha=0.3,
                                                **taps)
    elif method == "ktan":
        distiller = tfkd.AdversarialDistiller(
            teacher, student, teacher_layer_name="block4_relu3",
            student_layer_name=TAP, pretrain_steps=0)
        distiller.compile(optimizer=optimizer(),
                          discriminator_optimizer=optimizer())
        return distiller
    else:
        raise ValueError(f"Unknown method {method!r}; one of {METHODS}.")
    distiller.compile(optimizer=optimizer())
    distiller.optimizer.build(distiller.trainable_variables_for_step())
    return distiller


def student_step_fn(student):
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    opt = optimizer()
    opt.build(student.trainable_variables)

    @tf.function
    def step(data):
        x, y = data
        with tf.GradientTape() as tape:
            loss = ce(y, student(x, training=True))
        grads = tape.gradient(loss, student.trainable_variables)
        opt.apply_gradients(zip(grads, student.trainable_variables))
        return loss

    return step


def memory_child(method, batch, steps):
    """Runs in a subprocess: `steps` steps of one method, prints peak RSS."""
    import tfkd

    data = _common.batch(batch)
    if method == "student":
        step = student_step_fn(tfkd.models.vgg_student())
    else:
        teacher, student = _common.vgg_pair()
        step = tf.function(build(method, teacher, student).train_step)
    for _ in range(steps):
        _common.sync(step(data))
    print("RESULT " + json.dumps({"method": method,
                                  "peak_mib": peak_rss_kib() / 1024}))


def peak_rss_kib():
    """This process's peak resident set size in KiB.

    `VmHWM` from `/proc/self/status` on Linux: the high-water mark of this
    process's own address space. `getrusage(RUSAGE_SELF).ru_maxrss` is not
    used there because Linux carries it over `fork` + `exec`, so a child
    would report its parent's peak if that was larger.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def peak_memory(methods):
    results = {}
    for method in ("student",) + tuple(methods):
        start = time.perf_counter()
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", method,
             "--batch", str(ARGS.batch),
             "--memory-steps", str(ARGS.memory_steps)],
            capture_output=True, text=True, timeout=900,
            env=dict(os.environ, CUDA_VISIBLE_DEVICES=""))
        lines = [line for line in out.stdout.splitlines()
                 if line.startswith("RESULT ")]
        if out.returncode != 0 or not lines:
            raise RuntimeError(f"memory child {method} failed:\n"
                               f"{out.stderr[-3000:]}")
        results[method] = json.loads(lines[-1][7:])["peak_mib"]
        print(f"  memory {method}: {results[method]:.0f} MiB "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    return results


def main():
    print(_common.environment(), flush=True)
    memory = {} if ARGS.no_memory else peak_memory(ARGS.methods)
    teacher, student = _common.vgg_pair()
    data = _common.batch(ARGS.batch)
    steps = {"student only": (lambda f: lambda: f(data))(
        student_step_fn(student))}
    for method in ARGS.methods:
        step = tf.function(build(method, teacher, student).train_step)
        steps[method] = (lambda f: lambda: f(data))(step)
    times = _common.interleaved(steps, ARGS.rounds, warmup=ARGS.warmup)
    rows = []
    for name in steps:
        ms = _common.median_ms(times, name)
        kept = ("1.00" if name == "student only" else _common.fmt_ratio(
            _common.paired_ratio(times, "student only", name)))
        key = "student" if name == "student only" else name
        mem = (f"{memory[key]:.0f}" if key in memory else "–")
        extra = (f"{memory[key] - memory['student']:+.0f}"
                 if key in memory and key != "student" else "")
        rows.append([name, f"{ms:.0f}", f"{ARGS.batch / ms * 1e3:.0f}",
                     kept, mem, extra])
    print(f"\nVGG pair, batch {ARGS.batch}, {ARGS.rounds} rounds; peak RSS "
          f"after {ARGS.memory_steps} steps, one subprocess per row")
    print(_common.table(
        ["method", "median ms/step", "images/s",
         "student-only time / method time", "peak RSS MiB",
         "vs student only MiB"], rows))
    print(_common.environment())


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--memory-steps", type=int, default=3)
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    ARGS = parse_args()
    if ARGS.memory_child:
        memory_child(ARGS.memory_child, ARGS.batch, ARGS.memory_steps)
    else:
        main()
