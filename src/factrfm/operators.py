"""Memory-bounded kernel operators and feature matrices on a sample of rows.

:class:`KernelOperator` stands for ``K = K_M(X, C)`` (rows ``X``, centres ``C``) without
holding it: every product computes ``K`` one block of rows at a time, and a block never holds
more than ``block_entries`` kernel entries. :meth:`KernelOperator.dense` materialises ``K`` only
when it has at most ``max_dense_entries`` entries, a limit the user sets.

:func:`sampled_feature_matrices` gives the FACT matrix and the AGOP of a kernel machine
``f(x) = sum_j beta_j^T k_M(x, c_j)`` evaluated at a (seeded, random) sample of the training
rows instead of all of them:

    F    = (1/s) sum_{i in sample} G_i w_i x_i^T,        AGOP = (1/s) sum_{i in sample} G_i G_i^T

with ``G_i`` the Jacobian of ``f`` at ``x_i`` and ``w_i`` the per-row loss weight: the exact
kernel ridge coefficient ``alpha_i`` when the centres are the training rows (MATH.md §3), and
``(y_i - f(x_i)) / ridge`` in general (the loss gradient of ``1/2 |f(x_i) - y_i|^2``, which equals
``alpha_i`` for the exact solution). With every row and ``w = alpha`` this is exactly
:func:`factrfm.features.feature_matrices`; the cost is ``O(s m c d)`` for ``s`` rows and ``m``
centres, so a sample of ``s`` rows makes the feature step independent of ``n``.
"""

from __future__ import annotations

import torch

from factrfm.features import FeatureMatrices, feature_matrices, jacobians
from factrfm.kernels import Kernel, default_block_rows, row_blocks

__all__ = ["KernelOperator", "sample_rows", "sampled_feature_matrices", "DEFAULT_MAX_DENSE"]

#: Largest kernel matrix (entries) :meth:`KernelOperator.dense` builds unless told otherwise:
#: 2**28 float32 entries = 1 GiB.
DEFAULT_MAX_DENSE = 2**28


