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


def test_layer_call_passes_training_only_where_taken():
    dropout = keras.layers.Dropout(0.5, seed=1)
    ones = np.ones((4, 16), "float32")
    assert np.any(np.array(_compat.layer_call(dropout, True)(ones)) == 0)
    np.testing.assert_array_equal(
        np.array(_compat.layer_call(dropout, False)(ones)), ones)
    # A layer without `training` in its call still runs.
    dense = keras.layers.Dense(2)
    assert _compat.layer_call(dense, True)(ones).shape == (4, 2)


def test_run_graph_computes_each_node_through_operation_fn(model):
    x = np.random.default_rng(0).random((2, 8, 8, 1)).astype("float32")
    seen = []

    def operation_fn(layer):
        seen.append(layer.name)
        return _compat.layer_call(layer, False)

    out = _compat.run_graph(model, x, operation_fn)
    np.testing.assert_allclose(np.array(out), np.array(model(x)), atol=1e-6)
    assert seen == ["conv1", "conv2", "pool", "logits"]
    # A Sequential model runs through its functional graph too.
    sequential = keras.Sequential([keras.Input((3,)),
                                   keras.layers.Dense(2, name="d")])
    ones = np.ones((1, 3), "float32")
    doubled = _compat.run_graph(
        sequential, ones, lambda layer: lambda *a, **k: 2 * layer(*a, **k))
    np.testing.assert_allclose(np.array(doubled),
                               2 * np.array(sequential(ones)), atol=1e-6)


def test_isolate_collective_keys():
    _compat.isolate_collective_keys()
    _compat.isolate_collective_keys()  # idempotent
    first = tf.distribute.MirroredStrategy(["/cpu:0"])
    second = tf.distribute.MirroredStrategy(["/cpu:0"])
    assert first._collective_key_base != second._collective_key_base
    assert tf.distribute.MirroredStrategy._collective_key_base == 0


def test_compiled_metric_list():
    clone = testing.tiny_conv_model("w", width=2, seed=1)
    clone.compile(optimizer="sgd", loss="mse", metrics=["mae"],
                  weighted_metrics=["mse"])
    clone.evaluate(np.zeros((2, 8, 8, 1)), np.zeros((2, 10)), verbose=0)
    flat = []
    for metric in _compat.compiled_metric_list(_compat.compile_metrics(clone)):
        # An output's metrics may come grouped (a `MetricsList`).
        flat += list(getattr(metric, "metrics", [metric]))
    assert [type(m).__name__ for m in flat if m is not None] == [
        "MeanAbsoluteError", "MeanSquaredError"]


def test_loss_tracker_is_the_loss_result():
    clone = testing.tiny_conv_model("l", width=2, seed=1)
    clone.compile(optimizer="sgd", loss="mse")
    history = clone.fit(np.ones((4, 8, 8, 1)), np.zeros((4, 10)), epochs=1,
                        batch_size=4, verbose=0)
    tracker = _compat.loss_tracker(clone)
    assert isinstance(tracker, keras.metrics.Mean)
    assert tracker in clone.metrics
    assert float(tracker.result()) == pytest.approx(history.history["loss"][0])
    tracker.reset_state()
    tracker.update_state(3.0)
    assert float(clone.get_metrics_result()["loss"]) == pytest.approx(3.0)


def test_graph_inputs_and_outputs_keep_their_structure():
    inputs = {"a": keras.Input((3,), name="a"), "b": keras.Input((2,),
                                                              name="b")}
    merged = keras.layers.Concatenate()([inputs["a"], inputs["b"]])
    outputs = [keras.layers.Dense(1, name="y")(merged),
               keras.layers.Dense(2, name="z")(merged)]
    graph = _compat.functional_graph(keras.Model(inputs, outputs))
    assert _compat.graph_inputs(graph) == inputs
    assert isinstance(_compat.graph_outputs(graph), list)
    assert [t.shape for t in _compat.graph_outputs(graph)] == [
        (None, 1), (None, 2)]


def test_dataset_graph_def_lists_the_pipeline_ops():
    dataset = tf.data.Dataset.range(8).shuffle(8, seed=1).batch(2)
    graph_def = _compat.dataset_graph_def(dataset)
    assert isinstance(graph_def, tf.compat.v1.GraphDef)
    ops = {node.op for node in graph_def.node}
    assert {"RangeDataset", "BatchDatasetV2"} <= ops
    assert any(op.startswith("ShuffleDataset") for op in ops)


def test_tuner_hooks_are_what_keras_tuner_calls():
    import inspect

    import keras_tuner as kt

    # `run_trial` calls both hooks once per execution, with these arguments.
    source = inspect.getsource(kt.Tuner.run_trial)
    assert "self._configure_tensorboard_dir(callbacks, trial, execution)" in \
        source
    assert "self._build_and_fit_model(trial, *args, **copied_kwargs)" in source
    assert "copied_kwargs[\"callbacks\"] = callbacks" in source
    parameters = inspect.signature(kt.Tuner._configure_tensorboard_dir)
    assert list(parameters.parameters) == ["self", "callbacks", "trial",
                                           "execution"]

    class Recorder(keras.callbacks.Callback):
        epochs = 0

        def on_epoch_end(self, epoch, logs=None):
            Recorder.epochs += 1

    class Tuner(_compat.TunerHooks, kt.RandomSearch):
        def execution_callbacks(self, trial):
            return [Recorder()]

    def build(hp):
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
        return model

    import tempfile
    with tempfile.TemporaryDirectory() as folder:
        tuner = Tuner(build, objective="loss", max_trials=1,
                      directory=folder, project_name="p")
        tuner.search(np.zeros((4, 2)), np.zeros((4, 1)), epochs=2,
                     verbose=0)
    assert Recorder.epochs == 2
