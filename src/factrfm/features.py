"""Feature-matrix rules: input Jacobians, the AGOP (NFA-RFM), the FACT matrix (FACT-RFM), and
the update ``M <- rule(...)`` with its normalisation.

All closed forms below are derived in ``MATH.md`` §2–3 and tested against autograd. With
``f(x) = sum_j alpha_j^T k_M(x, z_j)`` and the gradient coefficients ``W`` of the kernel
(:meth:`factrfm.kernels.Kernel.gradient_weights`), the Jacobian of ``f`` at ``x_i`` is
``G_i = M H_i`` with

* radial kernels:        ``H_i = x_i (W alpha)_i^T - sum_j W_ij z_j alpha_j^T``
* inner-product kernels: ``H_i = sum_j W_ij z_j alpha_j^T``

so ``AGOP = M [(1/n) sum_i H_i H_i^T] M`` and, with ``B_ij = W_ij (alpha_i . alpha_j)``,
``F = M S`` where ``S = (1/n) X^T (diag(B 1) - B) X`` (radial) or ``(1/n) X^T B X`` (inner
product). The FACT step never forms an ``n x c x d`` tensor.

Per output ``k`` the same holds with ``B^(k)_ij = W_ij alpha_ik alpha_jk``: ``F_k = M S_k`` and
``F = sum_k F_k``. The rule ``"fact-per-output"`` uses ``sum_k F_k F_k^T`` instead of ``F F^T``:
for one output it is FACT-RFM; for several (one-hot classes) the outputs' matrices are not
added before squaring, so opposite-signed contributions of different classes cannot cancel.

Memory: every function loops over blocks of rows; a block holds ``block_rows x n`` kernel
entries (``x c`` for the Jacobians), with ``block_rows`` chosen from a budget of
``block_entries`` entries (default :data:`factrfm.kernels.DEFAULT_BLOCK_ENTRIES`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from factrfm.kernels import Kernel, default_block_rows, row_blocks
from factrfm.linalg import psd_power

__all__ = [
    "RULES",
    "NORMALIZATIONS",
    "jacobians",
    "feature_matrices",
    "FeatureMatrices",
    "update_metric",
    "normalize_metric",
    "pair_differences",
    "median_distance",
    "FeatureLearningError",
]

#: Update rules: name -> (what the matrix U is built from, the power taken of U).
RULES = ("fact", "fact-geomean", "fact-inner", "fact-per-output", "agop")
NORMALIZATIONS = ("max", "trace", "median", "none")


class FeatureLearningError(FloatingPointError):
    """The feature update produced a matrix that cannot serve as a metric (zero or non-finite)."""


def _partial_H(kernel: Kernel, Xb, Z, alpha, W):
    """For a block of points ``Xb`` with gradient coefficients ``W`` (rows of ``Xb``, columns of
    ``Z``): ``H`` of shape ``(b, c, d)``, so that the Jacobian is ``G_i^T = H_i^T M``."""
    # T[b, c, :] = sum_j W[b, j] alpha[j, c] Z[j, :]
    T = (W[:, None, :] * alpha.T[None, :, :]) @ Z
    if kernel.radial:
        A = W @ alpha  # (b, c)
        T = A[:, :, None] * Xb[:, None, :] - T
    return T


def _fact_operand(
    alpha: torch.Tensor, X: torch.Tensor, force: bool = False
) -> torch.Tensor | None:
    """``[alpha_1 * X, ..., alpha_c * X, alpha]`` (n, c (d + 1)), when one product with it is
    cheaper than forming ``B = W * (alpha alpha^T)`` entry by entry.

    Cost model per kernel entry: the product takes ``c (d + 1)`` multiply-adds; the entry-wise
    route takes ``c + d`` plus three passes over an ``n x n`` block, each worth about 30
    multiply-adds of a matrix product on a CPU. ``force=True`` always builds it (the per-output
    FACT matrices need the products output by output).
    """
    n, d = X.shape
    c = alpha.shape[1]
    if not force and c * (d + 1) > c + d + 90:
        return None
    return torch.cat([(alpha[:, :, None] * X[:, None, :]).reshape(n, c * d), alpha], dim=1)


def _fact_products(W, alpha, sl, X, Q):
    """``B X`` and ``B 1`` for the rows ``sl`` of ``B = W * (alpha alpha^T)``; may overwrite W."""
    if Q is None:
        B = W.mul_(alpha[sl] @ alpha.T)
        return B @ X, B.sum(1)
    BX, B1 = _fact_output_products(W, alpha, sl, Q, X.shape[1])
    return BX.sum(1), B1.sum(1)


def _fact_output_products(W, alpha, sl, Q, d):
    """Per output ``k``: ``B^(k) X`` as ``(b, c, d)`` and ``B^(k) 1`` as ``(b, c)`` for the rows
    ``sl`` of ``B^(k) = W * (alpha_k alpha_k^T)``, with ``Q`` from :func:`_fact_operand`."""
    c = alpha.shape[1]
    a = alpha[sl]
    R = W @ Q
    BX = R[:, : c * d].reshape(-1, c, d) * a[:, :, None]
    return BX, a * R[:, c * d :]


def jacobians(
    kernel: Kernel,
    X: torch.Tensor,
    centres: torch.Tensor,
    alpha: torch.Tensor,
    M: torch.Tensor,
    block_entries: int | None = None,
) -> torch.Tensor:
    """Jacobians of ``f(x) = sum_j alpha_j^T k_M(x, centres_j)`` at the rows of ``X``.

    Returns a tensor of shape ``(m, c, d)``: entry ``[i, k, :]`` is the gradient of output ``k``
    at ``X[i]``. Memory: ``O(m c d)`` for the result plus one block of ``block_entries``.
    """
    c, d = alpha.shape[1], X.shape[1]
    Md = M.to(X.dtype)
    out = X.new_empty(X.shape[0], c, d)
    rows = default_block_rows(centres.shape[0], per_entry=c + 2, budget=block_entries)
    for sl in row_blocks(X.shape[0], rows):
        _, W = kernel.gradient_weights(X[sl], centres, Md)
        H = _partial_H(kernel, X[sl], centres, alpha, W)
        out[sl] = H @ Md  # G^T = H^T M (M symmetric)
    return out


@dataclass
class FeatureMatrices:
    """The FACT matrix ``F`` and the AGOP of a kernel machine at its training points (float64)."""

    fact: torch.Tensor | None = None
    agop: torch.Tensor | None = None
    #: ``(c, d, d)``: the FACT matrix ``F_k`` of each output (``fact`` is their sum); only
    #: when asked for with ``per_output=True``.
    fact_outputs: torch.Tensor | None = None


def feature_matrices(
    kernel: Kernel,
    X: torch.Tensor,
    alpha: torch.Tensor,
    M: torch.Tensor,
    *,
    fact: bool = True,
    agop: bool = True,
    centering: bool = False,
    block_entries: int | None = None,
    weights: torch.Tensor | None = None,
    per_output: bool = False,
) -> FeatureMatrices:
    """FACT matrix ``F = (1/n) sum_i G_i alpha_i x_i^T`` and ``AGOP = (1/n) sum_i G_i G_i^T``.

    ``X`` holds the training points, which are also the kernel centres, and ``alpha`` their
    coefficients. ``centering=True`` subtracts the mean Jacobian before forming the AGOP.
    Both are computed in one pass over row blocks; results are float64. ``weights`` may hold
    the ``(n, n)`` gradient coefficients of :meth:`~factrfm.kernels.Kernel.gradient_weights`
    when they are already at hand (they are then overwritten); else they are computed block by
    block. ``per_output=True`` also returns each output's FACT matrix ``F_k``
    (``fact_outputs``, ``(c, d, d)``); it costs ``n^2 c (d + 1)`` multiply-adds and an
    ``(n, c (d + 1))`` operand, whatever the shapes.
    """
    n, d = X.shape
    c = alpha.shape[1]
    Md = M.to(X.dtype)
    per_output = per_output and fact
    S = X.new_zeros(d, d, dtype=torch.float64)
    S_out = X.new_zeros(c, d, d, dtype=torch.float64) if per_output else None
    HH = X.new_zeros(d, d, dtype=torch.float64)
    H_sum = X.new_zeros(c, d, dtype=torch.float64)
    per_entry = (c + 2) if agop else 2
    if per_output:  # the (b, c (d + 1)) product block counts too
        per_entry += -(-c * (d + 1) // n)
    rows = default_block_rows(n, per_entry=per_entry, budget=block_entries)
    Q = _fact_operand(alpha, X, force=per_output) if fact else None
    for sl in row_blocks(n, rows):
        Xb = X[sl]
        W = weights[sl] if weights is not None else kernel.gradient_weights(Xb, X, Md)[1]
        if agop:
            H = _partial_H(kernel, Xb, X, alpha, W)
            Hf = H.reshape(-1, d)
            HH += (Hf.T @ Hf).double()
            if centering:
                H_sum += H.sum(0).double()
            del H, Hf
        if per_output:
            BX, B1 = _fact_output_products(W, alpha, sl, Q, d)
            T = B1[:, :, None] * Xb[:, None, :] - BX if kernel.radial else BX
            parts = (T.reshape(-1, c * d).T @ Xb).reshape(c, d, d).double()
            S_out += parts
            S += parts.sum(0)
        elif fact:
            BX, B1 = _fact_products(W, alpha, sl, X, Q)
            part = -BX.T @ Xb if kernel.radial else BX.T @ Xb
            if kernel.radial:
                part += Xb.T @ (B1[:, None] * Xb)
            S += part.double()
        del W
    M64 = M.double()
    out = FeatureMatrices()
    if fact:
        out.fact = M64 @ (S / n)
    if per_output:
        out.fact_outputs = M64 @ (S_out / n)
    if agop:
        HH /= n
        if centering:
            mean_H = H_sum / n
            HH -= mean_H.T @ mean_H
        out.agop = M64 @ HH @ M64
    return out


def _update_target(rule: str, M: torch.Tensor, mats: FeatureMatrices) -> tuple[torch.Tensor, float]:
    """The symmetric matrix ``U`` and the power ``p`` such that the new metric is ``U^p``."""
    if rule == "agop":
        return mats.agop, 1.0
    F = mats.fact
    if rule == "fact":
        return F @ F.T, 0.5
    if rule == "fact-geomean":
        FM = F @ M
        return FM @ FM.T, 0.25
    if rule == "fact-inner":
        return F @ M, 0.5
    if rule == "fact-per-output":
        Fk = mats.fact_outputs
        if Fk is None:
            raise ValueError(
                "rule 'fact-per-output' needs the per-output FACT matrices: compute them with "
                "feature_matrices(..., per_output=True)"
            )
        return torch.einsum("kde,kfe->df", Fk, Fk), 0.5
    raise ValueError(f"unknown rule {rule!r}; choose one of {RULES}")


def update_metric(
    rule: str,
    M: torch.Tensor,
    mats: FeatureMatrices,
    *,
    agop_power: float = 0.5,
    diag: bool = False,
) -> torch.Tensor:
    """The new (unnormalised) metric from the current ``M`` and the feature matrices.

    Rules (``F`` the FACT matrix): ``"fact"``: ``(F F^T)^{1/2}``; ``"fact-geomean"``:
    ``(F M^2 F^T)^{1/4}``; ``"fact-inner"``: ``(F M)^{1/2}``; ``"fact-per-output"``:
    ``(sum_k F_k F_k^T)^{1/2}`` over the outputs' FACT matrices ``F_k`` (``mats.fact_outputs``);
    ``"agop"``: ``AGOP^agop_power``.
    With ``diag=True`` only the diagonal of the matrix whose power is taken is kept, so the
    metric stays diagonal. Raises :class:`FeatureLearningError` when the result is zero or
    not finite.
    """
    M = M.double()
    U, p = _update_target(rule, M, mats)
    if rule == "agop":
        p = float(agop_power)
    if diag:
        new = torch.diag(torch.diagonal(U).clamp(min=0).pow(p))
    else:
        new = psd_power(U, p)
    if not torch.isfinite(new).all():
        raise FeatureLearningError(f"the {rule!r} update produced a non-finite metric")
    if new.abs().max() == 0:
        raise FeatureLearningError(
            f"the {rule!r} update produced M = 0 (the fitted function is flat: all its "
            "gradients vanish)"
        )
    return new


def pair_differences(
    X: torch.Tensor, n_pairs: int = 4096, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Differences ``x_i - x_j`` of a seeded random sample of ``n_pairs`` pairs of rows with
    ``i != j`` (all pairs when there are fewer), in float64: the reference set of the
    ``"median"`` normalisation.

    Raises
    ------
    ValueError
        If ``X`` has fewer than 2 rows (no pair to measure a distance on).
    """
    n = X.shape[0]
    if n < 2:
        raise ValueError(f"normalize='median' needs at least 2 training rows, got {n}")
    if n * (n - 1) // 2 <= n_pairs:
        i, j = torch.triu_indices(n, n, offset=1, device=X.device)
    else:
        i = torch.randint(0, n, (n_pairs,), generator=generator).to(X.device)
        # j = i + k (mod n) with k in 1..n-1: uniform over the other rows, never i itself.
        j = (i + torch.randint(1, n, (n_pairs,), generator=generator).to(X.device)) % n
    return (X[i] - X[j]).double()


