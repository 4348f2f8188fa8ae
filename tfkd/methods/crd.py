"""Contrastive representation distillation (CRD): NCE against memory banks.

The pure parts of CRD: the loss of one batch given the rows drawn from the
two memory banks, the normalising constant `Z`, and the momentum update of
the bank rows. The banks themselves (two `(N, dim)` non-trainable
variables), the sampling of the negatives and the two embedding heads
belong to the knowledge term, which uses these functions as follows (the
authors' code does the same in `ContrastMemory.forward`):

1. Project and L2-normalise the features of the batch with a trainable
   linear head per network: `e_S`, `e_T`, both `(b, dim)` (`dim = 128` in
   the code).
2. Draw `idx`, `(b, K + 1)`: column 0 is each example's own index in the
   dataset, columns `1..K` are uniform over `[0, N)` (the code samples with
   replacement and does not exclude the positive; `K = 16384`).
3. Gather `teacher_bank_rows = teacher_bank[idx]` and `student_bank_rows =
   student_bank[idx]`, both `(b, K + 1, dim)`, without gradient.
4. On the first step, set the two normalisers once with
   `contrastive_normalizer` and keep them (e.g. in non-trainable
   variables) for the rest of training, as the code does.
5. `loss = contrastive_representation_loss(e_T, e_S, teacher_bank_rows,
   student_bank_rows, dataset_size=N, ...)`.
6. After computing the loss, write back the examples' own rows:
   `student_bank[own] = contrastive_memory_update(student_bank[own], e_S)`
   and likewise for the teacher bank with `e_T` (`own = idx[:, 0]`).

CRD contrasts each example's embedding from one network with the other
network's embedding of the same example (the positive) and of `K` other
examples (the negatives), kept in a memory bank. Besides the term, this
module provides `with_example_index`, which makes a `tf.data` pipeline carry
the example index that the authors' memory bank is addressed by.

One module holds the method whole: its pure function(s), its knowledge
term(s) and the term's `method` record (see `tfkd.methods`).
"""

import math

import keras
import numpy as np
import tensorflow as tf

from tfkd.losses._utils import _is_real_number
from tfkd.losses._utils import check_live
from tfkd.losses._utils import check_positive
from tfkd.losses._utils import check_positive_int
from tfkd.losses._utils import check_rank
from tfkd.losses._utils import check_same_shape
from tfkd.losses._utils import check_unit_interval
from tfkd.losses._utils import safe_l2_normalize
from tfkd.losses._utils import to_float32
from tfkd import hyperparameters as hp
from tfkd.terms.base import DistillationTerm
from tfkd.terms.base import Method


# Added to the NCE denominators, as in the authors' code.
_NCE_EPSILON = 1e-7


def _check_bank_rows(rows, rows_name, anchor, anchor_name):
    """`rows` must be `(b, K + 1, dim)`, `K >= 1`, matching the anchor."""
    check_rank(rows, rows_name, rank=3, layout="(batch, K + 1, dim)")
    if rows.shape[1] is not None and rows.shape[1] < 2:
        raise ValueError(
            f"`{rows_name}` must hold the positive (row 0) and at least one "
            f"negative: shape (batch, K + 1, dim) with K >= 1. Received: "
            f"{rows_name}.shape={tuple(rows.shape)}."
        )
    if not (rows.shape[:1].is_compatible_with(anchor.shape[:1])
            and rows.shape[2:].is_compatible_with(anchor.shape[1:])):
        raise ValueError(
            f"`{rows_name}` must have the batch size and the embedding size "
            f"of `{anchor_name}`: (batch, K + 1, dim) for (batch, dim). "
            f"Received: {rows_name}.shape={tuple(rows.shape)}, "
            f"{anchor_name}.shape={tuple(anchor.shape)}."
        )


def _scores(anchor, rows, temperature):
    """`⟨rows[b, k], anchor[b]⟩ / τ`, `(b, K + 1)`; the bank rows carry no
    gradient (the code detaches them)."""
    rows = tf.stop_gradient(rows)
    return tf.einsum("bkd,bd->bk", rows, anchor) / temperature


def _log_normalizer(scores, dataset_size):
    """`log Z`, `Z = N · mean(exp(scores))`, without gradient."""
    count = tf.cast(tf.size(scores), tf.float32)
    return tf.stop_gradient(tf.reduce_logsumexp(scores) - tf.math.log(count)
                            + math.log(dataset_size))


def _normalizer_log(normalizer, name):
    """`log Z` of a positive number or scalar tensor given by the caller."""
    if _is_real_number(normalizer):
        return tf.constant(math.log(check_positive(normalizer, name)))
    # A tensor or variable (e.g. the term's stored Z): checked for its
    # shape only, its value may not be known until run time.
    z = to_float32(normalizer, name)
    check_rank(z, name, rank=0, layout="(a scalar)")
    return tf.stop_gradient(tf.math.log(z))


