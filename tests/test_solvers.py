"""Kernel ridge solvers against a direct solve."""

import pytest
import torch

from factrfm.kernels import LaplaceKernel
from factrfm.solvers import RidgePath, SolverError, solve_cholesky


def _system(n=40, dtype=torch.float64, duplicate=False):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, 3, generator=g, dtype=dtype)
    if duplicate:
        X = torch.cat([X, X[:5]])
    K = LaplaceKernel(2.0).matrix(X, X, torch.eye(3, dtype=dtype))
    Y = torch.randn(n, 2, generator=g, dtype=dtype)
    if duplicate:
        Y = torch.cat([Y, Y[:5]])  # consistent targets for the duplicated rows
    return K, Y


@pytest.mark.parametrize("ridge", [0.0, 1e-3, 1.0])
def test_cholesky_matches_direct_solve(ridge):
    K, Y = _system()
    ref = torch.linalg.solve(K + ridge * torch.eye(len(K), dtype=K.dtype), Y)
    sol = solve_cholesky(K, Y, ridge)
    torch.testing.assert_close(sol.alpha, ref, rtol=1e-7, atol=1e-8)
    assert sol.shift == ridge


def test_cholesky_leaves_K_alone_unless_told():
    K, Y = _system()
    K0 = K.clone()
    solve_cholesky(K, Y, 0.5)
    assert torch.equal(K, K0)
    solve_cholesky(K, Y, 0.5, overwrite=True)
    assert not torch.equal(K, K0)


def test_singular_kernel_is_solved_with_jitter_and_a_warning():
    K, Y = _system(dtype=torch.float32, duplicate=True)  # rank deficient: 5 duplicated rows
    with pytest.warns(RuntimeWarning, match="jitter"):
        sol = solve_cholesky(K, Y, 0.0)
    assert sol.shift > 0 and sol.jitter == sol.shift
    assert torch.isfinite(sol.alpha).all()
    resid = (K + sol.shift * torch.eye(len(K))) @ sol.alpha - Y
    assert float(resid.norm() / Y.norm()) < 1e-2


def test_hopeless_system_raises_a_clear_error():
    K = -torch.eye(3)
    with pytest.raises(SolverError, match="larger ridge"):
        solve_cholesky(K, torch.ones(3, 1), 0.0, max_tries=2)


def test_negative_ridge_is_rejected():
    K, Y = _system()
    with pytest.raises(ValueError, match="ridge must be >= 0"):
        solve_cholesky(K, Y, -1.0)
    with pytest.raises(ValueError, match="ridge must be >= 0"):
        RidgePath(K, Y).coefficients(-1.0)


@pytest.mark.parametrize("ridge", [1e-3, 0.1, 10.0])
def test_ridge_path_matches_cholesky_for_every_ridge(ridge):
    K, Y = _system()
    path = RidgePath(K, Y)
    alpha = solve_cholesky(K, Y, ridge).alpha
    torch.testing.assert_close(path.coefficients(ridge), alpha, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(path.fitted(ridge), K @ alpha, rtol=1e-6, atol=1e-8)
    Kv = K[:7]
    torch.testing.assert_close(path.predict(path.project(Kv), ridge), Kv @ alpha)


def test_ridge_path_at_zero_ridge_is_the_minimum_norm_solution():
    K, Y = _system(duplicate=True)
    alpha = RidgePath(K, Y).coefficients(0.0)
    ref = torch.linalg.pinv(K, hermitian=True) @ Y
    torch.testing.assert_close(alpha, ref, rtol=1e-5, atol=1e-6)
