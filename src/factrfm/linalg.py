"""Small matrix helpers shared by the RFM engine, the network diagnostics and the experiments:
PSD powers and agreement scores between matrices."""

from __future__ import annotations

import torch


def psd_power(A: torch.Tensor, s: float) -> torch.Tensor:
    """Power ``A^s`` of a symmetric positive semi-definite matrix, computed in float64.

    The matrix is symmetrised first, and eigenvalues at round-off level or below zero are set to
    zero.

    Parameters
    ----------
    A : torch.Tensor
        Square matrix, shape ``(d, d)``.
    s : float
        Exponent, ``s > 0``.

    Returns
    -------
    torch.Tensor
        ``A^s`` in float64, shape ``(d, d)``.
    """
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"A must be a square matrix, got shape {tuple(A.shape)}")
    if not s > 0:
        raise ValueError(f"s must be positive, got {s}")
    A64 = A.detach().to(torch.float64)
    if not torch.isfinite(A64).all():
        raise ValueError("A has non-finite entries; cannot take a matrix power")
    evals, evecs = torch.linalg.eigh(0.5 * (A64 + A64.T))
    # Eigenvalues at round-off level (below d * eps * the largest) are zero: without this their
    # power (sqrt(1e-18) = 1e-9) would leak weight into directions the matrix does not have.
    tol = A64.shape[0] * torch.finfo(torch.float64).eps * evals.abs().max()
    evals = torch.where(evals > tol, evals, torch.zeros_like(evals)) ** s
    return (evecs * evals) @ evecs.T


def sqrt_aat(F: torch.Tensor) -> torch.Tensor:
    """The symmetric square root ``(F Fᵀ)^{1/2}`` of a square matrix, in float64."""
    F64 = F.detach().to(torch.float64)
    return psd_power(F64 @ F64.T, 0.5)


def pearson(A: torch.Tensor, B: torch.Tensor) -> float:
    """Pearson correlation between the entries of two matrices of the same shape.

    Returns NaN only when one of the matrices is constant (zero variance), where the
    correlation is undefined.
    """
    a, b = _flat_pair(A, B)
    a = a - a.mean()
    b = b - b.mean()
    den = torch.linalg.vector_norm(a) * torch.linalg.vector_norm(b)
    return _clip_unit(float((a @ b) / den)) if den > 0 else float("nan")


def _clip_unit(v: float) -> float:
    """Clip round-off beyond ±1 (a score of exactly equal matrices can come out as 1 + 2e-16)."""
    return min(1.0, max(-1.0, v))


def cosine(A: torch.Tensor, B: torch.Tensor) -> float:
    """Cosine similarity ``<A, B>_F / (‖A‖_F ‖B‖_F)`` of two matrices of the same shape.

    Returns NaN only when one of the matrices is zero.
    """
    a, b = _flat_pair(A, B)
    den = torch.linalg.vector_norm(a) * torch.linalg.vector_norm(b)
    return _clip_unit(float((a @ b) / den)) if den > 0 else float("nan")


def relative_error(A: torch.Tensor, ref: torch.Tensor) -> float:
    """Relative Frobenius error ``‖A - ref‖_F / ‖ref‖_F`` (NaN when ``ref`` is zero)."""
    a, r = _flat_pair(A, ref)
    den = torch.linalg.vector_norm(r)
    return float(torch.linalg.vector_norm(a - r) / den) if den > 0 else float("nan")


def _flat_pair(A: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if A.shape != B.shape:
        raise ValueError(
            f"matrices must have the same shape, got {tuple(A.shape)} and {tuple(B.shape)}"
        )
    return (
        A.detach().reshape(-1).to(torch.float64),
        B.detach().reshape(-1).to(torch.float64).to(A.device),
    )