def _nce_per_example(positive, negatives, log_z, dataset_size):
    """The authors' `ContrastLoss` per anchor, in log space.

    `positive`: `(b,)` scores `⟨r_0, a⟩ / τ`; `negatives`: `(b, K)` scores
    `⟨r_k, a⟩ / τ`; `P = exp(score) / Z`, `c = K / N`; returns `(b,)`:
    `−log P_0 / (P_0 + c + ε) − Σ_k log c / (P_k + c + ε)`. Its batch mean
    is `tfkd.losses.contrastive_representation_loss`'s value for one side.
    The positive and the negatives stay apart, and the constant part of
    each negative is added once per anchor: with `K = 16384` every pass
    over the `(b, K)` scores is a sizeable share of a student's step.
    """
    k = tf.shape(negatives)[1]
    c = tf.cast(k, tf.float32) / float(dataset_size)
    log_c_eps = tf.math.log(c + _NCE_EPSILON)
    # log(P / (P + c + ε)) = −softplus(log(c + ε) − log P), and
    # log(c / (P + c + ε)) = log(c / (c + ε)) − softplus(log P −
    # log(c + ε)): finite and exact for any score.
    shift = tf.stop_gradient(log_z + log_c_eps)
    positive = tf.nn.softplus(shift - positive)
    negatives = tf.reduce_sum(tf.nn.softplus(negatives - shift), axis=1)
    constant = tf.cast(k, tf.float32) * (tf.math.log(c) - log_c_eps)
    return positive + negatives - constant


def _nce_loss(scores, log_z, dataset_size):
    """The code's `ContrastLoss` on `P = exp(scores) / Z`, in log space:
    `scores` `(b, K + 1)`, the positive first; the batch mean of
    `_nce_per_example`."""
    per_example = _nce_per_example(scores[:, 0], scores[:, 1:], log_z,
                                   dataset_size)
    return tf.reduce_sum(per_example) / tf.cast(tf.shape(scores)[0],
                                                tf.float32)


def contrastive_normalizer(anchor_embeddings, bank_rows, *, dataset_size,
                           temperature=0.07):
    """The NCE normalising constant `Z` of CRD, estimated from one batch.

    `Z = N · mean_{b,k} exp(⟨bank_rows[b, k], anchor[b]⟩ / τ)`: the
    authors' code sets it once, on the first batch, for each side
    (`Z_v1` with the student as anchor and rows of the teacher bank,
    `Z_v2` the other way round) and keeps it for the rest of training.

    Args:
        anchor_embeddings: Tensor of shape `(b, dim)`.
        bank_rows: Tensor of shape `(b, K + 1, dim)`: rows of the *other*
            network's memory bank.
        dataset_size: `N`, the number of rows of a memory bank.
        temperature: `τ > 0` (code: 0.07).

    Returns:
        Scalar float32 tensor, without gradient.

    Example:

    >>> anchor = [[1.0, 0.0]]
    >>> rows = [[[1.0, 0.0], [0.0, 1.0]]]
    >>> z = contrastive_normalizer(anchor, rows, dataset_size=10,
    ...                            temperature=1.0)
    >>> round(float(z), 4)  # 10 · (e + 1) / 2
    18.5914
    """
    dataset_size = check_positive_int(dataset_size, "dataset_size")
    temperature = check_live(check_positive, temperature, "temperature")
    anchor = to_float32(anchor_embeddings, "anchor_embeddings")
    rows = to_float32(bank_rows, "bank_rows")
    check_rank(anchor, "anchor_embeddings", rank=2, layout="(batch, dim)")
    _check_bank_rows(rows, "bank_rows", anchor, "anchor_embeddings")
    return tf.exp(_log_normalizer(_scores(anchor, rows, temperature),
                                  dataset_size))


def contrastive_memory_update(bank_rows, embeddings, *, momentum=0.5):
    """Momentum update of memory-bank rows: `l2_normalize(m·rows + (1 − m)·e)`.

    The knowledge term calls it on the rows of the examples of the batch
    (their own dataset indices) after computing the loss, and writes the
    result back into the bank (e.g. `bank.scatter_update(
    tf.IndexedSlices(updated, own_indices))`). No gradient flows through
    the update. An all-zero result stays 0 (the code would divide by 0).

    Args:
        bank_rows: Tensor of shape `(b, dim)`: the current rows.
        embeddings: Tensor of shape `(b, dim)`: the batch's L2-normalised
            embeddings from the same network.
        momentum: `m` in `[0, 1]`: the weight of the old rows (code: 0.5).

    Returns:
        Tensor of shape `(b, dim)`, float32, rows of unit L2 norm.

    Example:

    >>> contrastive_memory_update([[1.0, 0.0]], [[0.0, 1.0]]).numpy()
    array([[0.70710677, 0.70710677]], dtype=float32)
    """
    momentum = check_live(check_unit_interval, momentum, "momentum")
    rows = to_float32(bank_rows, "bank_rows")
    e = to_float32(embeddings, "embeddings")
    check_rank(rows, "bank_rows", rank=2, layout="(batch, dim)")
    check_same_shape(rows, e, "bank_rows", "embeddings")
    mixed = momentum * rows + (1.0 - momentum) * e
    return tf.stop_gradient(safe_l2_normalize(mixed, axis=-1))


