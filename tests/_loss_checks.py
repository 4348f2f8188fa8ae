"""Shared helpers of the loss tests: run a loss eagerly or under XLA, take
its gradients, and differentiate a NumPy reference by finite differences.

Each XLA case costs a compilation (~0.5 s), which dominates a loss test's
run time: test files run every value case eagerly and a few under XLA.
"""

import numpy as np
import tensorflow as tf

RUNNERS = ["eager", "jit"]


def cases(every, jit_subset):
    """All `every` cases eagerly, and the `jit_subset` also under XLA."""
    return ([tuple(c) + ("eager",) for c in every]
            + [tuple(c) + ("jit",) for c in jit_subset])


def _compile(fn, runner):
    if runner == "jit":
        return tf.function(fn, jit_compile=True)
    if runner == "eager":
        return fn
    raise ValueError(runner)


def run(fn, *args, runner="eager", dtype=None, **kwargs):
    """`fn(*args, **kwargs)` as NumPy, eagerly or inside
    `tf.function(jit_compile=True)`. Arrays are passed as tensors (cast to
    `dtype` if given; integer arrays keep their dtype)."""
    tensors = [_tensor(a, dtype) for a in args]
    out = _compile(lambda *a: fn(*a, **kwargs), runner)(*tensors)
    return tf.nest.map_structure(lambda x: x.numpy(), out)


def _tensor(a, dtype):
    a = np.asarray(a)
    if dtype is not None and a.dtype.kind == "f":
        return tf.constant(a, dtype)
    return tf.constant(a)


def value_and_grads(fn, *args, wrt=(0, 1), runner="eager", dtype=None,
                    **kwargs):
    """The loss value and the gradients of its sum w.r.t. `args[i]` for `i`
    in `wrt` (zeros where there is no gradient), as NumPy."""
    tensors = [_tensor(a, dtype) for a in args]

    def f(*tensors):
        with tf.GradientTape() as tape:
            for i in wrt:
                tape.watch(tensors[i])
            value = fn(*tensors, **kwargs)
            total = tf.reduce_sum(value)
        grads = tape.gradient(total, [tensors[i] for i in wrt])
        grads = [tf.zeros_like(tensors[i]) if g is None else g
                 for i, g in zip(wrt, grads)]
        return value, grads

    value, grads = _compile(f, runner)(*tensors)
    return value.numpy(), [g.numpy() for g in grads]


def numeric_grad(f, x, eps=1e-5):
    """Central finite-difference gradient of `sum(f(x))` w.r.t. the float64
    array `x` (f is a NumPy function, e.g. a test's reference)."""
    x = np.array(x, np.float64)
    g = np.zeros_like(x)
    for i in np.ndindex(*x.shape):
        old = x[i]
        x[i] = old + eps
        up = np.sum(f(x))
        x[i] = old - eps
        down = np.sum(f(x))
        x[i] = old
        g[i] = (up - down) / (2 * eps)
    return g


def assert_finite(*arrays):
    for a in arrays:
        a = np.asarray(a, np.float64)
        assert np.all(np.isfinite(a)), f"not finite: {a}"


def check_live_hyperparameters(fn, args, before, after, rtol=1e-5):
    """Hyperparameters passed as live tensors (the current values of
    variables, as distillers pass them inside their traced step) give the
    results of the same Python numbers, under XLA, and a new assignment
    takes effect without a new trace."""
    variables = {k: tf.Variable(float(v)) for k, v in before.items()}
    traces = []

    @tf.function(jit_compile=True)
    def f(*tensors):
        traces.append(1)
        live = {k: tf.identity(v) for k, v in variables.items()}
        return fn(*tensors, **live)

    tensors = [tf.constant(a) for a in args]
    for values in (before, after):
        for k, v in values.items():
            variables[k].assign(float(v))
        np.testing.assert_allclose(f(*tensors).numpy(),
                                   fn(*args, **values).numpy(), rtol=rtol,
                                   atol=1e-6)
    assert len(traces) == 1
