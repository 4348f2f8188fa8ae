"""Every use of a private Keras / TensorFlow attribute, in one place.

tfkd relies on a few internals that Keras and TensorFlow do not publish
(the functional graph's nodes, the compiled metrics container, the epoch a
`BackupAndRestore` callback restored, ...). Each one is wrapped here, so a
Keras release that changes it breaks one function, and
`tests/test_compat.py` (one test per wrapper) says which. No other tfkd
module touches a private Keras attribute.
"""

import itertools

import keras
import tensorflow as tf

# ----------------------------------------------------------------------
# Models and layers.


def compile_metrics(model):
    """The compiled-metrics container of `model` (`None` before compile)."""
    return getattr(model, "_compile_metrics", None)


def update_compile_metrics(metrics, y_true, y_pred, *, unweighted,
                           weighted):
    """Updates Keras's compiled-metrics container `metrics` with separate
    sample weights for its unweighted (`compile(metrics=...)`) and weighted
    (`compile(weighted_metrics=...)`) metrics: Keras's own `update_state`
    gives the unweighted ones none. Single-output models only."""
    if not metrics.built:
        metrics.build(y_true, y_pred)
    for metric in metrics._flat_metrics:
        if metric is not None:
            metric.update_state(y_true, y_pred, sample_weight=unweighted)
    for metric in metrics._flat_weighted_metrics:
        if metric is not None:
            metric.update_state(y_true, y_pred, sample_weight=weighted)


def compiled_metric_list(metrics):
    """The metrics of Keras's compiled-metrics container `metrics`, flat:
    the unweighted (`compile(metrics=...)`) then the weighted
    (`compile(weighted_metrics=...)`) ones; an output's metrics may be
    grouped in a `MetricsList`, and an entry may be `None`."""
    return list(metrics._flat_metrics) + list(metrics._flat_weighted_metrics)


def loss_tracker(model):
    """The `Mean` metric behind a compiled model's `loss` result.

    Keras's own `compute_loss` updates it; a model that computes its loss
    elsewhere (a custom step) updates it with the step's loss.
    """
    return model._loss_tracker


def compute_loss(model, x, y, y_pred, sample_weight, training):
    """`model.compute_loss(...)` as Keras's own steps call it: an override
    written before Keras 3.3, without the `training` argument, is called
    without it."""
    return model._compute_loss(x=x, y=y, y_pred=y_pred,
                                sample_weight=sample_weight,
                                training=training)


def reset_initial_epoch(model):
    """Forgets the epoch a `BackupAndRestore` callback restored.

    Keras keeps it in `model._initial_epoch` for every later `fit`; a
    second `fit` that numbers its epochs itself (stage 2 of two-stage
    training) must clear it.
    """
    model._initial_epoch = None


def set_initial_epoch(model, epoch):
    """Makes the next `fit` of `model` start at `epoch` (what Keras's
    `BackupAndRestore` does when it restores a backup)."""
    model._initial_epoch = epoch


def graph_inputs(graph):
    """The inputs of a functional graph, in the structure it was built
    with (a tensor, a list or a dict), as `keras.Model(inputs, ...)` takes
    them."""
    return graph._inputs_struct


def graph_outputs(graph):
    """The outputs of a functional graph, in the structure it was built
    with."""
    return graph._outputs_struct


def flatten_layers(layer):
    """`layer` and all of its sub-layers, parents before children."""
    return list(layer._flatten_layers(include_self=True, recursive=True))


def is_functional(model):
    """True for functional and Sequential models with symbolic inputs."""
    try:
        return bool(model.inputs) and bool(model.outputs)
    except (AttributeError, ValueError):
        return False


def functional_graph(model):
    """The functional graph of a functional or built Sequential model.

    Returns `None` for a subclassed or unbuilt model.
    """
    if isinstance(model, keras.Sequential):
        return getattr(model, "_functional", None)
    if isinstance(model, keras.Model) and (
        getattr(model, "_nodes_by_depth", None) is not None
    ):
        return model
    return None


def graph_operations(graph):
    """The layers (operations) of a functional graph, in creation order."""
    return list(graph._operations)


def nodes_by_depth(graph):
    """`{depth: [nodes]}` of a functional graph (outputs at depth 0)."""
    return graph._nodes_by_depth


def graph_node_keys(graph):
    """The keys of the nodes a functional graph owns."""
    return getattr(graph, "_nodes", None) or ()


def inbound_nodes(layer):
    """The nodes at which `layer` was called, in call order."""
    return list(getattr(layer, "_inbound_nodes", []))


def node_key(layer, index):
    """The key under which a graph records `layer`'s `index`-th node."""
    return f"{id(layer)}_ib-{index}"


def producer(tensor):
    """`(layer, node)` that produced a symbolic `KerasTensor`."""
    history = tensor._keras_history
    layer = history.operation
    return layer, layer._inbound_nodes[history.node_index]


def layer_call(layer, training):
    """`layer`'s call as a functional graph makes it: `training` passed
    to the layers whose `call` takes it (Keras's call-context arguments)."""
    from keras.src.models.functional import operation_fn

    return operation_fn(layer, training=training)