def contrastive_representation_loss(teacher_embeddings, student_embeddings,
                                    teacher_bank_rows, student_bank_rows, *,
                                    dataset_size, temperature=0.07,
                                    teacher_normalizer=None,
                                    student_normalizer=None):
    """Contrastive representation distillation loss (CRD, batch-level).

    CRD maximises a lower bound on the mutual information between the
    teacher's and the student's representations with noise-contrastive
    estimation (NCE): each embedding is the anchor of one positive and `K`
    negatives drawn from the *other* network's memory bank. For an anchor
    `a` and bank rows `r_0` (positive) and `r_1..r_K` (negatives),

    `P_k = exp(⟨r_k, a⟩ / τ) / Z`, `c = K / N`,

    `L_anchor = −(1/b) Σ_b [log P_0 / (P_0 + c + ε) + Σ_k log c / (P_k + c
    + ε)]`, `ε = 1e-7`,

    and `L = L_teacher_anchor + L_student_anchor` (teacher embeddings
    against rows of the student bank, and the reverse). This is the
    authors' released code (`ContrastLoss` on `ContrastMemory`'s scores),
    which tfkd follows where the paper is silent or differs:

    - the positive is the *memory-bank* row of the example's own dataset
      index (row 0 of the bank rows), not the other network's live
      embedding as in the paper's equations;
    - the scores are divided by a normalising constant `Z` per side,
      estimated once on the first batch (`contrastive_normalizer`) and
      then fixed; the paper's critic has no `Z`;
    - `ε = 1e-7` in the denominators.

    Everything is computed in log space, so the loss stays finite for any
    score. The bank rows and the normalisers carry no gradient; both
    embeddings do (they come from trainable heads).

    See the module docstring for how a knowledge term drives the banks.

    Args:
        teacher_embeddings: Tensor of shape `(b, dim)`: the teacher's
            projected, L2-normalised embeddings.
        student_embeddings: Tensor of the same shape: the student's.
        teacher_bank_rows: Tensor of shape `(b, K + 1, dim)`: rows of the
            teacher's memory bank, the example's own row first then `K`
            negatives; contrasted with the student embeddings.
        student_bank_rows: Tensor of shape `(b, K' + 1, dim)`: the same
            rows of the student's memory bank; contrasted with the teacher
            embeddings.
        dataset_size: `N`, the number of rows of each memory bank (the
            training-set size), an integer `>= 1`.
        temperature: NCE temperature `τ > 0` (code: 0.07).
        teacher_normalizer: `Z` of the teacher-anchored scores (the code's
            `Z_v2`), a number `> 0` or a scalar tensor, or `None` to
            estimate it from this batch.
        student_normalizer: `Z` of the student-anchored scores (`Z_v1`),
            likewise.

    Returns:
        Scalar float32 tensor.

    Example:

    >>> e = [[1.0, 0.0], [0.0, 1.0]]
    >>> rows = [[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]]
    >>> loss = contrastive_representation_loss(
    ...     e, e, rows, rows, dataset_size=4, temperature=0.5,
    ...     teacher_normalizer=8.0, student_normalizer=8.0)
    >>> round(float(loss), 4)
    1.29

    Reference:
        Tian, Krishnan, Isola, "Contrastive Representation Distillation",
        ICLR 2020, eqs. 18–19. Code:
        https://github.com/HobbitLong/RepDistiller (`crd/criterion.py`,
        `crd/memory.py`).
    """
    dataset_size = check_positive_int(dataset_size, "dataset_size")
    temperature = check_live(check_positive, temperature, "temperature")
    t = to_float32(teacher_embeddings, "teacher_embeddings")
    s = to_float32(student_embeddings, "student_embeddings")
    t_rows = to_float32(teacher_bank_rows, "teacher_bank_rows")
    s_rows = to_float32(student_bank_rows, "student_bank_rows")
    check_rank(t, "teacher_embeddings", rank=2, layout="(batch, dim)")
    check_same_shape(t, s, "teacher_embeddings", "student_embeddings")
    _check_bank_rows(t_rows, "teacher_bank_rows", s, "student_embeddings")
    _check_bank_rows(s_rows, "student_bank_rows", t, "teacher_embeddings")

    total = tf.constant(0.0)
    for anchor, rows, normalizer, name in (
            (t, s_rows, teacher_normalizer, "teacher_normalizer"),
            (s, t_rows, student_normalizer, "student_normalizer")):
        scores = _scores(anchor, rows, temperature)
        if normalizer is None:
            log_z = _log_normalizer(scores, dataset_size)
        else:
            log_z = _normalizer_log(normalizer, name)
        total += _nce_loss(scores, log_z, dataset_size)
    return total


