"""Closed-form Jacobians, AGOP and FACT matrices against autograd (float64)."""

import pytest
import torch

from factrfm.features import (
    FeatureLearningError,
    FeatureMatrices,
    feature_matrices,
    jacobians,
    normalize_metric,
    update_metric,
)
from factrfm.kernels import (
    ExponentialKernel,
    GaussianKernel,
    LaplaceKernel,
    PolynomialKernel,
)
from factrfm.linalg import psd_power

KERNELS = [
    LaplaceKernel(2.0),
    GaussianKernel(1.5),
    ExponentialKernel(2.0, exponent=0.7),
    ExponentialKernel(2.0, exponent=1.5),
    ExponentialKernel(2.0, exponent=2.0),
    PolynomialKernel(2),
    PolynomialKernel(3, coef0=1.0),
]
IDS = [repr(k) for k in KERNELS]


def _problem(seed=0, n=13, d=5, c=3):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    alpha = torch.randn(n, c, generator=g, dtype=torch.float64)
    A = torch.randn(d, d, generator=g, dtype=torch.float64)
    M = A @ A.T / d + 0.1 * torch.eye(d, dtype=torch.float64)
    return X, alpha, M


def _reference_kernel(kernel, x, Z, M):
    """k_M(x, Z[j]) written from the definitions, out of place, so autograd can differentiate it
    (the library's kernels work in place for speed)."""
    if isinstance(kernel, PolynomialKernel):
        return (Z @ M @ x + kernel.coef0) ** kernel.degree
    diff = x[None, :] - Z
    r = ((diff @ M) * diff).sum(1).sqrt()
    L = kernel.bandwidth
    if isinstance(kernel, GaussianKernel):
        return torch.exp(-(r**2) / (2 * L**2))
    return torch.exp(-((r / L) ** kernel.exponent))


def _autograd_jacobians(kernel, X, centres, alpha, M):
    """Per-point Jacobians of f(x) = K(x, centres) alpha, one point at a time."""

    def f(x):
        return _reference_kernel(kernel, x, centres, M) @ alpha

    return torch.stack([torch.autograd.functional.jacobian(f, x) for x in X])  # (m, c, d)


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("kernel", KERNELS, ids=IDS)
def test_jacobians_match_autograd_at_new_points(kernel):
    X, alpha, M = _problem()
    Xnew = _problem(seed=1, n=7)[0]
    ours = jacobians(kernel, Xnew, X, alpha, M)
    ref = _autograd_jacobians(kernel, Xnew, X, alpha, M)
    assert ours.shape == (7, 3, 5)
    assert _rel(ours, ref) <= 1e-6


@pytest.mark.parametrize("kernel", KERNELS, ids=IDS)
def test_agop_and_fact_match_autograd(kernel):
    X, alpha, M = _problem()
    n = X.shape[0]
    # Autograd Jacobian at training points, excluding the (non-differentiable for q<2) self
    # term: its gradient is zero by symmetry for radial kernels, which is what we define.
    G = torch.stack(
        [
            torch.autograd.functional.jacobian(
                lambda x, i=i: (
                    _reference_kernel(kernel, x, torch.cat([X[:i], X[i + 1 :]]), M)
                    @ torch.cat([alpha[:i], alpha[i + 1 :]])
                )
                if kernel.radial
                else _reference_kernel(kernel, x, X, M) @ alpha,
                X[i],
            )
            for i in range(n)
        ]
    )  # (n, c, d)
    agop_ref = torch.einsum("ncd,nce->de", G, G) / n
    fact_ref = torch.einsum("ncd,nc,ne->de", G, alpha, X) / n
    mats = feature_matrices(kernel, X, alpha, M, block_entries=40)  # several blocks
    assert _rel(mats.agop, agop_ref) <= 1e-6
    assert _rel(mats.fact, fact_ref) <= 1e-6
    assert mats.fact_outputs is None
    # Per output k: F_k = (1/n) sum_i (G_i)_k alpha_ik x_i^T, and F = sum_k F_k.
    per = feature_matrices(kernel, X, alpha, M, agop=False, per_output=True, block_entries=40)
    assert per.fact_outputs.shape == (3, 5, 5)
    for k in range(3):
        ref_k = torch.einsum("nd,n,ne->de", G[:, k], alpha[:, k], X) / n
        assert _rel(per.fact_outputs[k], ref_k) <= 1e-6
    assert _rel(per.fact, fact_ref) <= 1e-6
    assert _rel(jacobians(kernel, X, X, alpha, M), G) <= 1e-6
    Gc = G - G.mean(0, keepdim=True)
    centred = feature_matrices(kernel, X, alpha, M, fact=False, centering=True)
    assert centred.fact is None
    assert _rel(centred.agop, torch.einsum("ncd,nce->de", Gc, Gc) / n) <= 1e-6


