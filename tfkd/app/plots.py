"""Plots of distillation runs: curves, Gram matrices, embeddings, trade-offs.

Every function draws on a fresh `matplotlib.figure.Figure` rendered by the
Agg backend (no `pyplot`, no global state, no display needed), returns the
figure, and writes a PNG when given `path`:

- `plot_history`: training curves, one panel per loss term (`loss`,
  `student_loss`, `kd_loss`, `hint_loss`, ...), training and validation;
- `plot_gram_matrices`: standardised channel Gram matrices of the teacher
  and of students (e.g. before and after distillation), with their
  distance to the teacher's, as the correlation loss measures it;
- `plot_embedding`: a 2-D embedding (PCA or t-SNE) of each network's
  features, coloured by class, as in the LP paper's Fig. 2;
- `plot_accuracy_vs_params`: accuracy against parameter count (or TFLite
  latency) for teacher, scratch student and distilled students;
- `plot_method_comparison`: accuracy of every method in several settings
  (e.g. label budgets), as grouped bars beside the student trained alone.

`layer_features` collects a layer's outputs for a batch of images, the
input of the last three.
"""

import math
import os

import numpy as np

#: Marker and colour of each role in `plot_accuracy_vs_params`.
ROLE_STYLES = {
    "teacher": {"marker": "*", "color": "#222222", "size": 260},
    "scratch": {"marker": "s", "color": "#7f7f7f", "size": 110},
    "distilled": {"marker": "o", "color": None, "size": 110},
}
_ROLE_ORDER = ("teacher", "scratch", "distilled")


def _figure(width, height):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return fig


def _save(fig, path, dpi=110):
    if path is None:
        return
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            "`path` must be a file path (str or os.PathLike) or None. "
            f"Received: path={path!r}."
        )
    path = os.fspath(path)
    if not path.lower().endswith(".png"):
        raise ValueError(
            f"Plots are written as PNG. Received: path={path!r}; give it a "
            "`.png` suffix."
        )
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"The directory of path={path!r} does not exist. Create "
            f"{directory!r} first."
        )
    from tfkd import io as tfkd_io

    # Saved under a temporary name and renamed: no half-drawn PNG is left.
    with tfkd_io.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")


def _as_array(x, name):
    if hasattr(x, "numpy"):
        x = x.numpy()
    try:
        x = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"`{name}` must be an array of numbers (NumPy or tensor). "
            f"Received: {name} of type {type(x).__name__}. Details: {e}"
        ) from None
    return x


def _check_named(features, name):
    """`{label: array}` from a dict (or a list of `(label, array)` pairs)."""
    if isinstance(features, (list, tuple)) and all(
        isinstance(p, (list, tuple)) and len(p) == 2 for p in features
    ):
        features = dict(features)
    if not isinstance(features, dict) or not features:
        raise TypeError(
            f"`{name}` must be a non-empty dict `{{label: array}}` whose "
            "first entry is the reference (the teacher), e.g. "
            "{'teacher': f_t, 'student (scratch)': f_s0, 'student (KD)': "
            f"f_s1}}. Received: {name} of type {type(features).__name__}."
        )
    return {str(k): v for k, v in features.items()}


# ----------------------------------------------------------------------------
# Training curves.


def _history_dict(history):
    history = getattr(history, "history", history)
    if not isinstance(history, dict):
        raise TypeError(
            "`history` must be a `keras.callbacks.History` or its `.history` "
            f"dict of per-epoch lists. Received: history={history!r}."
        )
    clean = {}
    for key, values in history.items():
        if isinstance(values, (int, float)):
            values = [values]
        try:
            clean[str(key)] = [
                float("nan") if v is None else float(v) for v in values
            ]
        except (TypeError, ValueError):
            continue  # Non-numeric entries (e.g. notes) are not curves.
    return clean


def loss_terms(history):
    """Names of the loss terms in a history: `loss` first, no `val_` keys.

    Args:
        history: A `keras.callbacks.History` or its `.history` dict.

    Returns:
        A list of metric names ending in `loss`, in the history's order with
        `loss` (the total) first.

    Example:

    >>> loss_terms({"kd_loss": [1.0], "loss": [2.0], "val_loss": [2.1],
    ...             "accuracy": [0.5], "student_loss": [0.9]})
    ['loss', 'kd_loss', 'student_loss']
    """
    history = _history_dict(history)
    names = [k for k in history
             if k.endswith("loss") and not k.startswith("val_")]
    return sorted(names, key=lambda k: (k != "loss", names.index(k)))