def median_distance(M: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """The median of ``||d||_M = sqrt(d^T M d)`` over the rows ``d`` of ``D``."""
    sq = ((D @ M.to(D.dtype)) * D).sum(dim=1).clamp(min=0)
    return sq.median().sqrt()


def normalize_metric(
    M: torch.Tensor,
    how: str = "max",
    *,
    pairs: torch.Tensor | None = None,
    target: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Rescale ``M``.

    ``"max"`` divides by its largest absolute entry; ``"trace"`` makes its trace equal to the
    dimension (as for ``M = I``); ``"median"`` makes the median ``M``-distance over the row
    differences ``pairs`` (:func:`pair_differences`) equal to ``target`` -- in
    :func:`~factrfm.rfm.fit_rfm` the median distance under the starting metric, so the
    bandwidth keeps the meaning it had at iteration 0 and feature learning changes only the
    shape of the metric; ``"none"`` leaves ``M``.

    Raises
    ------
    ValueError
        For an unknown ``how``, or ``"median"`` without ``pairs`` and ``target``.
    FeatureLearningError
        For ``"median"`` when half or more of the sampled differences have ``M``-length 0
        (``M`` is too degenerate on the data to be rescaled by its median).
    """
    if how == "max":
        return M / M.abs().max()
    if how == "trace":
        return M * (M.shape[0] / torch.trace(M))
    if how == "median":
        if pairs is None or target is None:
            raise ValueError("normalize='median' needs the row differences `pairs` and `target`")
        med = median_distance(M, pairs)
        if not med > 0:
            raise FeatureLearningError(
                "the median distance under the new metric is 0: M vanishes on most data "
                "directions; use normalize='max' or 'trace'"
            )
        return M * (float(target) / med.to(M.dtype)) ** 2
    if how == "none":
        return M
    raise ValueError(f"unknown normalize {how!r}; choose one of {NORMALIZATIONS}")
