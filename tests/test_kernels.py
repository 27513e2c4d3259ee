"""Kernel values against their definitions, block invariance, dtypes and argument checks."""

import pytest
import torch

from factrfm.kernels import (
    ExponentialKernel,
    GaussianKernel,
    LaplaceKernel,
    PolynomialKernel,
    default_block_rows,
    make_kernel,
    row_blocks,
)


def _data(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(9, 4, generator=g, dtype=dtype)
    Z = torch.randn(6, 4, generator=g, dtype=dtype)
    A = torch.randn(4, 4, generator=g, dtype=dtype)
    return X, Z, A @ A.T + 0.1 * torch.eye(4, dtype=dtype)


def _brute_dist(X, Z, M):
    diff = X[:, None, :] - Z[None, :, :]
    return torch.einsum("ijd,de,ije->ij", diff, M, diff).sqrt()


@pytest.mark.parametrize(
    "kernel, phi",
    [
        (LaplaceKernel(2.0), lambda r: torch.exp(-r / 2.0)),
        (GaussianKernel(1.5), lambda r: torch.exp(-(r**2) / (2 * 1.5**2))),
        (ExponentialKernel(3.0, 0.5), lambda r: torch.exp(-((r / 3.0) ** 0.5))),
    ],
)
def test_radial_kernels_match_their_definition(kernel, phi):
    X, Z, M = _data()
    torch.testing.assert_close(kernel.matrix(X, Z, M), phi(_brute_dist(X, Z, M)))


def test_polynomial_kernel_matches_its_definition():
    X, Z, M = _data()
    torch.testing.assert_close(PolynomialKernel(3, 0.5).matrix(X, Z, M), (X @ M @ Z.T + 0.5) ** 3)
    torch.testing.assert_close(make_kernel("quadratic").matrix(X, Z, M), (X @ M @ Z.T) ** 2)


def test_self_distances_and_duplicates_are_exactly_zero():
    X, _, M = _data(torch.float32)
    X = torch.cat([X * 100, X[:2] * 100])  # large norms, duplicated rows
    D = LaplaceKernel.squared_distances(X, X, M)
    assert (D.diagonal() == 0).all()
    assert D[0, 9] == 0 and D[1, 10] == 0
    assert (D >= 0).all()


def test_float32_matches_float64():
    X, Z, M = _data()
    k = LaplaceKernel(2.0)
    K32 = k.matrix(X.float(), Z.float(), M.float())
    assert K32.dtype == torch.float32
    torch.testing.assert_close(K32.double(), k.matrix(X, Z, M), rtol=1e-5, atol=1e-6)


def test_row_blocks_cover_every_row_once():
    covered = torch.cat([torch.arange(11)[sl] for sl in row_blocks(11, 4)])
    assert covered.tolist() == list(range(11))
    assert default_block_rows(1000, per_entry=2, budget=10_000) == 5
    assert default_block_rows(10**9, budget=10) == 1


def test_wrong_metric_shape_is_rejected():
    X, Z, _ = _data()
    with pytest.raises(ValueError, match=r"M must have shape \(4, 4\)"):
        LaplaceKernel().matrix(X, Z, torch.eye(3, dtype=X.dtype))


@pytest.mark.parametrize(
    "factory, match",
    [
        (lambda: LaplaceKernel(-1), "bandwidth must be"),
        (lambda: GaussianKernel(float("nan")), "bandwidth must be"),
        (lambda: ExponentialKernel(1.0, 0.0), "exponent must lie"),
        (lambda: PolynomialKernel(0), "degree must be"),
        (lambda: make_kernel("rbf"), "unknown kernel"),
    ],
)
def test_bad_kernel_arguments(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


def test_make_kernel_rejects_other_types():
    with pytest.raises(TypeError, match="kernel must be"):
        make_kernel(3)


def test_kernels_compare_by_value():
    assert LaplaceKernel(2.0) == LaplaceKernel(2.0)
    assert LaplaceKernel(2.0) != LaplaceKernel(3.0)
    assert hash(GaussianKernel(1.0)) == hash(GaussianKernel(1.0))
