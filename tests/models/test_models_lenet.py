"""The LeNet++-style pair of the LP paper's Fig. 2 (`tfkd/models/lenet.py`)."""

import keras
import numpy as np
import pytest

from tfkd.models import LENETPP_EMBEDDING
from tfkd.models import lenetpp
from tfkd.models import lenetpp_student
from tfkd.models import lenetpp_teacher


def _prelus(model):
    return [layer for layer in model.layers
            if isinstance(layer, keras.layers.PReLU)]


@pytest.mark.parametrize("build", [lenetpp_teacher, lenetpp_student])
def test_every_prelu_slope_starts_at_a_quarter(build):
    # LeNet++ and the PReLU paper start at 0.25; Keras's default (0) made
    # the PReLUs ReLUs whose 3-unit feature layer could die untrained.
    model = build(width=0.25)
    prelus = _prelus(model)
    assert len(prelus) == 7  # Six convs and the feature layer.
    for layer in prelus:
        np.testing.assert_array_equal(layer.get_weights()[0], 0.25)


def test_the_feature_layer_is_leaky_at_the_start():
    model = lenetpp(widths=(2, 2), embedding_units=3)
    features = keras.Model(model.inputs,
                           model.get_layer(LENETPP_EMBEDDING).output)
    dense = model.get_layer("embedding")
    x = np.random.default_rng(0).normal(size=(8, 28, 28, 1)).astype(
        "float32")
    pre = keras.Model(model.inputs, dense.output).predict(x, verbose=0)
    assert (pre < 0).any()
    np.testing.assert_allclose(features.predict(x, verbose=0),
                               np.where(pre > 0, pre, 0.25 * pre),
                               rtol=1e-5, atol=1e-6)


def test_widths_and_feature_units():
    teacher, student = lenetpp_teacher(), lenetpp_student()
    assert [teacher.get_layer(f"conv{i}").filters for i in range(1, 7)] == [
        32, 32, 64, 64, 128, 128]
    assert [student.get_layer(f"conv{i}").filters for i in range(1, 7)] == [
        16, 16, 32, 32, 64, 64]
    assert teacher.get_layer(LENETPP_EMBEDDING).output.shape == (None, 3)
    assert student.get_layer(LENETPP_EMBEDDING).output.shape == (None, 2)
    assert lenetpp_teacher(width=0.5).get_layer("conv6").filters == 64


@pytest.mark.parametrize("kwargs", [dict(widths=(4, 4, 4)),
                                    dict(widths=(4, 0)),
                                    dict(embedding_units=0),
                                    dict(num_classes=True)])
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        lenetpp(**kwargs)