def plot_history(history, path=None, *, title=None, terms=None, ncols=3):
    """Training curves, one panel per loss term, training and validation.

    Each loss term a distiller reports (`loss`, `student_loss`, `kd_loss`,
    `hint_loss`, `lp_loss`, ...) gets its own panel with its own
    scale (knowledge losses are often orders of magnitude apart from the
    cross entropy); the validation curve (`val_<term>`) is dashed. Other
    metrics (accuracy, ...) share one last panel.

    Args:
        history: A `keras.callbacks.History` or its `.history` dict
            `{name: [value per epoch]}` (e.g. `RunResult.history`).
        path: Optional `.png` path to write.
        title: Figure title.
        terms: Loss terms to draw (default: every term, see `loss_terms`).
        ncols: Panels per row.

    Returns:
        The `matplotlib.figure.Figure`.

    Example:

    >>> history = {"loss": [2.0, 1.2, 0.9], "student_loss": [1.5, 0.9, 0.6],
    ...            "kd_loss": [4.0, 2.5, 2.0], "val_loss": [2.1, 1.4, 1.1],
    ...            "accuracy": [0.4, 0.7, 0.8]}
    >>> fig = plot_history(history, title="kd on digits")
    >>> [ax.get_title() for ax in fig.axes]
    ['loss', 'student_loss', 'kd_loss', 'other metrics']
    """
    history = _history_dict(history)
    if terms is None:
        terms = loss_terms(history)
    else:
        missing = [t for t in terms if t not in history]
        if missing:
            raise ValueError(
                f"`terms` names metrics that are not in the history: "
                f"{missing}. Received: terms={list(terms)!r}; the history "
                f"has {sorted(history)}."
            )
    others = [k for k in history
              if not k.startswith("val_") and k not in terms
              and not k.endswith("loss")]
    if not terms and not others:
        raise ValueError(
            "`history` holds no per-epoch metrics to plot. Received keys: "
            f"{sorted(history)}. Pass `fit(...)`'s History or its `.history`."
        )
    panels = list(terms) + (["other metrics"] if others else [])
    ncols = max(1, min(int(ncols), len(panels)))
    nrows = math.ceil(len(panels) / ncols)
    fig = _figure(4.2 * ncols, 3.2 * nrows + (0.4 if title else 0.0))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(panels):]:
        ax.remove()
    for ax, panel in zip(axes, panels):
        names = others if panel == "other metrics" else [panel]
        for i, name in enumerate(names):
            color = f"C{i}"
            for key, style, label in ((name, "-", "train"),
                                      (f"val_{name}", "--", "validation")):
                values = history.get(key)
                if not values:
                    continue
                epochs = np.arange(1, len(values) + 1)
                if panel == "other metrics":
                    label = key
                ax.plot(epochs, values, style, color=color, label=label,
                        marker="o" if len(values) <= 30 else None,
                        markersize=3)
        ax.set_title(panel, fontsize=11)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=13)
    _save(fig, path)
    return fig


# ----------------------------------------------------------------------------
# Gram matrices.


def _mean_standardized_gram(features):
    """Mean over examples of the standardised channel Gram, as NumPy."""
    from tfkd.losses import channel_gram
    from tfkd.losses import standardize

    gram = standardize(channel_gram(features.astype("float32")))
    return np.asarray(gram), np.asarray(gram).mean(axis=0)


