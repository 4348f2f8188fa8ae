"""Shared helpers of the tfkd benchmarks: interleaved timing, paired ratios.

On a shared, loaded machine absolute times drift by 2× within a minute, so
every benchmark here measures the things it compares **in one process,
interleaved**: each round times every candidate once (the order rotates
every round, so no candidate always runs first after a pause), and a ratio
is the median over rounds of the ratio *within* each round (paired), which
cancels load that changes slowly. The spread (25th–75th percentile of the
per-round ratios) is printed next to it.
"""

import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

NUM_CLASSES = 10
IMAGE_SHAPE = (32, 32, 3)


def environment():
    """One line describing the machine and versions, for the results."""
    import keras

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"TensorFlow {tf.__version__}, Keras {keras.__version__}, "
            f"Python {platform.python_version()}, {os.cpu_count()} CPU "
            f"cores, load average {load:.1f}")


def vgg_pair(**kwargs):
    """The correlation paper's VGG teacher (11 layers) and student (5)."""
    import tfkd

    return (tfkd.models.vgg_teacher(**kwargs),
            tfkd.models.vgg_student(**kwargs))


def batch(size, seed=0):
    """A random batch `(images, labels)` as tensors (32×32×3, 10 classes)."""
    rng = np.random.default_rng(seed)
    x = rng.random((size,) + IMAGE_SHAPE, dtype=np.float32)
    y = rng.integers(0, NUM_CLASSES, size=(size,)).astype("int32")
    return tf.constant(x), tf.constant(y)


def sync(outputs):
    """Waits for a step's outputs (reads one scalar back to the host)."""
    flat = tf.nest.flatten(outputs)
    if flat:
        np.asarray(flat[0])
    return outputs


def interleaved(candidates, rounds, warmup=2, log=True):
    """Times each callable once per round, rotating the order each round.

    Args:
        candidates: `{name: zero-argument callable}`.
        rounds: Number of timed rounds.
        warmup: Untimed calls of each candidate first (tracing, caches).
        log: Print a line per round.

    Returns:
        `{name: [seconds per round]}`.
    """
    names = list(candidates)
    for name in names:
        for _ in range(warmup):
            sync(candidates[name]())
    times = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            sync(candidates[name]())
            times[name].append(time.perf_counter() - start)
        if log:
            print(f"  round {r + 1}/{rounds}: " + ", ".join(
                f"{n} {times[n][-1] * 1e3:.0f} ms" for n in names),
                flush=True)
    return times


def paired_ratio(times, numerator, denominator):
    """Median and quartiles over rounds of `t[num] / Σ t[den]` per round.

    Args:
        times: Output of `interleaved`.
        numerator: A candidate name.
        denominator: A candidate name or a list of names (summed per round).

    Returns:
        `(median, p25, p75)` of the per-round ratios.
    """
    if isinstance(denominator, str):
        denominator = [denominator]
    ratios = [
        times[numerator][r] / sum(times[d][r] for d in denominator)
        for r in range(len(times[numerator]))
    ]
    q = np.percentile(ratios, [50, 25, 75])
    return float(q[0]), float(q[1]), float(q[2])


def median_ms(times, name):
    return 1e3 * statistics.median(times[name])


def fmt_ratio(ratio):
    median, p25, p75 = ratio
    return f"{median:.2f} ({p25:.2f}–{p75:.2f})"


def table(header, rows):
    """A Markdown table as a string."""
    lines = ["| " + " | ".join(header) + " |",
             "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