#: Key of the example index in a batch's input dict (the images are under
#: `"images"`, see `tfkd.checks.split_cached_inputs`).
INDEX_KEY = "index"

_MASK32 = 0xFFFFFFFF


def with_example_index(dataset):
    """Makes each example of a dataset carry its index, for CRD's memory bank.

    Maps the elements `(images, labels)` (or `(images, labels,
    sample_weights)`) of an **unbatched** dataset to `({"images": images,
    "index": i}, labels[, sample_weights])`, `i` the element's position
    (int64). Apply it before `shuffle` and `batch`, so that each index
    stays with its example; the distiller gives the networks the images
    only and passes the index to `ContrastiveRepresentationDistillation`.
    With NumPy arrays, pass the dict yourself: `distiller.fit({"images":
    x, "index": np.arange(len(x))}, y, ...)`.

    Args:
        dataset: An unbatched `tf.data.Dataset` of `(images, labels)` or
            `(images, labels, sample_weights)` tuples.

    Returns:
        The mapped `tf.data.Dataset`.

    Example:

    >>> import numpy as np
    >>> import tensorflow as tf
    >>> images = np.zeros((5, 8, 8, 1), "float32")
    >>> labels = np.arange(5)
    >>> data = with_example_index(
    ...     tf.data.Dataset.from_tensor_slices((images, labels)))
    >>> data = data.shuffle(5, seed=0).batch(5)
    >>> x, y = next(iter(data))
    >>> sorted(x), bool(np.all(x["index"].numpy() == y.numpy()))
    (['images', 'index'], True)
    """
    if not isinstance(dataset, tf.data.Dataset):
        raise TypeError(
            "`with_example_index` takes an unbatched `tf.data.Dataset` of "
            "`(images, labels)`. Received: dataset of type "
            f"{type(dataset).__name__}. For NumPy arrays pass "
            "`{'images': x, 'index': np.arange(len(x))}` as `x` instead."
        )
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) not in (2, 3):
        raise ValueError(
            "`with_example_index` expects elements `(images, labels)` or "
            "`(images, labels, sample_weights)`. Received element_spec="
            f"{spec}."
        )
    first = tf.nest.flatten(spec[0])[0]
    if first.shape.rank and first.shape[0] is None:
        raise ValueError(
            "`with_example_index` needs an unbatched dataset (one example "
            "per element) so that each index names one example; this one "
            f"looks batched (images spec {spec[0]}). Apply it before "
            "`.batch()` (and before `.shuffle()`)."
        )

    def attach(index, element):
        return ({"images": element[0], INDEX_KEY: index},) + tuple(
            element[1:])

    return dataset.enumerate().map(attach)


def _mix32(x):
    """A 32-bit integer hash (`lowbias32`) of int64 values in [0, 2³²)."""
    xor, shift = tf.bitwise.bitwise_xor, tf.bitwise.right_shift

    def mul(x, c):
        # (x · c) mod 2³² from 16-bit halves: no int64 overflow.
        low = tf.bitwise.bitwise_and(x, 0xFFFF)
        high = shift(x, 16)
        cross = tf.bitwise.left_shift(high * (c & 0xFFFF), 16)
        return tf.bitwise.bitwise_and(low * c + cross, _MASK32)

    x = xor(x, shift(x, 16))
    x = mul(x, 0x7FEB352D)
    x = xor(x, shift(x, 15))
    x = mul(x, 0x846CA68B)
    return xor(x, shift(x, 16))


def _low32(x):
    return tf.bitwise.bitwise_and(x, _MASK32)


