"""Kernels in a learned metric M, computed block by block.

Two families are supported:

* radial kernels ``k_M(x, z) = phi(||x - z||_M)`` with ``||v||_M = sqrt(v^T M v)``
  (:class:`LaplaceKernel`, :class:`GaussianKernel`, :class:`ExponentialKernel`);
* inner-product kernels ``k_M(x, z) = kappa(x^T M z)`` (:class:`PolynomialKernel`, whose
  default ``degree=2, coef0=0`` is the quadratic kernel).

Besides the kernel values, every kernel gives the *gradient coefficients* that the feature
rules need. For a radial kernel the input gradient of ``k_M(x, z_j)`` is
``M (x - z_j) * Omega_j`` with ``Omega = phi'(r) / r``; for an inner-product kernel it is
``M z_j * kappa'(x^T M z)``. Both are returned as an ``(n, m)`` matrix ``W`` by
:meth:`Kernel.gradient_weights`.

Memory: :meth:`Kernel.matrix` returns the ``(n, m)`` matrix and allocates, besides it, only
``O((n + m) d)`` for the transformed inputs; the distance computation is done in place. Code
that must not hold an ``n x m`` matrix at all iterates over :func:`row_blocks`, whose peak
extra memory is ``block_rows * m`` entries.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

__all__ = [
    "Kernel",
    "RadialKernel",
    "LaplaceKernel",
    "GaussianKernel",
    "ExponentialKernel",
    "PolynomialKernel",
    "make_kernel",
    "row_blocks",
    "default_block_rows",
]

#: Default number of kernel entries held at once by block-wise loops (2**25 float32 = 128 MiB).
DEFAULT_BLOCK_ENTRIES = 2**25


def default_block_rows(n_cols: int, per_entry: int = 1, budget: int | None = None) -> int:
    """Rows per block so that a block holds at most ``budget`` entries (times ``per_entry``)."""
    budget = DEFAULT_BLOCK_ENTRIES if budget is None else int(budget)
    return max(1, budget // max(1, n_cols * per_entry))


def row_blocks(n: int, block_rows: int) -> Iterator[slice]:
    """Consecutive row slices of at most ``block_rows`` rows covering ``range(n)``."""
    for start in range(0, n, block_rows):
        yield slice(start, min(start + block_rows, n))


def _check_metric(M: torch.Tensor, d: int) -> None:
    if M.shape != (d, d):
        raise ValueError(
            f"M must have shape ({d}, {d}) to match {d} features, got {tuple(M.shape)}"
        )


class Kernel:
    """Base class: a kernel in a learned metric ``M``.

    Subclasses implement :meth:`matrix` and :meth:`gradient_weights`.
    """

    #: True for kernels of ``||x - z||_M``; False for kernels of ``x^T M z``.
    radial: bool = True

    def matrix(self, X: torch.Tensor, Z: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
        """Kernel matrix ``K[i, j] = k_M(X[i], Z[j])`` of shape ``(len(X), len(Z))``."""
        raise NotImplementedError

    def gradient_weights(
        self, X: torch.Tensor, Z: torch.Tensor, M: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(K, W)``: the kernel matrix and its gradient coefficients.

        Radial kernels: ``grad_x k_M(X[i], Z[j]) = W[i, j] * M (X[i] - Z[j])``.
        Inner-product kernels: ``grad_x k_M(X[i], Z[j]) = W[i, j] * M Z[j]``.
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(vars(self).items()))))


class RadialKernel(Kernel):
    """A kernel ``phi(r)`` of the Mahalanobis distance ``r = ||x - z||_M``.

    Subclasses define ``_profile(r2)`` (the kernel from squared distances) and
    ``_profile_and_omega(r2)`` (the kernel and ``phi'(r) / r``), both free to overwrite ``r2``.
    """

    radial = True

    def __init__(self, bandwidth: float = 10.0):
        bandwidth = float(bandwidth)
        if not math.isfinite(bandwidth) or bandwidth <= 0:
            raise ValueError(f"bandwidth must be a positive finite number, got {bandwidth!r}")
        self.bandwidth = bandwidth

    @staticmethod
    def squared_distances(
        X: torch.Tensor, Z: torch.Tensor, M: torch.Tensor, exact_zeros: bool = True
    ) -> torch.Tensor:
        """``||X[i] - Z[j]||_M^2`` for all pairs, clamped at 0.

        The expansion ``|x|^2 + |z|^2 - 2 x.z`` loses about ``eps (|x|^2 + |z|^2)`` to
        cancellation. With ``exact_zeros`` (needed wherever the result is divided by), values
        below that level are set to exactly 0 (equal points, duplicated rows).
        """
        _check_metric(M, X.shape[1])
        M = M.to(X.dtype)
        XM = X @ M
        x2 = (XM * X).sum(1)
        z2 = x2 if Z is X else ((Z @ M) * Z).sum(1)
        D = torch.addmm(x2[:, None], XM, Z.T, beta=1.0, alpha=-2.0).add_(z2[None, :])
        if not exact_zeros:
            return D.clamp_(min=0)
        tol = (x2[:, None] + z2[None, :]).mul_(8 * torch.finfo(D.dtype).eps)
        return D.masked_fill_(D <= tol, 0.0)

    def matrix(self, X, Z, M):
        return self._profile(self.squared_distances(X, Z, M, exact_zeros=False))

    def gradient_weights(self, X, Z, M):
        return self._profile_and_omega(self.squared_distances(X, Z, M))

    def _profile(self, r2: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """The kernel from squared distances; may overwrite ``r2``."""
        raise NotImplementedError

    def _profile_and_omega(self, r2: torch.Tensor):  # pragma: no cover - abstract
        """``(K, phi'(r) / r)`` from squared distances; may overwrite ``r2``."""
        raise NotImplementedError


class ExponentialKernel(RadialKernel):
    """``k(r) = exp(-(r / L)^q)`` with exponent ``0 < q <= 2``; ``q = 1`` is the Laplace kernel.

    For ``q < 2`` the gradient of ``r^q`` is undefined where ``r = 0`` (a point paired with
    itself, or duplicated rows); there ``Omega`` is set to 0, the value of the symmetric
    sub-gradient. This is what makes duplicated rows harmless.
    """

    def __init__(self, bandwidth: float = 10.0, exponent: float = 1.0):
        super().__init__(bandwidth)
        exponent = float(exponent)
        if not 0 < exponent <= 2:
            raise ValueError(f"exponent must lie in (0, 2], got {exponent!r}")
        self.exponent = exponent

    def _scaled_power(self, r2: torch.Tensor, inplace: bool) -> torch.Tensor:
        """``s = (r / L)^q`` from ``r2 = r^2``."""
        q, L = self.exponent, self.bandwidth
        if q == 1:
            s = r2.sqrt_() if inplace else r2.sqrt()
        elif q == 2:
            s = r2 if inplace else r2.clone()
        else:
            s = r2.pow_(q / 2) if inplace else r2.pow(q / 2)
        return s.mul_(L**-q)

    def _profile(self, r2):
        return self._scaled_power(r2, inplace=True).neg_().exp_()

    def _profile_and_omega(self, r2):
        # phi(r) = exp(-s), s = (r / L)^q;  phi'(r) / r = -q K s / r^2  (0/0 = NaN at r = 0 -> 0)
        s = self._scaled_power(r2, inplace=False)
        K = torch.exp(s.neg())
        omega = s.mul_(K).div_(r2).mul_(-self.exponent)
        return K, omega.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)


class LaplaceKernel(ExponentialKernel):
    """``k(r) = exp(-r / L)``: the kernel of the RFM papers (``L = 10`` there)."""

    def __init__(self, bandwidth: float = 10.0):
        super().__init__(bandwidth, exponent=1.0)

    def __repr__(self) -> str:
        return f"LaplaceKernel(bandwidth={self.bandwidth!r})"


class GaussianKernel(RadialKernel):
    """``k(r) = exp(-r^2 / (2 L^2))``."""

    def _profile(self, r2):
        return r2.mul_(-0.5 / self.bandwidth**2).exp_()

    def _profile_and_omega(self, r2):
        K = self._profile(r2)
        return K, K * (-1.0 / self.bandwidth**2)


class PolynomialKernel(Kernel):
    """``k(x, z) = (x^T M z + coef0)^degree``; the default is the quadratic ``(x^T M z)^2``."""

    radial = False

    def __init__(self, degree: int = 2, coef0: float = 0.0):
        if int(degree) != degree or degree < 1:
            raise ValueError(f"degree must be a positive integer, got {degree!r}")
        if not math.isfinite(float(coef0)):
            raise ValueError(f"coef0 must be finite, got {coef0!r}")
        self.degree = int(degree)
        self.coef0 = float(coef0)

    def _inner(self, X, Z, M):
        _check_metric(M, X.shape[1])
        T = (X @ M.to(X.dtype)) @ Z.T
        return T.add_(self.coef0) if self.coef0 else T

    def matrix(self, X, Z, M):
        return self._inner(X, Z, M).pow_(self.degree)

    def gradient_weights(self, X, Z, M):
        T = self._inner(X, Z, M)
        if self.degree == 1:
            return T, torch.ones_like(T)
        W = T.pow(self.degree - 1)
        return W * T, W.mul_(self.degree)


def make_kernel(
    kernel: str | Kernel, bandwidth: float = 10.0, exponent: float = 1.0
) -> Kernel:
    """Build a kernel from its name (``"laplace"``, ``"gaussian"``, ``"exponential"``,
    ``"quadratic"``) or return a :class:`Kernel` instance unchanged."""
    if isinstance(kernel, Kernel):
        return kernel
    if not isinstance(kernel, str):
        raise TypeError(f"kernel must be a name or a Kernel instance, got {type(kernel).__name__}")
    name = kernel.lower()
    if name == "laplace":
        return LaplaceKernel(bandwidth)
    if name == "gaussian":
        return GaussianKernel(bandwidth)
    if name == "exponential":
        return ExponentialKernel(bandwidth, exponent)
    if name == "quadratic":
        return PolynomialKernel(2)
    raise ValueError(
        f"unknown kernel {kernel!r}; choose 'laplace', 'gaussian', 'exponential' or 'quadratic'"
    )
