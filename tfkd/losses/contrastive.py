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
"""

import math

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


def _nce_loss(scores, log_z, dataset_size):
    """The code's `ContrastLoss` on `P = exp(scores) / Z`, in log space.

    With `c = K / N`, the noise term: `log D1 = log(P_0 / (P_0 + c + eps))`
    for the positive and `log D0 = log(c / (P_k + c + eps))` for each
    negative; returns `−(Σ_b log D1 + Σ_{b,k} log D0) / b`.
    """
    k = tf.cast(tf.shape(scores)[1] - 1, tf.float32)
    c = k / float(dataset_size)
    log_c_eps = tf.math.log(c + _NCE_EPSILON)
    log_p = scores - log_z
    # log(P / (P + c + eps)) = −softplus(log(c + eps) − log P), and
    # log(c / (P + c + eps)) = log(c / (c + eps)) − softplus(log P −
    # log(c + eps)): finite and exact for any score.
    positive = tf.nn.softplus(log_c_eps - log_p[:, 0])
    negatives = (tf.nn.softplus(log_p[:, 1:] - log_c_eps)
                 - (tf.math.log(c) - log_c_eps))
    b = tf.cast(tf.shape(scores)[0], tf.float32)
    return (tf.reduce_sum(positive) + tf.reduce_sum(negatives)) / b


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
