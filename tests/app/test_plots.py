"""`tfkd.app.plots`: every figure is written as a readable PNG; numbers
are right."""

import matplotlib.image
import numpy as np
import pytest

import tfkd
from tfkd.app import plots
from tfkd import testing


def _png(path):
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    image = matplotlib.image.imread(path)
    height, width = image.shape[:2]
    assert width >= 600 and height >= 300, (width, height)
    return image


def _history(epochs=4):
    ramp = np.linspace(1.0, 0.2, epochs).tolist()
    return {"loss": ramp, "student_loss": ramp, "kd_loss": [2 * v for v in ramp],
            "hint_loss": [100 * v for v in ramp],
            "val_loss": ramp, "val_kd_loss": ramp,
            "accuracy": [1 - v for v in ramp],
            "val_accuracy": [1 - v for v in ramp]}


def test_plot_history_one_panel_per_loss_term(tmp_path):
    path = tmp_path / "curves.png"
    fig = plots.plot_history(_history(), path, title="run")
    _png(path)
    assert [ax.get_title() for ax in fig.axes] == [
        "loss", "student_loss", "kd_loss", "hint_loss", "other metrics"]
    kd = fig.axes[2]
    labels = [line.get_label() for line in kd.get_lines()]
    assert labels == ["train", "validation"]
    np.testing.assert_allclose(kd.get_lines()[0].get_ydata(),
                               _history()["kd_loss"])


def test_plot_history_accepts_a_keras_history_and_single_epoch(tmp_path):
    teacher = testing.tiny_conv_model("teacher", width=8, seed=1)
    student = testing.tiny_conv_model("student", width=4, seed=2)
    x, y = testing.random_images(16)
    distiller = tfkd.Distiller(teacher, student)
    distiller.compile(optimizer="sgd")
    history = distiller.fit(x, y, epochs=1, verbose=0)
    fig = plots.plot_history(history, tmp_path / "one.png")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == "loss"
    assert sorted(titles) == ["distillation_loss", "kd_loss", "loss",
                              "student_loss", "total_loss"]
    assert plots.loss_terms(history) == titles


def test_plot_history_errors(tmp_path):
    with pytest.raises(ValueError, match="no per-epoch metrics"):
        plots.plot_history({})
    with pytest.raises(ValueError, match="terms.*not in the history"):
        plots.plot_history(_history(), terms=["lp_loss"])
    with pytest.raises(TypeError, match="history"):
        plots.plot_history([1, 2, 3])
    with pytest.raises(ValueError, match=r"\.png"):
        plots.plot_history(_history(), tmp_path / "curves.jpg")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        plots.plot_history(_history(), tmp_path / "no" / "curves.png")


def test_gram_distance_is_the_channel_correlation_loss(tmp_path):
    rng = np.random.default_rng(0)
    f_t = rng.random((6, 4, 4, 8)).astype("float32")
    f_before = rng.random((6, 4, 4, 8)).astype("float32")
    f_after = (f_t + 0.05 * rng.random((6, 4, 4, 8))).astype("float32")
    path = tmp_path / "gram.png"
    fig = plots.plot_gram_matrices(
        {"teacher": f_t, "before": f_before, "after": f_after,
         "narrow": f_t[..., :4]}, path, max_channels=6)
    _png(path)
    titles = [ax.get_title() for ax in fig.axes if ax.images]
    for label, f in (("before", f_before), ("after", f_after)):
        expected = float(np.mean(tfkd.losses.correlation_loss(
            f_t, f, mode="channel")))
        title = next(t for t in titles if t.startswith(label))
        assert f"{expected:.3f}" in title, (title, expected)
    assert any("not comparable" in t for t in titles)
    # Heatmaps are cropped to max_channels.
    assert fig.axes[0].images[0].get_array().shape == (6, 6)


def test_gram_errors():
    with pytest.raises(TypeError, match="non-empty dict"):
        plots.plot_gram_matrices(np.zeros((2, 4, 4, 3)))
    with pytest.raises(ValueError, match=r"\(batch, H, W, C\)"):
        plots.plot_gram_matrices({"teacher": np.zeros((2, 12))})
    with pytest.raises(ValueError, match="max_channels"):
        plots.plot_gram_matrices({"t": np.zeros((2, 2, 2, 3))},
                                 max_channels=1)


def test_pca_matches_the_principal_axis():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 1)) * np.array([[3.0, 4.0, 0.0]])
    x += rng.normal(scale=0.01, size=x.shape)
    points, explained = plots.pca_2d(x)
    assert explained[0] > 0.99
    centred = x - x.mean(axis=0)
    np.testing.assert_allclose(np.abs(points[:, 0]),
                               np.abs(centred @ np.array([0.6, 0.8, 0.0])),
                               atol=0.05)