def plot_gram_matrices(features, path=None, *, max_channels=32, title=None):
    """Heatmaps of standardised channel Gram matrices, teacher vs students.

    For each network the channel Gram `C = Fᵀ F` of every example is
    standardised (`tfkd.losses.standardize`, the correlation paper's
    `norm`) and the heatmap shows its mean over the examples. The first
    entry is the reference (the teacher): the panel of every other entry
    with the same channel count gives its distance to the reference,
    `mean over examples of ‖norm(C_S) − norm(C_T)‖₂`, exactly the channel
    correlation loss, and a second row shows `|mean norm(C_S) − mean
    norm(C_T)|`. Pass a student before and after distillation to see what
    correlation-based learning changed.

    Args:
        features: Dict `{label: feature maps}`, each `(batch, H, W, C)`
            (NumPy or tensors) from the same images, e.g.
            `{"teacher": f_t, "student before": f_0, "student after": f_1}`;
            the first entry is the reference.
        path: Optional `.png` path to write.
        max_channels: Show at most this many leading channels (the distance
            uses all of them).
        title: Figure title.

    Returns:
        The `matplotlib.figure.Figure`.

    Example:

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> f_t = rng.random((8, 4, 4, 6))
    >>> fig = plot_gram_matrices({"teacher": f_t, "student": 3.0 * f_t})
    >>> fig.axes[1].get_title()  # Standardised Grams ignore the scale.
    'student\\n‖Δ‖₂ to teacher = 0.000'

    Reference:
        Wang, Xu, Xu, Yu, Wang. "Student-Centric Network Learning for
        Improved Knowledge Transfer", 2019, eqs. 1-2.
    """
    features = _check_named(features, "features")
    if isinstance(max_channels, bool) or not isinstance(max_channels, int) \
            or max_channels < 2:
        raise ValueError(
            "`max_channels` must be an int >= 2. Received: "
            f"max_channels={max_channels!r}."
        )
    grams = {}
    for label, f in features.items():
        f = _as_array(f, f"features[{label!r}]")
        if f.ndim != 4:
            raise ValueError(
                f"features[{label!r}] must be feature maps of shape (batch, "
                f"H, W, C). Received shape {f.shape}. Tap a convolutional "
                "layer, or reshape dense features to (batch, 1, 1, C)."
            )
        grams[label] = _mean_standardized_gram(f)
    labels = list(grams)
    ref_label = labels[0]
    ref_all, ref_mean = grams[ref_label]
    n = len(labels)
    has_diff = any(
        grams[label][1].shape == ref_mean.shape for label in labels[1:]
    )
    nrows = 2 if has_diff else 1
    fig = _figure(3.6 * n + 0.8, 3.5 * nrows + (0.5 if title else 0.2))
    axes = fig.subplots(nrows, n, squeeze=False)
    shown = {label: grams[label][1][:max_channels, :max_channels]
             for label in labels}
    limit = max(float(np.abs(g).max()) for g in shown.values()) or 1.0
    image = None
    for col, label in enumerate(labels):
        per_example, mean = grams[label]
        ax = axes[0, col]
        image = ax.imshow(shown[label], cmap="RdBu_r", vmin=-limit,
                          vmax=limit, interpolation="nearest")
        channels = mean.shape[0]
        heading = label
        if col > 0 and mean.shape == ref_mean.shape:
            distance = np.sqrt(((per_example - ref_all) ** 2).sum(
                axis=(1, 2))).mean()
            heading += f"\n‖Δ‖₂ to {ref_label} = {distance:.3f}"
        elif col > 0:
            heading += f"\n({channels} channels: not comparable)"
        else:
            heading += "\n(reference)"
        ax.set_title(heading, fontsize=10)
        suffix = (f" (first {max_channels} of {channels})"
                  if channels > max_channels else "")
        ax.set_xlabel("channel j" + suffix, fontsize=9)
        ax.set_ylabel("channel i", fontsize=9)
        if nrows == 2:
            diff_ax = axes[1, col]
            if col == 0 or mean.shape != ref_mean.shape:
                diff_ax.set_visible(False)
                continue
            diff = np.abs(mean - ref_mean)[:max_channels, :max_channels]
            diff_image = diff_ax.imshow(diff, cmap="magma", vmin=0,
                                        vmax=max(limit, 1e-12),
                                        interpolation="nearest")
            diff_ax.set_title(f"|{label} − {ref_label}|", fontsize=10)
            diff_ax.set_xlabel("channel j", fontsize=9)
            diff_ax.set_ylabel("channel i", fontsize=9)
    fig.colorbar(image, ax=list(axes[0]), shrink=0.85,
                 label="standardised Gram (mean over examples)")
    if nrows == 2:
        visible = [ax for ax in axes[1] if ax.get_visible()]
        fig.colorbar(diff_image, ax=visible, shrink=0.85,
                     label="absolute difference")
    fig.suptitle(title or "Channel Gram matrices  C = FᵀF  (standardised)",
                 fontsize=12)
    _save(fig, path)
    return fig


# ----------------------------------------------------------------------------
# Embeddings.


