"""The SP term (the "write your own term" worked example's test)."""

import pytest

from tfkd import testing
from tfkd.distillers import registry
from tfkd.losses import similarity_preserving_loss
from tfkd.terms.similarity import SimilarityPreservingDistillation


def test_term_matches_the_loss_and_trains():
    testing.check_term(
        lambda: SimilarityPreservingDistillation("conv2", "conv2"),
        reference=similarity_preserving_loss)


def test_method_is_registered_with_the_papers_weight():
    spec = registry.get("sp")
    assert spec.term is SimilarityPreservingDistillation
    assert spec.arguments()["weight"] == 3000.0
    distiller = registry.build(
        "sp", testing.tiny_conv_model("t"), testing.tiny_conv_model("s"),
        feature_layers=("conv1", "conv2"))
    assert distiller.distillation_loss_weights == [3000.0]
    assert distiller.student_loss_weight == 0.5


def test_feature_shapes_may_differ_but_not_batches():
    term = SimilarityPreservingDistillation()
    with pytest.raises(ValueError, match="same batch size"):
        term.compute_loss(testing.random_images(4)[0],
                          testing.random_images(3)[0])