def test_neighbour_overlap():
    rng = np.random.default_rng(0)
    x = rng.random((30, 5))
    assert plots.neighbour_overlap(x, x * 3.0 + 1.0, k=4) == 1.0
    shuffled = x[rng.permutation(30)]
    assert plots.neighbour_overlap(x, shuffled, k=4) < 0.6
    with pytest.raises(ValueError, match="k"):
        plots.neighbour_overlap(x, x, k=30)
    with pytest.raises(ValueError, match="same examples"):
        plots.neighbour_overlap(x, x[:10], k=2)


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_plot_embedding(tmp_path, method):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, size=80)
    teacher = np.eye(4)[y] * 5 + rng.normal(size=(80, 4))
    path = tmp_path / f"{method}.png"
    fig = plots.plot_embedding(
        {"teacher": teacher, "student": teacher @ rng.normal(size=(4, 6))},
        np.eye(4)[y], path, method=method, max_points=60,
        class_names=["a", "b", "c", "d"])
    _png(path)
    assert "overlap with teacher" in fig.axes[1].get_title()
    legend_texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend_texts == ["a", "b", "c", "d"]
    with pytest.raises(ValueError, match="labels"):
        plots.plot_embedding({"teacher": teacher}, y[:10])
    with pytest.raises(ValueError, match="method"):
        plots.plot_embedding({"teacher": teacher}, y, method="umap")


def test_plot_accuracy_vs_params(tmp_path):
    points = [
        {"label": "teacher", "role": "teacher", "params": 7.65e6,
         "accuracy": 92.02, "latency_ms": 2.0},
        {"label": "student", "role": "scratch", "params": 1.56e6,
         "accuracy": 89.18, "accuracy_std": 0.3, "latency_ms": 0.5},
        {"label": "KD", "params": 1.56e6, "accuracy": 89.73},
    ]
    path = tmp_path / "acc.png"
    fig = plots.plot_accuracy_vs_params(points, path)
    _png(path)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "parameters" and ax.get_xscale() == "linear"
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[0] == "teacher — 92.02 % (7.65M)"
    assert "89.18 ± 0.30 %" in labels[1]
    fig = plots.plot_accuracy_vs_params(points, tmp_path / "lat.png",
                                        x="latency_ms")
    # Only the two points with a latency are drawn.
    assert len(fig.legends[0].get_texts()) == 2
    with pytest.raises(ValueError, match="role"):
        plots.plot_accuracy_vs_params([{"label": "x", "role": "ta",
                                        "params": 1, "accuracy": 1}])
    with pytest.raises(ValueError, match="No point has both"):
        plots.plot_accuracy_vs_params([{"label": "x", "accuracy": 1}])
    with pytest.raises(TypeError, match="non-empty list"):
        plots.plot_accuracy_vs_params([])


def test_plot_gain_by_budget(tmp_path):
    gains = {"10 labels/class": {"kd": {5: (-8.5, 5.0), 20: (5.3, None)},
                                 "dist": {5: (6.1, 1.0), 20: (4.0, 1.0)}},
             "100 labels/class": {"kd": {5: (-5.7, 2.6)}}}
    path = tmp_path / "budget.png"
    fig = plots.plot_gain_by_budget(gains, path)
    _png(path)
    left, right = fig.axes[:2]
    assert left.get_title() == "10 labels/class"
    assert left.get_xscale() == "log"
    # One line per method, through its gains in budget order.
    kd = left.get_lines()[0]
    assert list(kd.get_xdata()) == [5, 20]
    assert list(kd.get_ydata()) == [-8.5, 5.3]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "kd", "dist"]
    for bad in ({}, {"s": {}}, {"s": {"kd": {5: 1.0}}}):
        with pytest.raises(ValueError, match="gains"):
            plots.plot_gain_by_budget(bad)


def test_layer_features_arrays_and_datasets():
    model = testing.tiny_conv_model("net", width=4, seed=0)
    x, y = testing.random_images(10)
    features = plots.layer_features(model, "conv2", x, batch_size=4)
    assert features.shape == (10, 8, 8, 4)
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(3)
    np.testing.assert_allclose(plots.layer_features(model, "conv2", dataset),
                               features, atol=1e-5)
    with pytest.raises(ValueError, match="not a layer"):
        plots.layer_features(model, "conv9", x)