def run_graph(model, inputs, operation_fn):
    """Runs a functional (or built Sequential) `model` on `inputs` as its
    `call` does, but computes each node as
    `operation_fn(layer)(*args, **kwargs)`.

    Keras's own graph walk (`Function._run_through_graph`), after its input
    standardisation (dtype, rank, structure). Returns the model's output
    (a single tensor for a single-output model).
    """
    graph = functional_graph(model)
    flat = graph._standardize_inputs(inputs)
    outputs = graph._run_through_graph(flat, operation_fn=operation_fn)
    if isinstance(outputs, (list, tuple)) and len(outputs) == 1:
        return outputs[0]
    return outputs


def input_signature(model):
    """Input specs a (possibly subclassed) built model was built with."""
    from keras.src.export.export_utils import get_input_signature

    return get_input_signature(model)


# ----------------------------------------------------------------------
# tf.data.


def dataset_graph_def(dataset):
    """The `tf.compat.v1.GraphDef` of a `tf.data.Dataset`'s pipeline.

    tf.data's own serialisation (the one tf.data service sends); no public
    API lists a pipeline's ops.
    """
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(dataset._as_serialized_graph().numpy())
    return graph_def


# ----------------------------------------------------------------------
# Keras Tuner (imported by the tuners that mix this in, not here).


class TunerHooks:
    """Keras Tuner's private per-execution hooks, behind public names.

    Mix it in before a `keras_tuner.Tuner` subclass. Keras Tuner's
    `run_trial` calls, for every execution of a trial,
    `_configure_tensorboard_dir(callbacks, trial, execution)` and then
    `_build_and_fit_model(trial, *args, **kwargs)` with that execution's
    `fit` arguments. Here:

    - `execution_callbacks(trial)` (override it) returns callbacks added to
      each execution's `fit`;
    - the TensorBoard hook runs only when a `TensorBoard` callback is
      there: Keras Tuner's imports TensorBoard's hparams plugin on every
      execution otherwise.
    """

    def execution_callbacks(self, trial):
        """Callbacks added to each execution of `trial`; none here."""
        return []

    def _build_and_fit_model(self, trial, *args, **kwargs):
        kwargs["callbacks"] = (list(kwargs.get("callbacks") or [])
                               + list(self.execution_callbacks(trial)))
        return super()._build_and_fit_model(trial, *args, **kwargs)

    def _configure_tensorboard_dir(self, callbacks, trial, execution=0):
        if not any(type(c).__name__ == "TensorBoard" for c in callbacks):
            return
        super()._configure_tensorboard_dir(callbacks, trial, execution)


# ----------------------------------------------------------------------
# tf.distribute.


def in_multi_worker_mode(strategy):
    """Whether `strategy` is a `MultiWorkerMirroredStrategy` over workers."""
    return isinstance(
        strategy, tf.distribute.MultiWorkerMirroredStrategy
    ) and strategy.extended._in_multi_worker_mode()


def strategy_supports_no_merge_call():
    """Whether the current strategy updates variables without `merge_call`.

    `MirroredStrategy` synchronises through `merge_call`, which a
    replica-context `tf.cond` forbids; Keras's `LossScaleOptimizer` branches
    on this too.
    """
    return tf.__internal__.distribute.strategy_supports_no_merge_call()


_key_bases = itertools.count(1)


def mirrored_strategy(devices=None):
    """A `MirroredStrategy` over `devices` with its own collective keys.

    Every `MirroredStrategy` numbers its collective ops from the same keys,
    so a second strategy on the same devices in one process reuses instance
    keys whose shapes TensorFlow has cached, and its first all-reduce of
    differently shaped gradients aborts ("Shape mismatch in the collective
    instance", tensorflow/tensorflow#62790). TF's own tests give each
    strategy a distinct key base; so does this. Programs should create one
    strategy per process and reuse it.
    """
    cls = tf.distribute.MirroredStrategy
    saved = cls._collective_key_base
    cls._collective_key_base = 100_000 * next(_key_bases)
    try:
        return cls(devices)
    finally:
        cls._collective_key_base = saved


def isolate_collective_keys(bases=itertools.count(1000)):
    """Gives every `MirroredStrategy` created from now on keys of its own.

    As `mirrored_strategy` does for one strategy, for all of them: a plain
    `tf.distribute.MirroredStrategy(devices)` created after another in the
    same process otherwise reuses its collective keys and aborts ("Shape
    mismatch in the collective instance", tensorflow/tensorflow#62790). For
    test processes, which create many strategies; a strategy made by
    `mirrored_strategy` keeps the base it was given.
    """
    cls = tf.distribute.MirroredStrategy
    if getattr(cls.__init__, "_tfkd_isolated", False):
        return
    init = cls.__init__

    def __init__(self, *args, **kwargs):
        if type(self)._collective_key_base == 0:  # Not set by the helper.
            self._collective_key_base = 100_000 * next(bases)
        init(self, *args, **kwargs)

    __init__._tfkd_isolated = True
    cls.__init__ = __init__


class MultiWorkerBuildMixin:
    """Fixes Keras's first-batch build under multi-worker strategies.

    Keras takes the first batch's shapes by `strategy.reduce`-ing it across
    replicas, which fails with several workers (keras-team/keras#20585).
    The shapes of this worker's first replica batch are all a model needs.
    Mix it in before `keras.Model`.
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if iterator is not None and strategy is not None and (
            in_multi_worker_mode(strategy)
        ):
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0]
                    if isinstance(v, tf.distribute.DistributedValues) else v,
                    next(batches),
                )
                break
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator,
                                             data_batch=data_batch)
