"""Iterative kernel ridge solvers against the exact (Cholesky / dense) solutions."""

import numpy as np
import pytest
import torch

from factrfm import RFMClassifier
from factrfm.iterative import (
    AUTO_EXACT_MAX_ROWS,
    ConvergenceWarning,
    IterativeOptions,
    conjugate_gradient,
    resolve_solver,
    solve_nystrom,
    solve_pcg,
)
from factrfm.kernels import LaplaceKernel
from factrfm.rfm import fit_rfm
from factrfm.solvers import SolverError, solve_cholesky


def _data(n=300, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    Y = torch.stack([torch.sin(2 * X[:, 0]) + X[:, 1] * X[:, 2], X[:, 3].abs()], 1)
    return X, Y


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def test_conjugate_gradient_solves_spd_systems_column_by_column():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(40, 40, generator=g, dtype=torch.float64)
    A = A @ A.T + 40 * torch.eye(40, dtype=torch.float64)
    B = torch.randn(40, 3, generator=g, dtype=torch.float64)
    B[:, 2] = 0  # a zero column must not break the others
    res = conjugate_gradient(lambda V: A @ V, B, tol=1e-12, max_iter=200)
    assert res.converged and res.iterations <= 40
    assert _rel(res.x, torch.linalg.solve(A, B)) < 1e-9
    assert float(res.residual.max()) <= 1e-12


def test_conjugate_gradient_reports_non_convergence():
    A = torch.diag(torch.logspace(0, 8, 50, dtype=torch.float64))
    B = torch.ones(50, 1, dtype=torch.float64)
    with pytest.warns(ConvergenceWarning, match=r"did not reach tol=1e-10 in 3 iterations"):
        res = conjugate_gradient(lambda V: A @ V, B, tol=1e-10, max_iter=3)
    assert not res.converged and res.iterations == 3
    with pytest.raises(SolverError, match="relative residual"):
        conjugate_gradient(lambda V: A @ V, B, tol=1e-10, max_iter=3, on_fail="raise")


@pytest.mark.parametrize("ridge", [1e-1, 1e-3])
def test_pcg_with_nystrom_preconditioner_matches_cholesky(ridge):
    X, Y = _data()
    kernel, M = LaplaceKernel(3.0), torch.eye(5, dtype=torch.float64)
    exact = solve_cholesky(kernel.matrix(X, X, M), Y, ridge).alpha
    res = solve_pcg(kernel, X, Y, M, ridge,
                    IterativeOptions(n_centres=100, tol=1e-10, max_iter=300, block_entries=30000))
    assert res.converged
    assert _rel(res.x, exact) < 1e-7
    # The preconditioner is what makes it fast: far fewer iterations than the problem size.
    assert res.iterations < 100


@pytest.mark.parametrize("ridge", [1e-1, 1e-3])
def test_nystrom_solver_with_every_row_as_centre_is_exact_kernel_ridge(ridge):
    X, Y = _data()
    kernel, M = LaplaceKernel(3.0), torch.eye(5, dtype=torch.float64)
    exact = solve_cholesky(kernel.matrix(X, X, M), Y, ridge).alpha
    sol = solve_nystrom(kernel, X, Y, M, ridge, IterativeOptions(n_centres=10**6, tol=1e-10))
    assert torch.equal(sol.centre_idx, torch.arange(300))
    assert sol.info.converged
    assert _rel(sol.coef, exact) < 1e-6


@pytest.mark.parametrize("cache_entries", [0, 2**28])  # blocks recomputed / K_nm kept
def test_nystrom_solver_matches_the_normal_equations_on_few_centres(cache_entries):
    X, Y = _data()
    kernel, M = LaplaceKernel(3.0), torch.eye(5, dtype=torch.float64)
    ridge = 1e-2
    sol = solve_nystrom(kernel, X, Y, M, ridge,
                        IterativeOptions(n_centres=40, tol=1e-11, seed=5, block_entries=2000,
                                         cache_entries=cache_entries))
    C = X[sol.centre_idx]
    Knm, Kmm = kernel.matrix(X, C, M), kernel.matrix(C, C, M)
    ref = torch.linalg.solve(Knm.T @ Knm + ridge * Kmm, Knm.T @ Y)
    assert sol.info.converged and sol.info.iterations < 40
    assert _rel(sol.coef, ref) < 1e-6


def test_iterative_solvers_reject_bad_input():
    X, Y = _data(n=20)
    M = torch.eye(5, dtype=torch.float64)
    with pytest.raises(ValueError, match="need ridge > 0"):
        solve_nystrom(LaplaceKernel(), X, Y, M, 0.0)
    with pytest.raises(ValueError, match="Y must have 20 rows"):
        solve_pcg(LaplaceKernel(), X, Y[:5], M, 1.0)
    for bad in [dict(n_centres=0), dict(tol=0.0), dict(max_iter=0), dict(on_fail="ignore")]:
        with pytest.raises(ValueError, match=next(iter(bad))):
            IterativeOptions(**bad)


def test_resolve_solver_chooses_by_size_and_obeys_an_override():
    assert resolve_solver("auto", AUTO_EXACT_MAX_ROWS) == "exact"
    assert resolve_solver("auto", AUTO_EXACT_MAX_ROWS + 1) == "iterative"
    assert resolve_solver("exact", 10**7) == "exact"
    assert resolve_solver("iterative", 10) == "iterative"
    with pytest.raises(ValueError, match="solver must be one of"):
        resolve_solver("cg", 10)


def test_iterative_rfm_with_all_centres_follows_the_exact_rfm():
    """With every row a Nyström centre, the iterative loop (residual-weighted FACT on the
    Jacobian route) reproduces the exact loop (closed-form FACT) metric by metric."""
    X, Y = _data(n=200)
    Xv, Yv = _data(n=80, seed=1)
    kw = dict(kernel=LaplaceKernel(3.0), rule="fact", n_iter=3, ridge=[1e-1, 1e-2],
              keep_matrices=True)
    exact = fit_rfm(X, Y, Xv, Yv, **kw)
    it = fit_rfm(X, Y, Xv, Yv, solver="iterative",
                 iterative=IterativeOptions(n_centres=10**6, tol=1e-11), **kw)
    for a, b in zip(exact.history, it.history, strict=True):
        assert a.ridge == b.ridge
        torch.testing.assert_close(b.M, a.M, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(it.predict(Xv), exact.predict(Xv), rtol=1e-5, atol=1e-6)


def test_feature_sample_of_every_row_equals_the_default_feature_step():
    X, Y = _data(n=150)
    kw = dict(kernel=LaplaceKernel(3.0), n_iter=2, ridge=1e-2, select="last", keep_matrices=True)
    a = fit_rfm(X, Y, **kw)
    b = fit_rfm(X, Y, feature_sample=150, **kw)
    c = fit_rfm(X, Y, feature_sample=60, **kw)
    torch.testing.assert_close(b.M, a.M)
    assert not torch.allclose(c.M, a.M)  # a real subsample changes the estimate


def test_fit_rfm_iterative_needs_a_positive_ridge():
    X, Y = _data(n=30)
    with pytest.raises(ValueError, match="needs every ridge > 0"):
        fit_rfm(X, Y, kernel=LaplaceKernel(), n_iter=0, ridge=0.0, select="last",
                solver="iterative")


def test_classifier_on_the_iterative_path_is_accurate():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((1500, 6))
    y = (X[:, 0] * X[:, 1] > 0).astype(int)
    kw = dict(n_iter=3, ridge=1e-3, random_state=0)
    it = RFMClassifier(solver="iterative", n_centres=600, feature_sample=400, **kw)
    it.fit(X[:1000], y[:1000])
    assert it.solver_ == "iterative" and len(it.centres_) == 600
    exact = RFMClassifier(solver="exact", **kw).fit(X[:1000], y[:1000])
    acc_it, acc_exact = it.score(X[1000:], y[1000:]), exact.score(X[1000:], y[1000:])
    assert acc_it >= 0.85 and acc_exact >= 0.85
    assert abs(acc_it - acc_exact) <= 0.05
    with pytest.raises(ValueError, match="solver must be one of"):
        RFMClassifier(solver="cg").fit(X[:50], y[:50])