@pytest.mark.parametrize("kernel", KERNELS[:2] + KERNELS[5:6], ids=IDS[:2] + IDS[5:6])
def test_fact_is_the_loss_gradient_outer_product(kernel):
    """F is -(1/(n rho)) sum_i grad_x l_i x_i^T for l_i = ||f(x_i) - y_i||^2 / 2 (MATH §3)."""
    X, _, M = _problem(seed=3)
    Y = torch.randn(X.shape[0], 3, dtype=torch.float64)
    rho = 0.3
    K = kernel.matrix(X, X, M)
    alpha = torch.linalg.solve(K + rho * torch.eye(len(X), dtype=X.dtype), Y)
    resid = K @ alpha - Y
    assert torch.allclose(resid, -rho * alpha)
    mats = feature_matrices(kernel, X, alpha, M, agop=False)
    G = jacobians(kernel, X, X, alpha, M)  # (n, c, d)
    grad_loss = torch.einsum("ncd,nc->nd", G, resid)
    ref = -(grad_loss.T @ X) / (len(X) * rho)
    assert _rel(mats.fact, ref) <= 1e-6


def test_fact_matrix_of_radial_kernel_is_M_times_symmetric():
    X, alpha, M = _problem(seed=4)
    F = feature_matrices(LaplaceKernel(2.0), X, alpha, M, agop=False).fact
    S = torch.linalg.solve(M, F)
    assert torch.allclose(S, S.T, atol=1e-10)


@pytest.mark.parametrize("rule", ["fact", "fact-geomean", "fact-inner"])
def test_fact_update_leaves_M_fixed_when_F_equals_M(rule):
    _, _, M = _problem(seed=5)
    new = update_metric(rule, M, FeatureMatrices(fact=M.clone()))
    assert _rel(new, M) <= 1e-10


def test_per_output_fact_update():
    """(sum_k F_k F_k^T)^{1/2}: FACT-RFM's update for one output; for several it squares each
    output's matrix before adding, so outputs with opposite FACT matrices do not cancel."""
    X, alpha, M = _problem(seed=9, c=1)
    mats = feature_matrices(LaplaceKernel(2.0), X, alpha, M, agop=False, per_output=True)
    one = update_metric("fact-per-output", M, mats)
    assert _rel(one, update_metric("fact", M, mats)) <= 1e-10
    F = M.clone()
    two = FeatureMatrices(fact=F - F, fact_outputs=torch.stack([F, -F]))
    assert _rel(update_metric("fact-per-output", M, two), 2**0.5 * M) <= 1e-10
    with pytest.raises(FeatureLearningError, match="M = 0"):
        update_metric("fact", M, two)  # the summed matrix cancels exactly
    with pytest.raises(ValueError, match="per_output=True"):
        update_metric("fact-per-output", M, FeatureMatrices(fact=F))


def test_agop_update_takes_the_power():
    _, _, M = _problem(seed=6)
    A = M @ M
    assert _rel(update_metric("agop", M, FeatureMatrices(agop=A), agop_power=0.5), M) <= 1e-10
    assert _rel(update_metric("agop", M, FeatureMatrices(agop=A), agop_power=1.0), A) <= 1e-12


