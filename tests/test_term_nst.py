"""The NST (neuron selectivity transfer) term: value, spatial sizes."""

import keras
import numpy as np
import pytest

import tfkd
from tfkd import testing
from tfkd.distillers import registry
from tfkd.losses import neuron_selectivity_loss
from tfkd.terms.nst import NeuronSelectivityDistillation


def test_term_matches_the_loss_and_trains():
    testing.check_term(
        lambda: NeuronSelectivityDistillation("conv2", "conv2"),
        reference=neuron_selectivity_loss)


def test_method_is_registered_with_its_weight():
    spec = registry.get("nst")
    assert spec.term is NeuronSelectivityDistillation
    assert spec.arguments()["weight"] == 50.0
    assert spec.build_defaults == {"adapter": True}
    distiller = registry.build(
        "nst", testing.tiny_conv_model("t"), testing.tiny_conv_model("s"),
        feature_layers=("conv2", "conv2"))
    assert distiller.distillation_loss_weights == [50.0]
    assert distiller.term("nst").adapters == []  # sizes match


def _pooled_student(seed=11):
    """A student whose tapped map is 4×4 (the teacher's is 8×8)."""
    inputs = keras.Input((8, 8, 1), name="images")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu",
                            name="conv1")(inputs)
    x = keras.layers.MaxPooling2D(2, name="half")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs, name="student")


def test_spatial_mismatch_needs_the_adapter():
    teacher = testing.tiny_conv_model("teacher", width=8, seed=1)
    with pytest.raises(ValueError, match=r"equal spatial sizes.*'conv2' -> "
                                         r"'half'.*\(None, 8, 8, 8\).*"
                                         r"\(None, 4, 4, 4\).*adapter=True"):
        tfkd.Distiller(teacher, _pooled_student(),
                       [NeuronSelectivityDistillation("conv2", "half")])
    term = NeuronSelectivityDistillation("conv2", "half", adapter=True)
    distiller = tfkd.Distiller(teacher, _pooled_student(), [term])
    assert len(term.adapters) == 1
    x, y = testing.random_images(8, seed=2)
    values = distiller.compute_terms(x, y)["nst_loss"]
    assert values.shape == (8,)
    assert np.all(np.isfinite(values.numpy()))


def test_config_round_trip():
    term = NeuronSelectivityDistillation("a", "b", adapter=True)
    clone = NeuronSelectivityDistillation.from_config(term.get_config())
    assert clone.get_config() == term.get_config()
    assert clone.adapter is True