def pca_2d(x):
    """Projects rows of `x` on their first two principal components.

    PCA by NumPy's SVD of the centred data.

    Args:
        x: Array `(n, d)` (more dimensions are flattened per row).

    Returns:
        `(points, explained)`: an `(n, 2)` array and the fraction of the
        variance each of the two components explains.

    Example:

    >>> import numpy as np
    >>> x = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
    >>> points, explained = pca_2d(x)
    >>> [round(abs(float(v)), 4) for v in points[:, 0]], explained.round(3)
    ([1.4142, 0.0, 1.4142], array([1., 0.]))
    """
    x = _as_array(x, "x")
    x = x.reshape(len(x), -1)
    centred = x - x.mean(axis=0, keepdims=True)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    total = float((s ** 2).sum()) or 1.0
    k = min(2, len(s))
    points = np.zeros((len(x), 2))
    points[:, :k] = u[:, :k] * s[:k]
    explained = np.zeros(2)
    explained[:k] = s[:k] ** 2 / total
    return points, explained


def _knn_indices(x, k):
    sq = (x ** 2).sum(axis=1)
    d = sq[:, None] + sq[None, :] - 2.0 * x @ x.T
    np.fill_diagonal(d, np.inf)
    return np.argsort(d, axis=1)[:, :k]


def neighbour_overlap(reference, features, k=5):
    """Fraction of each example's k nearest neighbours shared with a reference.

    The LP paper's notion of a preserved locality: for each example, its
    `k` nearest neighbours (Euclidean, among the other examples) in
    `features` are compared with its `k` nearest neighbours in `reference`
    (the teacher's features); 1 means every neighbourhood is preserved,
    about `k / (n − 1)` is chance.

    Args:
        reference: Array `(n, ...)`, e.g. the teacher's features.
        features: Array `(n, ...)` of the same examples, any width.
        k: Neighbours per example, `1 <= k < n`.

    Returns:
        A float in [0, 1].

    Example:

    >>> import numpy as np
    >>> x = np.random.default_rng(0).random((20, 3))
    >>> neighbour_overlap(x, 2.0 * x, k=3)
    1.0
    """
    a = _as_array(reference, "reference")
    b = _as_array(features, "features")
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    if len(a) != len(b):
        raise ValueError(
            "`reference` and `features` must hold the same examples. "
            f"Received {len(a)} and {len(b)} rows."
        )
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < len(a):
        raise ValueError(
            f"`k` must be an int in [1, n - 1] = [1, {len(a) - 1}]. "
            f"Received: k={k!r}."
        )
    na, nb = _knn_indices(a, k), _knn_indices(b, k)
    shared = [len(set(r) & set(s)) for r, s in zip(na, nb)]
    return float(np.mean(shared) / k)


