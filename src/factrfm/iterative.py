"""Iterative kernel ridge solvers for many rows, with Nyström preconditioners.

Two problems, both solved by preconditioned conjugate gradients (:func:`conjugate_gradient`)
whose only access to the kernel is the block-wise :class:`~factrfm.operators.KernelOperator`:

* **full kernel ridge** ``(K + rho I) alpha = Y`` (:func:`solve_pcg`), the same solution as
  :func:`factrfm.solvers.solve_cholesky`, preconditioned by the Nyström approximation
  ``P = K_nS K_SS^{-1} K_Sn + rho I`` on ``m`` seeded random centres ``S``, applied by the
  Woodbury identity: with ``K_SS = L L^T`` and ``Phi = K_nS L^{-T}``,
  ``P^{-1} = (I - Phi (rho I + Phi^T Phi)^{-1} Phi^T) / rho``. Each iteration costs one
  ``n x n`` block-wise product.
* **Nyström kernel ridge** (in the manner of Falkon), the model ``f(x) = K(x, C) beta`` on ``m``
  seeded random centres ``C``:

      minimise  |K_nm beta - Y|^2 + rho beta^T K_mm beta
      <=>       (K_nm^T K_nm + rho K_mm) beta = K_nm^T Y                 (:func:`solve_nystrom`)

  With every row as a centre this is exact kernel ridge again. Preconditioner: since
  ``K_nm^T K_nm ~ (n/m) K_mm^2`` for uniformly sampled centres, with ``K_mm = T^T T`` and
  ``(n/m) T T^T + rho I = A^T A`` (Cholesky), ``B = T^{-1} A^{-1}`` makes ``B^T H B ~ I``;
  CG runs on ``B^T H B gamma = B^T K_nm^T Y`` and ``beta = B gamma``. Each iteration costs
  one ``n x m`` block-wise pass; memory is ``O(m^2 + block)``.

Both report their iterations and final relative residual, and warn
(:class:`ConvergenceWarning`) or raise (:class:`SolverError`) when the tolerance is not met.
Everything is device-agnostic: tensors stay on the device of ``X`` (no GPU was available when
this was written, so only the CPU path is tested).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from factrfm.kernels import Kernel
from factrfm.operators import KernelOperator, sample_rows
from factrfm.solvers import SolverError

__all__ = [
    "ConvergenceWarning",
    "IterativeOptions",
    "CGResult",
    "conjugate_gradient",
    "NystromPreconditioner",
    "solve_pcg",
    "NystromSolution",
    "solve_nystrom",
    "resolve_solver",
    "SOLVERS",
    "AUTO_EXACT_MAX_ROWS",
]

SOLVERS = ("auto", "exact", "iterative")
#: ``solver="auto"`` solves exactly (Cholesky) up to this many rows, iteratively above.
AUTO_EXACT_MAX_ROWS = 20_000


class ConvergenceWarning(RuntimeWarning):
    """An iterative solver stopped at ``max_iter`` before reaching its tolerance."""


@dataclass
class IterativeOptions:
    """Options of the iterative solvers, gathered in one place.

    n_centres : Nyström centres ``m`` (a seeded uniform sample of the rows; all rows when
        ``m >= n``).
    tol : relative residual ``|r| / |b|`` (per column, of the preconditioned system for the
        Nyström solver) at which CG stops.
    max_iter : most CG iterations.
    on_fail : ``"warn"`` (a :class:`ConvergenceWarning`, the last iterate is used) or ``"raise"``
        (:class:`~factrfm.solvers.SolverError`) when ``tol`` is not reached.
    seed : seed of the centre sample.
    block_entries : kernel entries held at once when the products are computed block by block.
    cache_entries : largest ``n * m`` kernel matrix kept in memory across CG iterations
        (default ``2**28``, 1 GiB in float32); above it every iteration recomputes the blocks.
    """

    n_centres: int = 4000
    tol: float = 1e-4
    max_iter: int = 200
    on_fail: str = "warn"
    seed: int = 0
    block_entries: int | None = None
    cache_entries: int = 2**28

    def __post_init__(self):
        if int(self.n_centres) != self.n_centres or self.n_centres < 1:
            raise ValueError(f"n_centres must be a positive integer, got {self.n_centres!r}")
        if not 0 < self.tol < 1:
            raise ValueError(f"tol must lie in (0, 1), got {self.tol!r}")
        if int(self.max_iter) != self.max_iter or self.max_iter < 1:
            raise ValueError(f"max_iter must be a positive integer, got {self.max_iter!r}")
        if self.on_fail not in ("warn", "raise"):
            raise ValueError(f"on_fail must be 'warn' or 'raise', got {self.on_fail!r}")


def resolve_solver(solver: str, n: int) -> str:
    """``"exact"`` or ``"iterative"``: ``"auto"`` picks exact up to
    :data:`AUTO_EXACT_MAX_ROWS` rows."""
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if solver == "auto":
        return "exact" if n <= AUTO_EXACT_MAX_ROWS else "iterative"
    return solver


@dataclass
class CGResult:
    """Solution, iterations used, final relative residual per column, and whether every
    column reached the tolerance."""

    x: torch.Tensor
    iterations: int
    residual: torch.Tensor
    converged: bool
    history: list[float] = field(default_factory=list)


def conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    B: torch.Tensor,
    precond: Callable[[torch.Tensor], torch.Tensor] | None = None,
    *,
    tol: float = 1e-6,
    max_iter: int = 200,
    on_fail: str = "warn",
    name: str = "CG",
) -> CGResult:
    """Preconditioned CG for ``A X = B`` (``A`` symmetric positive definite), every column of
    ``B`` at once with its own step sizes. The state is kept in float64.

    Stops when every column's ``|r| / |b| <= tol`` or after ``max_iter`` iterations; in the
    second case warns (:class:`ConvergenceWarning`) or raises (:class:`SolverError`) according
    to ``on_fail``, naming the iterations and the residual reached.
    """
    if on_fail not in ("warn", "raise"):
        raise ValueError(f"on_fail must be 'warn' or 'raise', got {on_fail!r}")
    B = B.double()
    if B.ndim == 1:
        B = B[:, None]
    bnorm = B.norm(dim=0).clamp(min=torch.finfo(torch.float64).tiny)
    X = torch.zeros_like(B)
    R = B.clone()
    Z = precond(R) if precond is not None else R
    P = Z.clone()
    rz = (R * Z).sum(0)
    history = []
    it = 0
    for it in range(1, max_iter + 1):
        AP = matvec(P).double()
        pAp = (P * AP).sum(0)
        active = (R.norm(dim=0) / bnorm > tol) & (pAp > 0)
        step = torch.where(active, rz / torch.where(pAp > 0, pAp, 1.0), 0.0)
        X += P * step
        R -= AP * step
        rel = R.norm(dim=0) / bnorm
        history.append(float(rel.max()))
        if not torch.isfinite(rel).all():
            raise SolverError(f"{name}: non-finite residual at iteration {it}")
        if (rel <= tol).all():
            return CGResult(X, it, rel, True, history)
        Z = precond(R) if precond is not None else R
        rz_new = (R * Z).sum(0)
        beta = torch.where(active, rz_new / torch.where(rz != 0, rz, 1.0), 0.0)
        P = Z + P * beta
        rz = rz_new
    rel = R.norm(dim=0) / bnorm
    msg = (f"{name} did not reach tol={tol:g} in {max_iter} iterations: relative residual "
           f"{float(rel.max()):.3g}; raise max_iter, the ridge or the number of Nyström centres")
    if on_fail == "raise":
        raise SolverError(msg)
    warnings.warn(msg, ConvergenceWarning, stacklevel=3)
    return CGResult(X, it, rel, False, history)


def _cholesky_jitter(A: torch.Tensor, what: str) -> torch.Tensor:
    """Lower Cholesky factor of a symmetric PSD ``A`` (float64), adding a growing jitter
    ``eps * mean(diag) * 10^k`` when it is numerically singular."""
    scale = float(A.diagonal().abs().mean()) or 1.0
    eye = torch.eye(A.shape[0], dtype=A.dtype, device=A.device)
    jitter = 0.0
    for k in range(12):
        L, info = torch.linalg.cholesky_ex(A + jitter * eye)
        if int(info) == 0:
            return L
        jitter = torch.finfo(A.dtype).eps * scale * A.shape[0] * 10.0**k
    raise SolverError(f"Cholesky factorisation of {what} failed even with jitter {jitter:.3g}")


def _check_problem(X: torch.Tensor, Y: torch.Tensor, ridge: float) -> torch.Tensor:
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-d tensor (n, d), got shape {tuple(X.shape)}")
    Y = Y[:, None] if Y.ndim == 1 else Y
    if Y.ndim != 2 or Y.shape[0] != X.shape[0]:
        raise ValueError(f"Y must have {X.shape[0]} rows like X, got shape {tuple(Y.shape)}")
    if not ridge > 0:
        raise ValueError(f"the iterative solvers need ridge > 0, got {ridge!r}")
    return Y


class NystromPreconditioner:
    """``P^{-1}`` for ``P = K_nS K_SS^{-1} K_Sn + rho I`` (Woodbury form; see module docstring).

    Memory: the ``(n, m)`` matrix ``Phi`` (in the dtype of ``X``) and ``O(m^2)``.
    """

    def __init__(self, op: KernelOperator, ridge: float, centre_idx: torch.Tensor):
        self.ridge = float(ridge)
        C = op.X[centre_idx]
        K_SS = KernelOperator(op.kernel, C, op.M, block_entries=op.block_entries).matmul(
            torch.eye(len(C), dtype=op.X.dtype, device=op.X.device)
        ).double()
        L = _cholesky_jitter((K_SS + K_SS.T) / 2, "K_SS (Nyström centres)")
        K_nS = KernelOperator(op.kernel, op.X, op.M, C, block_entries=op.block_entries)
        eye = torch.eye(len(C), dtype=op.X.dtype, device=op.X.device)
        Phi = K_nS.matmul(eye).double()
        # Phi = K_nS L^{-T}
        Phi = torch.linalg.solve_triangular(L, Phi.T, upper=False).T
        G = Phi.T @ Phi
        G.diagonal().add_(self.ridge)
        self.G_chol = _cholesky_jitter(G, "rho I + Phi^T Phi")
        self.Phi = Phi.to(op.X.dtype)

    def __call__(self, R: torch.Tensor) -> torch.Tensor:
        PhiR = self.Phi.T.double() @ R
        inner = torch.cholesky_solve(PhiR, self.G_chol)
        return (R - self.Phi.double() @ inner) / self.ridge


def solve_pcg(
    kernel: Kernel,
    X: torch.Tensor,
    Y: torch.Tensor,
    M: torch.Tensor,
    ridge: float,
    options: IterativeOptions | None = None,
) -> CGResult:
    """Full kernel ridge ``(K + ridge I) alpha = Y`` by CG with a Nyström preconditioner.

    ``K`` is never stored: every iteration is one block-wise product. Returns a
    :class:`CGResult` whose ``x`` is ``alpha`` (float64).
    """
    opt = options or IterativeOptions()
    Y = _check_problem(X, Y, ridge)
    op = KernelOperator(kernel, X, M, block_entries=opt.block_entries,
                        max_cached_entries=opt.cache_entries)
    gen = torch.Generator().manual_seed(opt.seed)
    idx = sample_rows(X.shape[0], opt.n_centres, gen).to(X.device)
    precond = NystromPreconditioner(op, ridge, idx)

    def matvec(V):
        return op.matmul(V.to(X.dtype)).double() + ridge * V

    return conjugate_gradient(matvec, Y, precond, tol=opt.tol, max_iter=opt.max_iter,
                              on_fail=opt.on_fail, name="Nyström-preconditioned CG")


@dataclass
class NystromSolution:
    """``f(x) = K(x, centres) @ coef``; ``info`` is the CG report."""

    coef: torch.Tensor
    centres: torch.Tensor
    centre_idx: torch.Tensor
    info: CGResult


def solve_nystrom(
    kernel: Kernel,
    X: torch.Tensor,
    Y: torch.Tensor,
    M: torch.Tensor,
    ridge: float,
    options: IterativeOptions | None = None,
    centre_idx: torch.Tensor | None = None,
) -> NystromSolution:
    """Nyström kernel ridge with a Falkon-style preconditioner (see the module docstring).

    ``centre_idx`` fixes the centres (rows of ``X``); by default they are a seeded uniform
    sample of ``options.n_centres`` rows. ``coef`` is returned in the dtype of ``X``.
    """
    opt = options or IterativeOptions()
    Y = _check_problem(X, Y, ridge)
    n = X.shape[0]
    if centre_idx is None:
        gen = torch.Generator().manual_seed(opt.seed)
        centre_idx = sample_rows(n, opt.n_centres, gen)
    centre_idx = centre_idx.to(X.device)
    C = X[centre_idx]
    m = C.shape[0]
    op = KernelOperator(kernel, X, M, C, block_entries=opt.block_entries,
                        max_cached_entries=opt.cache_entries)
    K_mm = KernelOperator(kernel, C, M, block_entries=opt.block_entries).matmul(
        torch.eye(m, dtype=X.dtype, device=X.device)
    ).double()
    K_mm = (K_mm + K_mm.T) / 2
    T = _cholesky_jitter(K_mm, "K_mm (Nyström centres)").T  # upper: K_mm ~ T^T T
    Q = (n / m) * (T @ T.T)
    Q.diagonal().add_(ridge)
    A = _cholesky_jitter(Q, "(n/m) T T^T + ridge I").T  # upper

    def apply_B(V):  # B V = T^{-1} A^{-1} V
        return torch.linalg.solve_triangular(
            T, torch.linalg.solve_triangular(A, V, upper=True), upper=True)

    def apply_Bt(V):  # B^T V = A^{-T} T^{-T} V
        return torch.linalg.solve_triangular(
            A.T, torch.linalg.solve_triangular(T.T, V, upper=False), upper=False)

    # Right-hand side K_nm^T Y in one pass.
    rhs = op.rmatmul(Y.to(X.dtype)).double()

    def matvec(V):
        BV = apply_B(V)
        KtKBV, _ = op.normal_matmul(BV.to(X.dtype))
        return apply_Bt(KtKBV.double() + ridge * (K_mm @ BV))

    info = conjugate_gradient(matvec, apply_Bt(rhs), tol=opt.tol, max_iter=opt.max_iter,
                              on_fail=opt.on_fail, name="Nyström (Falkon-style) CG")
    coef = apply_B(info.x)
    info.x = coef
    return NystromSolution(coef.to(X.dtype), C, centre_idx, info)
