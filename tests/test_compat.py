"""One test per private Keras / TensorFlow attribute tfkd relies on.

Every wrapper in `tfkd._compat` is exercised here on a small model, so a
Keras or TensorFlow release that renames or changes one fails exactly one
test, named after it.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfkd import _compat
from tfkd import testing


@pytest.fixture(scope="module")
def model():
    return testing.tiny_conv_model("m", width=4, seed=1)


def test_compile_metrics(model):
    clone = testing.tiny_conv_model("c", width=4, seed=1)
    assert _compat.compile_metrics(clone) is None
    clone.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    clone.evaluate(np.zeros((2, 8, 8, 1)), np.zeros((2, 10)), verbose=0)
    metrics = _compat.compile_metrics(clone)
    assert hasattr(metrics, "update_state")


def test_reset_initial_epoch(model):
    model._initial_epoch = 3
    _compat.reset_initial_epoch(model)
    assert model._initial_epoch is None
    # Keras reads it in `fit` (BackupAndRestore sets it).
    import inspect
    source = inspect.getsource(type(model).fit)
    assert "_initial_epoch" in source


def test_set_initial_epoch_is_what_fit_reads(model):
    clone = testing.tiny_conv_model("e", width=2, seed=1)
    clone.compile(optimizer="sgd", loss="mse")
    _compat.set_initial_epoch(clone, 2)
    history = clone.fit(np.zeros((4, 8, 8, 1)), np.zeros((4, 10)), epochs=3,
                        verbose=0)
    assert history.epoch == [2]


def test_flatten_layers(model):
    layers = _compat.flatten_layers(model)
    assert layers[0] is model
    assert {"conv1", "conv2", "logits"} <= {layer.name for layer in layers}


def test_is_functional(model):
    assert _compat.is_functional(model)

    class Sub(keras.Model):
        def call(self, x):
            return x

    assert not _compat.is_functional(Sub())


def test_functional_graph_and_nodes(model):
    sequential = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    assert _compat.functional_graph(sequential) is not None
    assert _compat.functional_graph(model) is model
    operations = _compat.graph_operations(model)
    assert [op.name for op in operations][-1] == "logits"
    depths = _compat.nodes_by_depth(model)
    assert min(depths) == 0 and len(depths) >= 4
    assert _compat.graph_node_keys(model)


def test_inbound_nodes_and_node_key(model):
    conv = model.get_layer("conv1")
    nodes = _compat.inbound_nodes(conv)
    assert len(nodes) == 1
    assert _compat.node_key(conv, 0) in _compat.graph_node_keys(model)


def test_producer(model):
    layer, node = _compat.producer(model.get_layer("conv2").output)
    assert layer.name == "conv2"
    assert node in _compat.inbound_nodes(layer)


def test_input_signature():
    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    sub = Sub()
    sub(np.zeros((1, 3), "float32"))
    spec = keras.tree.flatten(_compat.input_signature(sub))[0]
    assert tuple(spec.shape)[1:] == (3,)


def test_in_multi_worker_mode():
    assert not _compat.in_multi_worker_mode(tf.distribute.get_strategy())
    assert hasattr(tf.distribute.MultiWorkerMirroredStrategy, "extended")


def test_strategy_supports_no_merge_call():
    assert _compat.strategy_supports_no_merge_call() in (True, False)


def test_mirrored_strategy_key_base():
    saved = tf.distribute.MirroredStrategy._collective_key_base
    strategy = _compat.mirrored_strategy(["/cpu:0"])
    assert strategy.num_replicas_in_sync == 1
    assert tf.distribute.MirroredStrategy._collective_key_base == saved


def test_multi_worker_build_mixin_overrides_a_keras_method():
    # The mixin replaces `Model._maybe_symbolic_build(iterator, data_batch)`.
    import inspect
    parameters = inspect.signature(
        keras.Model._maybe_symbolic_build).parameters
    assert list(parameters)[:3] == ["self", "iterator", "data_batch"]


def test_isolate_collective_keys():
    _compat.isolate_collective_keys()
    _compat.isolate_collective_keys()  # idempotent
    first = tf.distribute.MirroredStrategy(["/cpu:0"])
    second = tf.distribute.MirroredStrategy(["/cpu:0"])
    assert first._collective_key_base != second._collective_key_base
    assert tf.distribute.MirroredStrategy._collective_key_base == 0