def plot_embedding(features, labels, path=None, *, method="pca",
                   max_points=1000, k=5, seed=0, title=None,
                   class_names=None):
    """2-D embeddings of each network's features, coloured by class.

    One panel per network (e.g. teacher, scratch student, distilled
    students), like the LP paper's Fig. 2: features are flattened per
    example and projected to two dimensions, each network in its own space
    (PCA by NumPy SVD, or scikit-learn's t-SNE). Each panel after the first
    gives its `neighbour_overlap` with the first (the teacher): the share of
    `k`-nearest neighbourhoods (in the full feature space) it preserves,
    which is what the locality-preserving loss trains for.

    Args:
        features: Dict `{label: features}`, each `(n, ...)` for the same `n`
            examples (e.g. the inputs of the softmax layer); the first entry
            is the reference.
        labels: Integer class ids `(n,)` (or one-hot `(n, classes)`).
        path: Optional `.png` path to write.
        method: `"pca"` (default, fast and deterministic) or `"tsne"`.
        max_points: Plot at most this many examples (a fixed random subset).
        k: Neighbours for the overlap score, `>= 1`.
        seed: Seed of the subset and of t-SNE.
        title: Figure title.
        class_names: Optional names of the classes, for the legend.

    Returns:
        The `matplotlib.figure.Figure`.

    Example:

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 3, size=60)
    >>> f_t = np.eye(3)[y] * 5 + rng.normal(size=(60, 3))
    >>> fig = plot_embedding({"teacher": f_t, "student": f_t[:, :2]}, y)
    >>> [ax.get_title().splitlines()[0] for ax in fig.axes[:2]]
    ['teacher', 'student']

    Reference:
        Chen, Wang, Xu, Xu, Tao. "Learning Student Networks via Feature
        Embedding", IEEE TNNLS 2020, Fig. 2.
    """
    features = _check_named(features, "features")
    if method not in ("pca", "tsne"):
        raise ValueError(
            f"`method` must be 'pca' or 'tsne'. Received: method={method!r}."
        )
    y = np.asarray(labels.numpy() if hasattr(labels, "numpy") else labels)
    if y.ndim == 2:
        y = y.argmax(axis=1)
    y = y.reshape(-1).astype(int)
    arrays = {}
    for label, f in features.items():
        f = _as_array(f, f"features[{label!r}]")
        f = f.reshape(len(f), -1)
        if len(f) != len(y):
            raise ValueError(
                f"features[{label!r}] has {len(f)} examples but `labels` has "
                f"{len(y)}. Pass the features and labels of the same images."
            )
        arrays[label] = f
    if len(y) < 3:
        raise ValueError(
            f"Need at least 3 examples to embed. Received {len(y)}."
        )
    rng = np.random.default_rng(seed)
    if len(y) > max_points:
        keep = np.sort(rng.choice(len(y), size=int(max_points),
                                  replace=False))
        y = y[keep]
        arrays = {label: f[keep] for label, f in arrays.items()}
    k = min(int(k), len(y) - 1)
    names = list(arrays)
    classes = np.unique(y)
    cmap_name = "tab10" if len(classes) <= 10 else "tab20"
    from matplotlib import colormaps

    cmap = colormaps[cmap_name]
    n = len(names)
    ncols = min(n, 4)
    nrows = math.ceil(n / ncols)
    fig = _figure(3.8 * ncols + 1.3, 3.7 * nrows + (0.5 if title else 0.3))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.remove()
    reference = arrays[names[0]]
    for ax, label in zip(axes, names):
        f = arrays[label]
        if method == "pca":
            points, explained = pca_2d(f)
            ax.set_xlabel(f"PC 1 ({explained[0]:.0%} of variance)",
                          fontsize=9)
            ax.set_ylabel(f"PC 2 ({explained[1]:.0%})", fontsize=9)
        else:
            from sklearn.manifold import TSNE

            perplexity = float(min(30, max(2, (len(f) - 1) // 3)))
            points = TSNE(n_components=2, init="pca", random_state=seed,
                          perplexity=perplexity).fit_transform(f)
            ax.set_xlabel("t-SNE 1", fontsize=9)
            ax.set_ylabel("t-SNE 2", fontsize=9)
        for i, c in enumerate(classes):
            mask = y == c
            ax.scatter(points[mask, 0], points[mask, 1], s=13,
                       color=cmap(i % cmap.N), alpha=0.75, linewidths=0)
        heading = f"{label}  ({f.shape[1]}-d)"
        if label != names[0]:
            heading = (f"{label}\n{k}-NN overlap with {names[0]}: "
                       f"{neighbour_overlap(reference, f, k=k):.2f}")
        else:
            heading = f"{label}\n{f.shape[1]}-d features (reference)"
        ax.set_title(heading, fontsize=10)
        ax.tick_params(labelsize=8)
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], marker="o", linestyle="", color=cmap(i % cmap.N),
               label=(class_names[c] if class_names is not None
                      else str(c)))
        for i, c in enumerate(classes)
    ]
    fig.legend(handles=handles, title="class", loc="outside right center",
               fontsize=9)
    fig.suptitle(title or f"Feature embeddings ({method.upper()}), coloured "
                 "by class", fontsize=12)
    _save(fig, path)
    return fig


# ----------------------------------------------------------------------------
# Accuracy vs size / latency.


def _check_points(points):
    if not isinstance(points, (list, tuple)) or not points:
        raise TypeError(
            "`points` must be a non-empty list of dicts with keys `label`, "
            "`role` ('teacher', 'scratch' or 'distilled'), `accuracy` (in "
            "percent) and `params` (or `latency_ms`). Received: "
            f"points={points!r}."
        )
    for i, p in enumerate(points):
        if not isinstance(p, dict) or "accuracy" not in p:
            raise TypeError(
                f"points[{i}] must be a dict with at least `label`, "
                f"`accuracy` (percent) and `params`. Received: {p!r}."
            )


