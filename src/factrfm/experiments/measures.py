"""Progress measures for the grokking and parity experiments.

- ``circulant_deviation``: how far a square matrix is from the nearest circulant matrix.
- ``modular_block_order`` / ``reorder_feature_matrix``: the re-ordering of the two p-blocks of M
  under which the off-diagonal block of a learned M for ``(a op b) mod p`` becomes circulant
  (b -> -b for -, the discrete logarithm for * and /).
- ``support_weight``, ``top_k_indices``: how much of diag(M) sits on a parity support.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from factrfm.datasets.tasks import OPERATIONS, _check_prime, discrete_log_table, primitive_root

ArrayLike = np.ndarray | torch.Tensor


def _to_numpy(A: ArrayLike, name: str) -> np.ndarray:
    if isinstance(A, torch.Tensor):
        A = A.detach().cpu().double().numpy()
    elif isinstance(A, np.ndarray):
        A = A.astype(np.float64, copy=False)
    else:
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(A).__name__}")
    if not np.all(np.isfinite(A)):
        raise ValueError(f"{name} contains non-finite entries")
    return A


def nearest_circulant(C: ArrayLike) -> np.ndarray:
    """The circulant matrix nearest to ``C`` in Frobenius norm: each wrapped diagonal averaged.

    A circulant matrix has ``C[i, j] = c[(j - i) mod m]``; the orthogonal projection onto that space
    replaces each ``c[k]`` by the mean of ``C[i, (i + k) mod m]`` over i.

    Parameters
    ----------
    C : (m, m) array or tensor

    Returns
    -------
    numpy.ndarray, shape (m, m)
    """
    C = _to_numpy(C, "C")
    if C.ndim != 2 or C.shape[0] != C.shape[1]:
        raise ValueError(f"C must be a square matrix, got shape {C.shape}")
    m = C.shape[0]
    i = np.arange(m)[:, None]
    offset = (np.arange(m)[None, :] - i) % m  # offset[i, j] = (j - i) mod m
    c = np.bincount(offset.ravel(), weights=C.ravel(), minlength=m) / m
    return c[offset]


def circulant_deviation(C: ArrayLike) -> float:
    """Relative distance of a square matrix from the nearest circulant matrix.

    ``||C - circ(C)||_F / ||C - mean(C)||_F``, where circ(C) averages each wrapped diagonal. It is 0
    exactly when C is circulant, and close to 1 for a matrix with independent random entries (the
    circulant matrices are an m-dimensional subspace of the m^2-dimensional space, and the constant
    part, which is circulant, is removed from the denominator so that a large common offset does
    not make a matrix look circulant). A constant matrix (including 0) is circulant: deviation 0.

    Parameters
    ----------
    C : (m, m) array or tensor

    Returns
    -------
    float in [0, 1]
    """
    C = _to_numpy(C, "C")
    P = nearest_circulant(C)
    denom = np.linalg.norm(C - C.mean())
    if denom <= 1e-12 * max(1.0, np.abs(C).max()):
        return 0.0
    return float(np.linalg.norm(C - P) / denom)


def modular_block_order(p: int, operation: str) -> tuple[np.ndarray, np.ndarray]:
    """Orders of the a-block and the b-block under which the off-diagonal block of M is circulant.

    A model of ``(a op b) mod p`` that generalises computes, for a few frequencies w, products of
    Fourier features of the two operands: e^{iwa} e^{iwb} for a + b, e^{iwa} e^{-iwb} for a - b, and
    the same in the discrete logarithm for * and /. The gradient of such a product with respect
    to the a-block at coordinate a' carries e^{iwa'}, the one with respect to the b-block at b'
    carries e^{iwb'} (+) or e^{-iwb'} (-), and after summing over the outputs the (a', b') entry of
    the AGOP or of WᵀW depends on a' - b' (+) or a' + b' (-). Hence the off-diagonal block is
    circulant in

    - add: rows a = 0..p-1, columns b = 0..p-1 (m = p);
    - sub: rows a = 0..p-1, columns b = -j mod p (m = p);
    - mul: rows a = g^i, columns b = g^j, zero left out (m = p - 1);
    - div: rows a = g^i, columns b = g^(-j), zero left out (m = p - 1);

    with g the smallest primitive root of p (computed, see ``primitive_root``). The part of M that
    is invariant under all shifts of a and b separately has a constant off-diagonal block, which the
    circulant deviation ignores. (Checked on learned matrices: for each operation the deviation of
    the final M is about 0.15 in its own order and about 1 in the orders of the other operations.)

    Parameters
    ----------
    p : int
        Prime modulus.
    operation : {"add", "sub", "mul", "div"}

    Returns
    -------
    row_order, col_order : numpy.ndarray of int
        Indices into 0..p-1.
    """
    p = _check_prime(p)
    j = np.arange(p)
    if operation == "add":
        return j.copy(), j.copy()
    if operation == "sub":
        return j.copy(), (-j) % p
    if operation in ("mul", "div"):
        g = primitive_root(p)
        powers = np.array([pow(g, int(k), p) for k in range(p - 1)], dtype=np.int64)
        if operation == "mul":
            return powers, powers.copy()
        return powers, powers[(-np.arange(p - 1)) % (p - 1)]
    raise ValueError(f"operation must be one of {OPERATIONS}, got {operation!r}")


def off_diagonal_block(M: ArrayLike, p: int, operation: str, reorder: bool = True) -> np.ndarray:
    """The (a, b) block ``M[:p, p:]`` of a 2p x 2p matrix, re-ordered by ``modular_block_order``.

    Parameters
    ----------
    M : (2p, 2p) array or tensor
    p : int
    operation : {"add", "sub", "mul", "div"}
    reorder : bool
        If False, return the block in the natural order 0..p-1 (for mul/div zero included).

    Returns
    -------
    numpy.ndarray, shape (m, m)
    """
    M = _to_numpy(M, "M")
    if M.shape != (2 * p, 2 * p):
        raise ValueError(f"M must have shape (2p, 2p) = ({2 * p}, {2 * p}), got {M.shape}")
    block = M[:p, p:]
    if not reorder:
        return block
    rows, cols = modular_block_order(p, operation)
    return block[np.ix_(rows, cols)]


def modular_circulant_deviation(M: ArrayLike, p: int, operation: str) -> float:
    """Circulant deviation of M's off-diagonal p x p block after the re-ordering for ``operation``.

    Parameters
    ----------
    M : (2p, 2p) array or tensor
    p : int
    operation : {"add", "sub", "mul", "div"}

    Returns
    -------
    float
    """
    return circulant_deviation(off_diagonal_block(M, p, operation))


def reorder_feature_matrix(M: ArrayLike, p: int, operation: str) -> np.ndarray:
    """M with both p-blocks re-ordered as in ``modular_block_order`` (zero placed last for mul/div).

    The result has the same spectrum as M (it is a symmetric permutation), and its off-diagonal
    block is circulant when M has the symmetry of the task. Used for heat maps.

    Returns
    -------
    numpy.ndarray, shape (2p, 2p)
    """
    M = _to_numpy(M, "M")
    if M.shape != (2 * p, 2 * p):
        raise ValueError(f"M must have shape (2p, 2p) = ({2 * p}, {2 * p}), got {M.shape}")
    rows, cols = modular_block_order(p, operation)
    if len(rows) < p:  # mul/div: zero has no logarithm; put it last
        rows = np.append(rows, 0)
        cols = np.append(cols, 0)
    perm = np.concatenate([rows, p + cols])
    return M[np.ix_(perm, perm)]


def discrete_log_order(p: int) -> np.ndarray:
    """1..p-1 listed by discrete logarithm: ``[g^0, g^1, ..., g^(p-2)]`` (g the smallest root)."""
    log = discrete_log_table(p)
    order = np.empty(p - 1, dtype=np.int64)
    order[log[1:]] = np.arange(1, p)
    return order


def support_weight(diag: ArrayLike, support: Sequence[int]) -> float:
    """Share of diag(M) on the support: sum(diag[support]) / sum(diag).

    Parameters
    ----------
    diag : (d,) array or tensor with non-negative entries (the diagonal of a PSD matrix)
    support : sequence of 0-based indices

    Returns
    -------
    float in [0, 1]
    """
    v = _to_numpy(diag, "diag").ravel()
    if np.any(v < -1e-10 * max(1.0, np.abs(v).max())):
        raise ValueError("diag must be non-negative (the diagonal of a PSD matrix)")
    v = np.clip(v, 0, None)
    total = v.sum()
    if total == 0:
        raise ValueError("diag is zero: support weight is undefined")
    return float(v[list(support)].sum() / total)


def top_k_indices(diag: ArrayLike, k: int) -> tuple[int, ...]:
    """The (sorted) indices of the k largest entries of ``diag``."""
    v = _to_numpy(diag, "diag").ravel()
    if not 1 <= k <= len(v):
        raise ValueError(f"k must be in 1..{len(v)}, got {k}")
    return tuple(sorted(int(i) for i in np.argsort(-v, kind="stable")[:k]))


def first_iteration_above(
    iterations: Sequence[int], values: Sequence[float], threshold: float
) -> int | None:
    """The first iteration whose value is strictly above ``threshold`` (None if never).

    Parameters
    ----------
    iterations : sequence of int
    values : sequence of float, same length
    threshold : float

    Returns
    -------
    int or None
    """
    if len(iterations) != len(values):
        raise ValueError(
            f"iterations and values must have the same length, got {len(iterations)} and "
            f"{len(values)}"
        )
    for it, v in zip(iterations, values, strict=True):
        if v is not None and v > threshold:
            return int(it)
    return None