def sample_rows(n: int, size: int | None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Sorted indices of a uniform random sample of ``size`` rows out of ``n`` (without
    replacement); all rows when ``size`` is None or at least ``n``."""
    if size is None or size >= n:
        return torch.arange(n)
    if int(size) != size or size < 1:
        raise ValueError(f"the sample size must be a positive integer, got {size!r}")
    return torch.randperm(n, generator=generator)[: int(size)].sort().values


class KernelOperator:
    """``K = K_M(X, C)`` as a linear operator computed block by block.

    Parameters
    ----------
    kernel : Kernel
    X : tensor ``(n, d)``
        Rows of the operator.
    M : tensor ``(d, d)``
        Metric.
    centres : tensor ``(m, d)``, optional
        Columns of the operator; default ``X`` (the square training kernel).
    block_entries : int, optional
        Kernel entries held at once (default :data:`factrfm.kernels.DEFAULT_BLOCK_ENTRIES`).
    max_dense_entries : int, optional
        Largest ``n * m`` that :meth:`dense` will materialise (default :data:`DEFAULT_MAX_DENSE`).
    max_cached_entries : int, default 0
        When ``n * m`` is at most this, the matrix is computed once, at the first product, and
        kept for the later ones (an iterative solver multiplies by the same ``K`` hundreds of
        times); above it, every product recomputes the blocks.

    Memory of every product: one block of ``block_entries`` kernel entries plus the result.
    Works on any device: everything is allocated on ``X.device``.
    """

    def __init__(
        self,
        kernel: Kernel,
        X: torch.Tensor,
        M: torch.Tensor,
        centres: torch.Tensor | None = None,
        *,
        block_entries: int | None = None,
        max_dense_entries: int | None = None,
        max_cached_entries: int = 0,
    ):
        if not isinstance(kernel, Kernel):
            raise TypeError(f"kernel must be a Kernel, got {type(kernel).__name__}")
        if X.ndim != 2:
            raise ValueError(f"X must be a 2-d tensor (n, d), got shape {tuple(X.shape)}")
        C = X if centres is None else centres.to(X.dtype)
        if C.ndim != 2 or C.shape[1] != X.shape[1]:
            raise ValueError(
                f"centres must have shape (m, {X.shape[1]}) to match X, got {tuple(C.shape)}"
            )
        if M.shape != (X.shape[1], X.shape[1]):
            d = X.shape[1]
            raise ValueError(f"M must have shape ({d}, {d}), got {tuple(M.shape)}")
        self.kernel = kernel
        self.X = X
        self.centres = C
        self.M = M.to(X.dtype)
        self.block_entries = block_entries
        self.max_dense_entries = (
            DEFAULT_MAX_DENSE if max_dense_entries is None else int(max_dense_entries))
        self.max_cached_entries = int(max_cached_entries)
        self._cached: torch.Tensor | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return (self.X.shape[0], self.centres.shape[0])

    def _blocks(self, per_entry: int = 1):
        n, m = self.shape
        if self._cached is None and 0 < n * m <= self.max_cached_entries:
            self._cached = self.kernel.matrix(self.X, self.centres, self.M)
        if self._cached is not None:
            yield slice(0, n), self._cached
            return
        rows = default_block_rows(m, per_entry=per_entry, budget=self.block_entries)
        for sl in row_blocks(n, rows):
            yield sl, self.kernel.matrix(self.X[sl], self.centres, self.M)

    def _as_matrix(self, V: torch.Tensor, n: int, name: str) -> tuple[torch.Tensor, bool]:
        if V.shape[0] != n or V.ndim not in (1, 2):
            raise ValueError(f"{name} must have {n} rows, got shape {tuple(V.shape)}")
        vec = V.ndim == 1
        return (V[:, None] if vec else V).to(self.X.dtype), vec

    def matmul(self, V: torch.Tensor) -> torch.Tensor:
        """``K @ V`` for ``V`` of shape ``(m,)`` or ``(m, c)``."""
        V, vec = self._as_matrix(V, self.shape[1], "V")
        out = V.new_empty(self.shape[0], V.shape[1])
        for sl, Kb in self._blocks():
            out[sl] = Kb @ V
        return out[:, 0] if vec else out

    __matmul__ = matmul

    def rmatmul(self, U: torch.Tensor) -> torch.Tensor:
        """``K^T @ U`` for ``U`` of shape ``(n,)`` or ``(n, c)``."""
        U, vec = self._as_matrix(U, self.shape[0], "U")
        out = U.new_zeros(self.shape[1], U.shape[1])
        for sl, Kb in self._blocks():
            out += Kb.T @ U[sl]
        return out[:, 0] if vec else out

    def normal_matmul(
        self, V: torch.Tensor, U: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(K^T (K V), K^T U)`` in one pass over the blocks (each block of ``K`` is computed
        once). The second item is None when ``U`` is None. This is the product a Nyström
        (Falkon) solver needs."""
        V, _ = self._as_matrix(V, self.shape[1], "V")
        out = V.new_zeros(self.shape[1], V.shape[1])
        rhs = None
        if U is not None:
            U, _ = self._as_matrix(U, self.shape[0], "U")
            rhs = U.new_zeros(self.shape[1], U.shape[1])
        for sl, Kb in self._blocks():
            out += Kb.T @ (Kb @ V)
            if rhs is not None:
                rhs += Kb.T @ U[sl]
        return out, rhs

    def diagonal(self) -> torch.Tensor:
        """``diag(K)`` of a square operator (centres equal to rows), from diagonal blocks."""
        if self.centres is not self.X and not torch.equal(self.centres, self.X):
            raise ValueError("diagonal() needs a square operator whose centres are its rows")
        side = max(1, int(default_block_rows(1, budget=self.block_entries) ** 0.5))
        out = self.X.new_empty(self.shape[0])
        for sl in row_blocks(self.shape[0], side):
            Xb = self.X[sl]
            out[sl] = self.kernel.matrix(Xb, Xb, self.M).diagonal()
        return out

    def dense(self) -> torch.Tensor:
        """The full matrix, refused (``ValueError``) above ``max_dense_entries`` entries."""
        n, m = self.shape
        if n * m > self.max_dense_entries:
            raise ValueError(
                f"refusing to materialise a {n} x {m} kernel matrix ({n * m:,} entries > "
                f"max_dense_entries={self.max_dense_entries:,}); use the block-wise products"
            )
        return self.kernel.matrix(self.X, self.centres, self.M)


def sampled_feature_matrices(
    kernel: Kernel,
    X: torch.Tensor,
    centres: torch.Tensor,
    coef: torch.Tensor,
    M: torch.Tensor,
    row_weights: torch.Tensor,
    *,
    fact: bool = True,
    agop: bool = True,
    centering: bool = False,
    block_entries: int | None = None,
    per_output: bool = False,
) -> FeatureMatrices:
    """FACT matrix and AGOP of ``f(x) = K_M(x, centres) @ coef`` at the rows of ``X``.

    Parameters
    ----------
    kernel, M : the kernel and its metric.
    X : tensor ``(s, d)``
        The rows at which the matrices are averaged (all training rows, or a sample of them).
    centres, coef : tensors ``(m, d)`` and ``(m, c)``
        The kernel machine.
    row_weights : tensor ``(s, c)``
        The loss weight ``w_i`` of each row: ``alpha_i`` for exact kernel ridge whose centres
        are the training rows, ``(y_i - f(x_i)) / ridge`` in general.
    fact, agop, centering, block_entries, per_output : as in
        :func:`factrfm.features.feature_matrices`.

    Returns float64 matrices. Memory: the ``(s, c, d)`` Jacobians plus one block of
    ``block_entries`` kernel entries. When ``X`` is ``centres`` and ``row_weights`` is ``coef``
    this delegates to :func:`factrfm.features.feature_matrices` (the ``O(n^2 (c + d))`` FACT
    pass).
    """
    if row_weights.shape != (X.shape[0], coef.shape[1]):
        raise ValueError(
            f"row_weights must have shape ({X.shape[0]}, {coef.shape[1]}), "
            f"got {tuple(row_weights.shape)}"
        )
    if X is centres and row_weights is coef:
        return feature_matrices(kernel, X, coef, M, fact=fact, agop=agop, centering=centering,
                                block_entries=block_entries, per_output=per_output)
    s, d = X.shape
    c = coef.shape[1]
    per_output = per_output and fact
    fact_sum = X.new_zeros(d, d, dtype=torch.float64)
    fact_out = X.new_zeros(c, d, d, dtype=torch.float64) if per_output else None
    agop_sum = X.new_zeros(d, d, dtype=torch.float64)
    jac_sum = X.new_zeros(c, d, dtype=torch.float64)
    # Chunks of rows keep the (rows, c, d) Jacobians small whatever s is.
    chunk = max(1, (2**22) // max(1, c * d))
    for sl in row_blocks(s, chunk):
        J = jacobians(kernel, X[sl], centres, coef.to(X.dtype), M, block_entries).double()
        if per_output:
            # per output k: sum_i (G_i)_k w_ik x_i^T
            g = J * row_weights[sl].double()[:, :, None]
            parts = (g.reshape(g.shape[0], -1).T @ X[sl].double()).reshape(c, d, d)
            fact_out += parts
            fact_sum += parts.sum(0)
        elif fact:
            # sum_i G_i w_i x_i^T with G_i = J_i^T (d x c)
            g = torch.einsum("icd,ic->id", J, row_weights[sl].double())
            fact_sum += g.T @ X[sl].double()
        if agop:
            Jf = J.reshape(-1, d)
            agop_sum += Jf.T @ Jf
            jac_sum += J.sum(0)
    out = FeatureMatrices()
    if fact:
        out.fact = fact_sum / s
    if per_output:
        out.fact_outputs = fact_out / s
    if agop:
        out.agop = agop_sum / s
        if centering:
            mean = jac_sum / s
            out.agop = out.agop - mean.T @ mean
    return out