def _gather_replicas(value):
    """`value` of every replica, concatenated in replica order (the global
    batch under `tf.distribute`; `value` itself otherwise)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_gather(value, axis=0)


@keras.saving.register_keras_serializable(package="tfkd")
class ContrastiveRepresentationDistillation(DistillationTerm):
    """Contrastive representation distillation: NCE between the two
    networks' embeddings against a memory bank of negatives.

    The term owns two embedding heads (a linear layer to `embedding_dim`,
    then L2 normalisation, on the flattened tapped features of the teacher
    and of the student, as the authors' `Embed`), and two memory banks of
    embeddings (`(rows, embedding_dim)` non-trainable variables, one per
    network, saved and restored with the distiller). For an anchor `a`
    (an embedding of one network), its positive `r_0` and `K` negatives
    `r_1..r_K` (rows of the *other* network's bank), `P_k = exp(⟨r_k,
    a⟩ / τ) / Z` and `c = K / N`:

    `ℓ(a) = −log P_0 / (P_0 + c + ε) − Σ_k log c / (P_k + c + ε)`,

    and the term is, per example, `ℓ(e_T) + ℓ(e_S)` (the batch mean is
    `tfkd.losses.contrastive_representation_loss`). `Z` is estimated once
    per side, on the first training batch (`N · mean exp(scores)`), and
    kept, as the authors' code does.

    Two ways to keep the bank, chosen by `dataset_size`:

    - **Memory bank** (`dataset_size=N`, the authors' code): one row per
      training example, addressed by the example's index, which the batch
      must carry (`{"images": ..., "index": ...}`, see
      `with_example_index`). The positive is the bank row at the example's
      own index; the `K` negatives are rows drawn uniformly with
      replacement for each example; after the step the examples' rows
      become `l2_normalize(m · row + (1 − m) · e)`
      (`tfkd.losses.contrastive_memory_update`).
    - **Queue** (`dataset_size=None`, default; no index needed, e.g.
      `tfkd demo` and `tfkd tune`, which feed plain `(images, labels)`):
      each bank is a first-in-first-out queue of the `num_negatives` most
      recent embeddings, all of them the negatives of every anchor
      (`N = K`); the positive is the other network's embedding of the same
      example, as in the paper's critic (no gradient through it).

    Banks, `Z`, the queue position and the step counter change only in
    training steps (`fit`), never in `evaluate` or `predict`. Without an
    index (validation data, the queue), the positive is the other
    network's live embedding; in evaluation the memory bank's negatives
    are the same `K` rows for every example of the batch.

    Under `tf.distribute` each replica scores its own examples against
    the same banks (mirrored, non-trainable variables with
    `aggregation="only_first_replica"`); `Z` is estimated over the global
    batch, and every replica writes the whole global batch's embeddings
    (gathered across replicas, in replica order) into the banks, so the
    replicas' banks stay identical and training equals one device with
    the same global batch. The memory bank's negatives are a hash of
    `(seed, step, example index, k)`, the same for an example whichever
    replica holds it.

    Memory: the scores are computed from the `(batch, N)` matrix of inner
    products with a bank (`N = dataset_size`, or `num_negatives` for the
    queue); the banks hold `2 · N · embedding_dim` floats.

    The authors' objective is `CE + β · L_CRD` with `β = 0.8` (CIFAR-100):
    the method `crd` builds `tfkd.Distiller(teacher, student, [term],
    distillation_loss_weights=[0.8], student_loss_weight=0.5)`, i.e. that
    objective divided by 2.

    Args:
        teacher_layer_name: The teacher layer to embed (the authors: the
            penultimate, pooled features).
        student_layer_name: The student layer to embed.
        dataset_size: `N`, the number of training examples: one bank row
            each, addressed by the example index the batch carries. `None`
            (default): the queue of the `num_negatives` most recent
            embeddings, no index.
        num_negatives: `K`, negatives per anchor (code: 16384); with the
            queue, also its length.
        embedding_dim: Size of the embeddings (code: 128).
        temperature: NCE temperature `τ > 0` (code: 0.07); live.
        momentum: Weight `m` in `[0, 1]` of the old bank row in its update
            (code: 0.5); live.
        seed: Seed of the banks' initial values and of the negatives.
        guided_channels: See `tfkd.terms.DistillationTerm`.
        **kwargs: Layer arguments (`name`, default `"crd"`).

    Example:

    >>> import numpy as np
    >>> import tfkd
    >>> from tfkd import testing
    >>> x, y = testing.random_images(32)
    >>> term = ContrastiveRepresentationDistillation(
    ...     "pool", "pool", dataset_size=len(x), num_negatives=16,
    ...     embedding_dim=8)
    >>> distiller = tfkd.Distiller(
    ...     testing.tiny_conv_model("teacher", width=8),
    ...     testing.tiny_conv_model("student", width=4), [term],
    ...     distillation_loss_weights=[0.8])
    >>> distiller.compile(optimizer="adam")
    >>> history = distiller.fit({"images": x, "index": np.arange(32)}, y,
    ...                         batch_size=16, verbose=0)
    >>> sorted(history.history)
    ['crd_loss', 'distillation_loss', 'loss', 'student_loss', 'total_loss']
    >>> tuple(term.student_memory.shape), int(term.steps.numpy())
    ((32, 8), 2)

    Reference:
        Tian, Krishnan, Isola, "Contrastive Representation Distillation",
        ICLR 2020, eqs. 18-19; code: github.com/HobbitLong/RepDistiller
        (`crd/criterion.py`, `crd/memory.py`).
    """

    method = Method(
        name="crd",
        embedding=True,
        description="contrastive representation distillation: NCE between "
                    "teacher and student embeddings against a memory bank",
        paper="Tian et al., ICLR 2020",
        weight=0.8,
        student_loss_weight=0.5,
        soft_targets=True,
        # The paper's ablations: K from 16 to 16384, tau from 0.02 to 0.3;
        # beta 0.8 on CIFAR-100 (0.2 on CIFAR-10 in other codes).
        search_space={
            "weight": {"type": "float", "min_value": 0.1, "max_value": 2.0,
                       "sampling": "log"},
            "temperature": {"type": "float", "min_value": 0.02,
                            "max_value": 0.3, "sampling": "log"},
            # Powers of two (a log-sampled int steps by a factor).
            "num_negatives": {"type": "int", "min_value": 256,
                              "max_value": 16384, "step": 2,
                              "sampling": "log"},
            "student_loss_weight": {"type": "float", "min_value": 0.1,
                                    "max_value": 0.9},
        },
    )
    uses_inputs = True

    temperature = hp.Hyperparameter(hp.positive, doc="NCE temperature.")
    momentum = hp.Hyperparameter(hp.unit_interval,
                                 doc="Weight of the old bank row.")

    def __init__(self, teacher_layer_name=None, student_layer_name=None, *,
                 dataset_size=None, num_negatives=16384, embedding_dim=128,
                 temperature=0.07, momentum=0.5, seed=0,
                 guided_channels=None, **kwargs):
        kwargs.setdefault("name", "crd")
        if isinstance(teacher_layer_name, (list, tuple)) or isinstance(
                student_layer_name, (list, tuple)):
            raise ValueError(
                "ContrastiveRepresentationDistillation contrasts one "
                "embedding per network: tap one layer of each. Received: "
                f"teacher_layer_name={teacher_layer_name!r}, "
                f"student_layer_name={student_layer_name!r}."
            )
        super().__init__(teacher_layer_name, student_layer_name,
                         guided_channels=guided_channels, **kwargs)
        self.dataset_size = None if dataset_size is None else \
            check_positive_int(dataset_size, "dataset_size")
        self.num_negatives = check_positive_int(num_negatives,
                                                "num_negatives")
        self.embedding_dim = check_positive_int(embedding_dim,
                                                "embedding_dim")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(
                f"`seed` must be an int. Received: seed={seed!r} of type "
                f"{type(seed).__name__}."
            )
        self.seed = int(seed)
        self.temperature = temperature
        self.momentum = momentum
        self.teacher_head = None
        self.student_head = None

    # ------------------------------------------------------------------
    # Parts: heads, banks, normalisers, counters.

    @property
    def memory_size(self):
        """Rows of each bank: `dataset_size`, or `num_negatives` for the
        queue."""
        return self.dataset_size or self.num_negatives

    def build_parts(self, teacher, student, teacher_shapes, student_shapes):
        dims = []
        for role, shape, name in (
                ("teacher", teacher_shapes[0], self.teacher_taps[0]),
                ("student", student_shapes[0], self.student_taps[0])):
            if shape is None or len(shape) < 2 or None in shape[1:]:
                raise ValueError(
                    "ContrastiveRepresentationDistillation sizes its "
                    "embedding heads from the tapped features, which need a "
                    f"known size. The {role} layer {name!r} outputs shape "
                    f"{shape}. Tap a layer with a static shape (e.g. the "
                    "pooled features)."
                )
            dims.append(int(np.prod(shape[1:])))
        self.teacher_head = self._head("teacher", dims[0])
        self.student_head = self._head("student", dims[1])
        rows, dim = self.memory_size, self.embedding_dim
        # The authors' initial rows: uniform in ±1/sqrt(dim / 3).
        bound = 1.0 / math.sqrt(dim / 3.0)
        self.teacher_memory = self._state(
            "teacher_memory", (rows, dim), keras.initializers.RandomUniform(
                -bound, bound, seed=self.seed))
        self.student_memory = self._state(
            "student_memory", (rows, dim), keras.initializers.RandomUniform(
                -bound, bound, seed=self.seed + 1))
        # Z of the teacher-anchored (code: Z_v2) and the student-anchored
        # (Z_v1) scores; <= 0 until the first training step sets them.
        self.teacher_normalizer = self._state(
            "teacher_normalizer", (), keras.initializers.Constant(-1.0))
        self.student_normalizer = self._state(
            "student_normalizer", (), keras.initializers.Constant(-1.0))
        self.steps = self._state("steps", (), "zeros", dtype="int64")
        self.queue_position = self._state("queue_position", (), "zeros",
                                          dtype="int64")

    def _head(self, role, dim):
        head = keras.layers.Dense(self.embedding_dim, dtype="float32",
                                  name=f"{self.name}_{role}_head")
        head.build((None, dim))
        return head

    def _state(self, name, shape, initializer, dtype="float32"):
        # `autocast=False`: `.value` is the variable itself (scatter
        # updates), never a float16 copy under a mixed-precision scope.
        return self.add_weight(name=name, shape=shape, dtype=dtype,
                               initializer=initializer, trainable=False,
                               autocast=False,
                               aggregation="only_first_replica")

    # ------------------------------------------------------------------
    # The loss.

    def embed(self, head, features):
        """L2-normalised embeddings `(batch, embedding_dim)` of features."""
        features = tf.cast(features, tf.float32)
        flat = tf.reshape(features, [tf.shape(features)[0], -1])
        return safe_l2_normalize(head(flat), axis=-1)

    def _index(self, inputs, training):
        index = inputs.get(INDEX_KEY) if isinstance(inputs, dict) else None
        if index is not None and self.dataset_size is None:
            raise ValueError(
                "The batch carries an example index, but "
                "ContrastiveRepresentationDistillation was built with "
                "dataset_size=None (the queue, which needs no index). Pass "
                "dataset_size=<number of training examples> to use the "
                "authors' memory bank addressed by the index."
            )
        if index is None and training and self.dataset_size is not None:
            raise ValueError(
                f"ContrastiveRepresentationDistillation(dataset_size="
                f"{self.dataset_size}) keeps one bank row per training "
                "example, addressed by the example's index: training batches "
                "must be dicts {'images': ..., 'index': ...}. Received a "
                "batch without 'index'. Map the unbatched training data with "
                "`tfkd.methods.crd.with_example_index` before shuffling and "
                "batching (NumPy: `fit({'images': x, 'index': "
                "np.arange(len(x))}, y)`), or pass dataset_size=None for the "
                "queue, which needs no index."
            )
        if index is None:
            return None
        index = tf.reshape(tf.cast(index, tf.int64), [-1])
        checks = [
            tf.debugging.assert_less(
                index, tf.constant(self.dataset_size, tf.int64),
                message=(f"An example index is >= dataset_size="
                         f"{self.dataset_size}: the bank has one row per "
                         "training example; pass the training set's "
                         "size.")),
            tf.debugging.assert_non_negative(
                index, message="An example index is negative: indices "
                               "count the training examples from 0."),
        ]
        with tf.control_dependencies(checks):
            return tf.identity(index)

    def _negatives(self, keys):
        """`(b, K)` bank rows drawn uniformly for each key (an example
        index, or 0 for every example in evaluation)."""
        seed = _mix32(tf.constant(self.seed & _MASK32, tf.int64))
        step = _mix32(tf.bitwise.bitwise_xor(
            _low32(tf.cast(tf.convert_to_tensor(self.steps), tf.int64)),
            seed))
        base = _mix32(tf.bitwise.bitwise_xor(_low32(keys), step))[:, None]
        k = tf.range(1, self.num_negatives + 1, dtype=tf.int64)
        draws = _mix32(_low32(base + k[None, :] * 0x9E3779B9))
        return draws % self.dataset_size

    def _log_normalizer(self, variable, positive, negatives, training):
        """`log Z`: the stored value, or (first training step, or evaluation
        before any training) `N · mean exp(scores)` over the global
        batch, stored when training."""
        stored = tf.convert_to_tensor(variable)
        known = stored > 0.0

        def local_sums():
            # log Σ exp over this replica's scores, and their count.
            lse = tf.reduce_logsumexp(tf.stack([
                tf.reduce_logsumexp(positive),
                tf.reduce_logsumexp(negatives)]))
            return lse, tf.cast(tf.size(positive) + tf.size(negatives),
                                tf.float32)

        # The estimate is needed once: later steps skip the pass over the
        # scores (the branch holds no collective; the gathers below
        # run on every replica whichever branch is taken).
        lse, count = tf.cond(
            known, lambda: (tf.constant(0.0), tf.constant(1.0)), local_sums)
        lse = _gather_replicas(tf.reshape(lse, [1]))
        count = _gather_replicas(tf.reshape(count, [1]))
        estimate = tf.stop_gradient(
            tf.reduce_logsumexp(lse) - tf.math.log(tf.reduce_sum(count))
            + math.log(self._noise_size))
        log_z = tf.where(known, tf.math.log(tf.maximum(stored, 1e-30)),
                         estimate)
        if training:
            value = tf.exp(log_z)
            self.update_state_later(lambda: variable.assign(value))
        return log_z

    @property
    def _noise_size(self):
        return self.memory_size

    def call(self, teacher_outputs, student_outputs, labels=None,
             training=False, inputs=None):
        if self.teacher_head is None:
            raise ValueError(
                "ContrastiveRepresentationDistillation builds its embedding "
                "heads and memory banks from the tapped shapes when it "
                "joins a distiller; this term has not been bound yet. Pass "
                "it to `tfkd.Distiller(teacher, student, [term])` first."
            )
        index = self._index(inputs, training)
        e_t = self.embed(self.teacher_head, teacher_outputs)
        e_s = self.embed(self.student_head,
                         self.student_feature(0, student_outputs))
        # Dividing the (b, dim) anchors by τ rather than the (b, N) scores.
        inverse_tau = 1.0 / tf.cast(self.temperature, tf.float32)
        a_t, a_s = e_t * inverse_tau, e_s * inverse_tau
        memory_t = tf.stop_gradient(tf.convert_to_tensor(self.teacher_memory))
        memory_s = tf.stop_gradient(tf.convert_to_tensor(self.student_memory))
        # Teacher anchors against the student's bank, and the reverse.
        full_t = tf.matmul(a_t, memory_s, transpose_b=True)
        full_s = tf.matmul(a_s, memory_t, transpose_b=True)
        if self.dataset_size is not None and index is not None:
            positive_t = tf.gather(full_t, index[:, None], batch_dims=1)[:, 0]
            positive_s = tf.gather(full_s, index[:, None], batch_dims=1)[:, 0]
            drawn = self._negatives(index)
            negatives_t = tf.gather(full_t, drawn, batch_dims=1)
            negatives_s = tf.gather(full_s, drawn, batch_dims=1)
        else:
            # The paper's positive: the other network's embedding.
            positive_t = tf.reduce_sum(a_t * tf.stop_gradient(e_s), -1)
            positive_s = tf.reduce_sum(a_s * tf.stop_gradient(e_t), -1)
            if self.dataset_size is None:
                negatives_t, negatives_s = full_t, full_s
            else:
                shared = self._negatives(
                    tf.zeros_like(positive_t, dtype=tf.int64))
                negatives_t = tf.gather(full_t, shared, batch_dims=1)
                negatives_s = tf.gather(full_s, shared, batch_dims=1)
        log_z_t = self._log_normalizer(self.teacher_normalizer, positive_t,
                                       negatives_t, training)
        log_z_s = self._log_normalizer(self.student_normalizer, positive_s,
                                       negatives_s, training)
        value = (_nce_per_example(positive_t, negatives_t, log_z_t,
                                  self._noise_size)
                 + _nce_per_example(positive_s, negatives_s, log_z_s,
                                    self._noise_size))
        if training:
            self._update(index, e_t, e_s)
        return value

    def _update(self, index, e_t, e_s):
        """Writes the global batch's embeddings into the banks (computed
        now, written by `update_state_later`: only if the step is kept)."""
        e_t = tf.stop_gradient(_gather_replicas(e_t))
        e_s = tf.stop_gradient(_gather_replicas(e_s))
        if self.dataset_size is not None:
            rows = _gather_replicas(index)
            writes = []
            for memory, e in ((self.teacher_memory, e_t),
                              (self.student_memory, e_s)):
                old = tf.gather(tf.convert_to_tensor(memory), rows)
                new = contrastive_memory_update(old, e,
                                                momentum=self.momentum)
                writes.append((memory, tf.IndexedSlices(new, rows)))
            position = None
        else:
            size = tf.cast(self.memory_size, tf.int64)
            count = tf.cast(tf.shape(e_t)[0], tf.int64)
            # A batch longer than the queue keeps its last `size` rows.
            start = tf.maximum(count - size, 0)
            position = tf.convert_to_tensor(self.queue_position)
            rows = (position + start + tf.range(count - start,
                                                dtype=tf.int64)) % size
            writes = [(memory, tf.IndexedSlices(e[start:], rows))
                      for memory, e in ((self.teacher_memory, e_t),
                                        (self.student_memory, e_s))]
            position = (position + count) % size

        def write():
            for memory, rows_update in writes:
                memory.value.scatter_update(rows_update)
            if position is not None:
                self.queue_position.assign(position)
            self.steps.assign_add(1)

        self.update_state_later(write)

    def get_config(self):
        config = super().get_config()
        config.update({
            "dataset_size": self.dataset_size,
            "num_negatives": self.num_negatives,
            "embedding_dim": self.embedding_dim,
            "temperature": self.temperature,
            "momentum": self.momentum,
            "seed": self.seed,
        })
        return config