def test_diag_update_keeps_only_the_diagonal():
    _, _, M = _problem(seed=7)
    F = torch.randn(5, 5, dtype=torch.float64)
    new = update_metric("fact", M, FeatureMatrices(fact=F), diag=True)
    assert torch.allclose(new, torch.diag(F.norm(dim=1)))


def test_psd_power_clips_roundoff_negatives():
    v = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    # rank one, with one tiny negative eigenvalue
    A = v @ v.T - 1e-14 * torch.eye(2, dtype=torch.float64)
    R = psd_power(A, 0.5)
    assert torch.isfinite(R).all()
    assert torch.allclose(R @ R, v @ v.T, atol=1e-6)


def test_update_of_a_flat_function_raises():
    from factrfm.features import FeatureLearningError

    M = torch.eye(3, dtype=torch.float64)
    with pytest.raises(FeatureLearningError, match="M = 0"):
        update_metric("fact", M, FeatureMatrices(fact=torch.zeros(3, 3, dtype=torch.float64)))


def test_normalizations():
    _, _, M = _problem(seed=8)
    assert normalize_metric(M, "max").abs().max() == pytest.approx(1.0)
    assert torch.trace(normalize_metric(M, "trace")) == pytest.approx(5.0)
    assert normalize_metric(M, "none") is M
    with pytest.raises(ValueError, match="pairs"):
        normalize_metric(M, "median")
    with pytest.raises(ValueError, match="unknown normalize"):
        normalize_metric(M, "median-distance")


def test_median_normalization_against_brute_force():
    from factrfm.features import median_distance, pair_differences

    g = torch.Generator().manual_seed(3)
    X = torch.randn(40, 5, generator=g, dtype=torch.float64)
    D = pair_differences(X)  # 780 pairs <= 4096: every pair once
    assert D.shape == (780, 5)
    _, _, M = _problem(seed=8)
    brute = sorted(float((X[i] - X[j]) @ M @ (X[i] - X[j])) ** 0.5
                   for i in range(40) for j in range(i + 1, 40))
    # torch's median of an even count is the lower of the two middle values
    assert float(median_distance(M, D)) == pytest.approx(brute[389], rel=1e-12)
    out = normalize_metric(M, "median", pairs=D, target=2.5)
    assert float(median_distance(out, D)) == pytest.approx(2.5, rel=1e-12)
    torch.testing.assert_close(out / out.abs().max(), M / M.abs().max())


def test_pair_differences_sample_distinct_rows_reproducibly():
    from factrfm.features import pair_differences

    X = torch.arange(300, dtype=torch.float64)[:, None]  # 44,850 pairs > 4096: a sample
    a = pair_differences(X, 1000, torch.Generator().manual_seed(0))
    b = pair_differences(X, 1000, torch.Generator().manual_seed(0))
    assert a.shape == (1000, 1) and torch.equal(a, b)
    assert (a != 0).all()  # never a row with itself
    with pytest.raises(ValueError, match="at least 2 training rows"):
        pair_differences(X[:1])


def test_median_normalization_of_a_degenerate_metric_raises():
    from factrfm.features import FeatureLearningError, pair_differences

    X = torch.zeros(30, 3, dtype=torch.float64)
    X[:, 0] = torch.arange(30)
    M = torch.diag(torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64))  # blind to column 0
    with pytest.raises(FeatureLearningError, match="median distance"):
        normalize_metric(M, "median", pairs=pair_differences(X), target=1.0)


@pytest.mark.parametrize("c", [1, 30])  # product route (small c) and entry-wise route (large c)
@pytest.mark.parametrize("kernel", [KERNELS[0], KERNELS[5]], ids=[IDS[0], IDS[5]])
def test_fact_matrix_routes_match_the_jacobian_formula(kernel, c):
    from factrfm.features import _fact_operand

    X, alpha, M = _problem(seed=9, n=17, d=4, c=c)
    assert (_fact_operand(alpha, X) is None) == (c == 30)
    G = jacobians(kernel, X, X, alpha, M)
    ref = torch.einsum("ncd,nc,ne->de", G, alpha, X) / len(X)
    assert _rel(feature_matrices(kernel, X, alpha, M, agop=False).fact, ref) <= 1e-6