def plot_accuracy_vs_params(points, path=None, *, x="params", title=None,
                            log_x=None):
    """Accuracy against parameter count (or latency) per model.

    Teacher (star), scratch student (square) and distilled students
    (circles, one colour each) on one chart: the size/accuracy trade-off
    distillation is about. Error bars show a standard deviation over seeds
    when given.

    Args:
        points: List of dicts, one per model, with keys `label` (str),
            `role` (`"teacher"`, `"scratch"` or `"distilled"`, default
            `"distilled"`), `accuracy` (percent), optional `accuracy_std`
            (percent), and the x value `params` (parameter count) or
            `latency_ms` (TFLite latency). Points without the x value are
            left out.
        path: Optional `.png` path to write.
        x: `"params"` or `"latency_ms"`.
        title: Figure title.
        log_x: Log-scale x axis; default when the values span more than a
            factor of 10.

    Returns:
        The `matplotlib.figure.Figure`.

    Example:

    >>> fig = plot_accuracy_vs_params([
    ...     {"label": "teacher", "role": "teacher", "params": 7.65e6,
    ...      "accuracy": 92.02},
    ...     {"label": "student", "role": "scratch", "params": 1.56e6,
    ...      "accuracy": 89.18},
    ...     {"label": "Both Two+KD", "params": 1.56e6, "accuracy": 91.67}])
    >>> fig.axes[0].get_xlabel()
    'parameters'
    """
    _check_points(points)
    if x not in ("params", "latency_ms"):
        raise ValueError(
            f"`x` must be 'params' or 'latency_ms'. Received: x={x!r}."
        )
    usable = [p for p in points if p.get(x) is not None
              and p.get("accuracy") is not None]
    if not usable:
        raise ValueError(
            f"No point has both `{x}` and `accuracy`. Received "
            f"{len(points)} points with keys "
            f"{sorted({k for p in points for k in p})}."
        )
    for p in usable:
        role = p.get("role", "distilled")
        if role not in ROLE_STYLES:
            raise ValueError(
                f"`role` must be one of {list(ROLE_STYLES)}. Received: "
                f"role={role!r} for point {p.get('label')!r}."
            )
    fig = _figure(9.6, 4.8)
    ax = fig.subplots()
    distilled_index = 0
    ordered = sorted(usable, key=lambda p: (
        _ROLE_ORDER.index(p.get("role", "distilled")),
        -float(p["accuracy"])))
    xs = [float(p[x]) for p in usable]
    if log_x is None:
        log_x = min(xs) > 0 and max(xs) / min(xs) > 10
    # Models of the same size (scratch and distilled students) would hide
    # each other's error bars: spread them a little around their x.
    same_x = {}
    for p in ordered:
        same_x.setdefault(float(p[x]), []).append(id(p))
    span = (max(xs) - min(xs)) or max(abs(max(xs)), 1.0)
    for p in ordered:
        role = p.get("role", "distilled")
        style = ROLE_STYLES[role]
        color = style["color"]
        if color is None:
            color = f"C{distilled_index % 10}"
            distilled_index += 1
        xv, yv = float(p[x]), float(p["accuracy"])
        group = same_x[xv]
        shift = group.index(id(p)) - (len(group) - 1) / 2
        x_drawn = (xv * 1.06 ** shift if log_x
                   else xv + 0.015 * span * shift)
        std = p.get("accuracy_std")
        where = (_format_count(xv) if x == "params" else f"{xv:.3g} ms")
        accuracy = f"{yv:.2f} ± {float(std):.2f} %" if std else f"{yv:.2f} %"
        label = f"{p.get('label', role)} — {accuracy} ({where})"
        if std:
            ax.errorbar(x_drawn, yv, yerr=float(std), color=color,
                        capsize=4, linewidth=1.2, zorder=2)
        ax.scatter([x_drawn], [yv], marker=style["marker"], s=style["size"],
                   color=color, edgecolors="white", linewidths=0.8,
                   label=label, zorder=3)
    if log_x:
        ax.set_xscale("log")
    if x == "params":
        from matplotlib.ticker import FuncFormatter

        ax.xaxis.set_major_formatter(FuncFormatter(_format_count))
        ax.set_xlabel("parameters")
    else:
        ax.set_xlabel("TFLite latency per image (ms)")
    lo, hi = min(xs), max(xs)
    if log_x:
        ax.set_xlim(lo / 1.6, hi * 1.6)
    else:
        pad = 0.15 * (hi - lo) if hi > lo else max(abs(hi) * 0.2, 1.0)
        ax.set_xlim(max(0.0, lo - pad) if lo >= 0 else lo - pad, hi + pad)
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3, which="both")
    fig.legend(loc="outside right upper", fontsize=9, frameon=False,
               title="model — accuracy (x)", title_fontsize=9)
    ax.set_title(title or ("Accuracy vs parameters" if x == "params"
                           else "Accuracy vs latency"), fontsize=12)
    _save(fig, path)
    return fig


