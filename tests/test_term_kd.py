"""The KD term's logit-standardisation option (Sun et al., CVPR 2024)."""

import numpy as np
import pytest

import tfkd
from tfkd import testing
from tfkd.losses import kd_loss
from tfkd.terms.kd import KDDistillation


def test_standardized_term_matches_the_loss_and_trains():
    testing.check_term(
        lambda: KDDistillation(temperature=2.0, standardize_logits=True),
        reference=lambda t, s: kd_loss(t, s, 2.0, standardize_logits=True),
        taps=("logits", "logits"))


def test_option_defaults_off_and_is_in_the_config():
    assert KDDistillation().standardize_logits is False
    term = KDDistillation(standardize_logits=True)
    config = term.get_config()
    assert config["standardize_logits"] is True
    assert KDDistillation.from_config(config).standardize_logits is True
    # Configs saved before the option existed load with it off.
    config.pop("standardize_logits")
    assert KDDistillation.from_config(config).standardize_logits is False


def test_standardized_value_ignores_the_logits_scale_and_shift():
    x, _ = testing.random_images(8, seed=2)
    teacher = testing.tiny_conv_model("teacher", seed=1)
    t = teacher(x)
    s = 3.0 * t + 1.5
    plain = KDDistillation(temperature=2.0).compute_loss(t, s)
    standardized = KDDistillation(temperature=2.0, standardize_logits=True)
    assert float(plain) > 1e-3
    np.testing.assert_allclose(float(standardized.compute_loss(t, s)), 0.0,
                               atol=1e-5)


def test_bad_option_is_refused():
    with pytest.raises(TypeError, match=r"standardize_logits.*Received: "
                                        r"standardize_logits='yes'"):
        KDDistillation(standardize_logits="yes")


def test_hinton_distiller_keeps_plain_kd():
    distiller = tfkd.Distiller(testing.tiny_conv_model("t"),
                               testing.tiny_conv_model("s"))
    assert distiller.term("kd").standardize_logits is False
