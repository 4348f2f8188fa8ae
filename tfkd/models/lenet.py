"""LeNet++-style networks with a tiny embedding: the LP paper's Fig. 2 pair.

The LP paper visualises the input of the softmax layer on MNIST with a
LeNet++ (Wen et al., 2016) teacher: six 5×5 conv layers of 32, 32, 64, 64,
128 and 128 filters (PReLU, 2×2 max pooling after each pair) and a
3-unit fully-connected feature layer; its student has half the filters per
conv layer and a 2-unit feature layer. The feature layer (`embedding`) is
the input of the classifier, so it can be plotted as is and tapped by the
LP loss.
"""

import keras

#: Conv widths of the teacher (the student halves them).
LENETPP_WIDTHS = (32, 32, 64, 64, 128, 128)
#: The feature layer both networks expose: the input of the classifier.
LENETPP_EMBEDDING = "embedding_prelu"
#: Initial PReLU slope of every PReLU layer: 0.25, as the PReLU paper (He et
#: al., 2015) and LeNet++ (Caffe's default) start. Keras's default, 0, makes
#: the PReLUs ReLUs at the start, and a 3-unit ReLU feature layer can die
#: before it learns: the Fig. 2 teacher then stayed near chance.
PRELU_INIT = 0.25


def lenetpp(widths=LENETPP_WIDTHS, embedding_units=3, num_classes=10,
            input_shape=(28, 28, 1), name="lenetpp"):
    """A LeNet++-style network: pairs of 5×5 PReLU convs, a small embedding.

    Layer names: `conv{i}` and `prelu{i}` (i = 1..len(widths)), `pool{j}`
    (after each pair), `flatten`, `embedding` (the `embedding_units`-unit
    dense layer, PReLU-activated as in LeNet++: `embedding_prelu`), `logits`.
    Every PReLU slope starts at `PRELU_INIT` (0.25, as LeNet++ and the
    PReLU paper), not at Keras's 0.

    Args:
        widths: Filters of each conv layer, an even number of positive
            ints (two convs per pooling stage).
        embedding_units: Units of the feature layer (3: the paper's
            teacher, 2: its student).
        num_classes: Number of output logits.
        input_shape: `(H, W, C)`.
        name: Model name.

    Returns:
        A functional `keras.Model` outputting logits.

    Example:

    >>> model = lenetpp(embedding_units=3)
    >>> model.get_layer("embedding").output.shape
    (None, 3)
    """
    widths = tuple(widths)
    if not widths or len(widths) % 2 or not all(
            isinstance(w, int) and not isinstance(w, bool) and w > 0
            for w in widths):
        raise ValueError(
            "`widths` must be an even number of positive ints (two convs "
            f"per pooling stage). Received: widths={widths!r}.")
    for arg, value in (("embedding_units", embedding_units),
                       ("num_classes", num_classes)):
        if isinstance(value, bool) or not isinstance(value, int) \
                or value < 1:
            raise ValueError(f"`{arg}` must be a positive int. Received: "
                             f"{arg}={value!r}.")
    inputs = keras.Input(tuple(input_shape), name="images")
    x = inputs
    for i, filters in enumerate(widths, start=1):
        x = keras.layers.Conv2D(filters, 5, padding="same",
                                name=f"conv{i}")(x)
        x = keras.layers.PReLU(
            alpha_initializer=keras.initializers.Constant(PRELU_INIT),
            shared_axes=(1, 2), name=f"prelu{i}")(x)
        if i % 2 == 0:
            x = keras.layers.MaxPooling2D(2, name=f"pool{i // 2}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(embedding_units, name="embedding")(x)
    features = keras.layers.PReLU(
        alpha_initializer=keras.initializers.Constant(PRELU_INIT),
        name="embedding_prelu")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(features)
    return keras.Model(inputs, outputs, name=name)


def lenetpp_teacher(num_classes=10, input_shape=(28, 28, 1), width=1.0):
    """The Fig. 2 teacher: LeNet++ widths, a 3-unit feature layer.

    Args:
        num_classes: Number of output logits.
        input_shape: `(H, W, C)`.
        width: Multiplier of every conv width (1.0: the paper's; smaller
            for quick runs).

    Returns:
        A `keras.Model` named `lenetpp_teacher`.

    Example:

    >>> lenetpp_teacher().get_layer("conv6").filters
    128
    """
    widths = tuple(max(1, round(w * width)) for w in LENETPP_WIDTHS)
    return lenetpp(widths, 3, num_classes, input_shape, "lenetpp_teacher")


def lenetpp_student(num_classes=10, input_shape=(28, 28, 1), width=1.0):
    """The Fig. 2 student: half the teacher's filters, a 2-unit feature
    layer.

    Args:
        num_classes: Number of output logits.
        input_shape: `(H, W, C)`.
        width: Multiplier of every conv width, on top of the halving.

    Returns:
        A `keras.Model` named `lenetpp_student`.

    Example:

    >>> lenetpp_student().get_layer("conv6").filters
    64
    """
    widths = tuple(max(1, round(w * width / 2)) for w in LENETPP_WIDTHS)
    return lenetpp(widths, 2, num_classes, input_shape, "lenetpp_student")