def plot_method_comparison(results, path=None, *, baseline="student",
                           title=None, xlabel="test accuracy (%)"):
    """Grouped bars: each method's accuracy in each setting, mean ± std.

    One row per method (best first, by the mean over settings), one bar per
    setting (e.g. "6 labels/class"), with a standard deviation over seeds
    as an error bar when given. The `baseline` method (the student trained
    alone) is drawn as a dashed line per setting, so the bars that pass it
    are the methods that pay.

    Args:
        results: Dict `{setting: {method: (mean, std)}}` in percent; `std`
            may be `None` (one seed). Settings are drawn in order.
        path: Optional `.png` path to write.
        baseline: The method drawn as a line (also kept as a bar).
        title: Figure title.
        xlabel: Label of the accuracy axis.

    Returns:
        The `matplotlib.figure.Figure`.

    Example:

    >>> fig = plot_method_comparison({
    ...     "6 labels/class": {"student": (70.0, 2.0), "kd": (85.0, 1.0)},
    ...     "20 labels/class": {"student": (88.0, 1.0), "kd": (92.0, 0.5)}})
    >>> fig.axes[0].get_xlabel()
    'test accuracy (%)'
    """
    if not isinstance(results, dict) or not results or not all(
        isinstance(v, dict) and v for v in results.values()
    ):
        raise ValueError(
            "`results` must be a non-empty dict {setting: {method: (mean, "
            f"std)}}. Received: results={results!r}."
        )
    methods = []
    for table in results.values():
        for method, value in table.items():
            if not (isinstance(value, (tuple, list)) and len(value) == 2):
                raise ValueError(
                    f"Each result must be a (mean, std) pair. Received: "
                    f"{method!r}: {value!r}."
                )
            if method not in methods:
                methods.append(method)

    def overall(method):
        means = [t[method][0] for t in results.values() if method in t]
        return sum(means) / len(means)

    methods.sort(key=overall, reverse=True)
    settings = list(results)
    height = 0.8 / len(settings)
    fig = _figure(8.0, 1.2 + 0.42 * len(methods) * max(1, len(settings) / 2))
    ax = fig.subplots()
    positions = np.arange(len(methods))[::-1]
    for i, setting in enumerate(settings):
        table = results[setting]
        ys, means, stds = [], [], []
        for position, method in zip(positions, methods):
            if method not in table:
                continue
            mean, std = table[method]
            ys.append(position + 0.4 - (i + 0.5) * height)
            means.append(float(mean))
            stds.append(0.0 if std is None else float(std))
        color = f"C{i % 10}"
        ax.barh(ys, means, height=height * 0.9, xerr=stds, color=color,
                alpha=0.85, capsize=3, label=str(setting),
                error_kw={"elinewidth": 1})
        if baseline in table:
            ax.axvline(float(table[baseline][0]), color=color,
                       linestyle="--", linewidth=1.2)
    ax.set_yticks(positions)
    ax.set_yticklabels([f"{m} (alone)" if m == baseline else m
                        for m in methods])
    lows = [t[m][0] - (t[m][1] or 0.0) for t in results.values()
            for m in t]
    ax.set_xlim(max(0.0, min(lows) - 5.0), 100.0)
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3, axis="x")
    ax.legend(loc="lower right", fontsize=9,
              title=f"dashed: {baseline} alone", title_fontsize=8)
    ax.set_title(title or "Accuracy by method", fontsize=12)
    _save(fig, path)
    return fig


def plot_gain_by_budget(gains, path=None, *, title=None,
                        xlabel="student epochs"):
    """Lines: each method's gain over the student alone against the
    training budget, one panel per setting.

    The student alone is trained for the same number of steps at each
    budget, so a line above 0 is a method that pays at that budget.

    Args:
        gains: Dict `{setting: {method: {budget: (mean, std)}}}`, gains in
            points; `std` may be `None` (one seed). Budgets are numbers
            (e.g. epochs), drawn on a log-2 axis.
        path: Optional `.png` path to write.
        title: Figure title.
        xlabel: Label of the budget axis.

    Returns:
        The `matplotlib.figure.Figure`.

    Example:

    >>> fig = plot_gain_by_budget({"10 labels/class": {
    ...     "kd": {5: (-8.0, 2.0), 20: (5.0, 1.0)}}})
    >>> fig.axes[0].get_ylabel()
    'gain over the student alone (points)'
    """
    if not isinstance(gains, dict) or not gains or not all(
        isinstance(t, dict) and t and all(
            isinstance(c, dict) and c and all(
                isinstance(v, (tuple, list)) and len(v) == 2
                for v in c.values())
            for c in t.values())
        for t in gains.values()
    ):
        raise ValueError(
            "`gains` must be a non-empty dict {setting: {method: {budget: "
            f"(mean, std)}}}}}}. Received: gains={gains!r}."
        )
    settings = list(gains)
    fig = _figure(4.2 * len(settings) + 1.6, 3.6)
    axes = np.atleast_1d(fig.subplots(1, len(settings), sharey=True))
    methods = []
    for table in gains.values():
        methods += [m for m in table if m not in methods]
    for ax, setting in zip(axes, settings):
        for method, curve in gains[setting].items():
            budgets = sorted(curve)
            means = [float(curve[b][0]) for b in budgets]
            stds = [0.0 if curve[b][1] is None else float(curve[b][1])
                    for b in budgets]
            ax.errorbar(budgets, means, yerr=stds, marker="o", capsize=3,
                        color=f"C{methods.index(method) % 10}", label=method)
        ax.axhline(0.0, color="black", linestyle="--", linewidth=1)
        ax.set_xscale("log", base=2)
        ticks = sorted({b for c in gains[setting].values() for b in c})
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{b:g}" for b in ticks])
        ax.set_xlabel(xlabel)
        ax.set_title(str(setting), fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("gain over the student alone (points)")
    fig.legend(*axes[0].get_legend_handles_labels(),
               loc="outside right upper", fontsize=9, frameon=False)
    fig.suptitle(title or "Gain by training budget", fontsize=12)
    _save(fig, path)
    return fig


def _format_count(value, _position=None):
    if value >= 1e6:
        return f"{value / 1e6:.3g}M"
    if value >= 1e3:
        return f"{value / 1e3:.3g}k"
    return f"{value:g}"


# ----------------------------------------------------------------------------
# Features.


def layer_features(model, layer_name, x, *, batch_size=256):
    """Outputs of one named layer of a functional model for some inputs.

    Args:
        model: A functional (or Sequential) `keras.Model`.
        layer_name: Name of the layer whose output to return.
        x: Inputs: a NumPy array, a tensor, or a `tf.data.Dataset` of
            images or `(images, labels)` batches.
        batch_size: Batch size for arrays.

    Returns:
        A NumPy array of the layer's outputs, one row per input.

    Example:

    >>> from tfkd import testing
    >>> model = testing.tiny_conv_model("net", width=4)
    >>> x, _ = testing.random_images(5)
    >>> layer_features(model, "conv2", x).shape
    (5, 8, 8, 4)
    """
    import keras

    names = [layer.name for layer in getattr(model, "layers", [])]
    if layer_name not in names:
        raise ValueError(
            f"`layer_name`={layer_name!r} is not a layer of model "
            f"{getattr(model, 'name', model)!r}. Existing layers: {names}."
        )
    extractor = keras.Model(model.inputs,
                            model.get_layer(layer_name).output)

    def run(batch):
        # A direct call (inference mode) traces nothing, unlike `predict`
        # on a fresh model each time.
        return keras.ops.convert_to_numpy(
            extractor(batch if len(model.inputs) > 1 else [batch],
                      training=False))

    if hasattr(x, "element_spec"):  # tf.data.Dataset
        outputs = [run(batch[0] if isinstance(batch, tuple) else batch)
                   for batch in x]
    else:
        x = keras.ops.convert_to_numpy(x)
        outputs = [run(x[i:i + batch_size])
                   for i in range(0, len(x), batch_size)]
    if not outputs:
        raise ValueError("`x` holds no inputs. Pass at least one image.")
    return np.concatenate(outputs, axis=0)
