"""Block-wise kernel operator and feature matrices against dense and autograd computations."""

import pytest
import torch

from factrfm.features import feature_matrices
from factrfm.kernels import GaussianKernel, LaplaceKernel, PolynomialKernel
from factrfm.operators import KernelOperator, sample_rows, sampled_feature_matrices

KERNELS = [LaplaceKernel(2.0), GaussianKernel(1.5), PolynomialKernel(2)]
IDS = [repr(k) for k in KERNELS]


def _problem(seed=0, n=37, d=4, c=3, m=None):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    C = X if m is None else torch.randn(m, d, generator=g, dtype=torch.float64)
    coef = torch.randn(C.shape[0], c, generator=g, dtype=torch.float64)
    A = torch.randn(d, d, generator=g, dtype=torch.float64)
    M = A @ A.T / d + 0.1 * torch.eye(d, dtype=torch.float64)
    return X, C, coef, M


@pytest.mark.parametrize("kernel", KERNELS, ids=IDS)
def test_operator_products_equal_dense_products_with_many_blocks(kernel):
    X, C, V, M = _problem(m=23)
    K = kernel.matrix(X, C, M)
    op = KernelOperator(kernel, X, M, C, block_entries=50)  # 2 rows per block
    U = torch.randn(X.shape[0], 2, dtype=torch.float64)
    torch.testing.assert_close(op @ V, K @ V)
    torch.testing.assert_close(op.matmul(V[:, 0]), K @ V[:, 0])
    torch.testing.assert_close(op.rmatmul(U), K.T @ U)
    normal, rhs = op.normal_matmul(V, U)
    torch.testing.assert_close(normal, K.T @ (K @ V))
    torch.testing.assert_close(rhs, K.T @ U)
    assert op.shape == (37, 23)


@pytest.mark.parametrize("kernel", KERNELS, ids=IDS)
def test_operator_diagonal_equals_dense_diagonal(kernel):
    X, _, _, M = _problem()
    op = KernelOperator(kernel, X, M, block_entries=30)
    torch.testing.assert_close(op.diagonal(), kernel.matrix(X, X, M).diagonal())


def test_dense_is_refused_above_the_user_limit():
    X, _, _, M = _problem(n=30)
    op = KernelOperator(LaplaceKernel(), X, M, max_dense_entries=899)
    with pytest.raises(ValueError, match="refusing to materialise a 30 x 30"):
        op.dense()
    assert KernelOperator(LaplaceKernel(), X, M, max_dense_entries=900).dense().shape == (30, 30)


def test_operator_rejects_bad_shapes():
    X, _, _, M = _problem()
    with pytest.raises(ValueError, match="centres must have shape"):
        KernelOperator(LaplaceKernel(), X, M, torch.zeros(5, 7, dtype=torch.float64))
    with pytest.raises(ValueError, match="M must have shape"):
        KernelOperator(LaplaceKernel(), X, torch.eye(3))
    with pytest.raises(TypeError, match="kernel must be a Kernel"):
        KernelOperator("laplace", X, M)
    with pytest.raises(ValueError, match="V must have 37 rows"):
        KernelOperator(LaplaceKernel(), X, M).matmul(torch.zeros(5))


@pytest.mark.parametrize("kernel", KERNELS, ids=IDS)
@pytest.mark.parametrize("centering", [False, True])
def test_blockwise_fact_and_agop_equal_dense(kernel, centering):
    """Three routes to the same matrices: the closed form with the dense n x n weights, the
    closed form computed block by block, and the Jacobian route of the sampled function on
    every row (a copy of X as centres forces it)."""
    X, _, alpha, M = _problem()
    W = kernel.gradient_weights(X, X, M)[1]
    dense = feature_matrices(kernel, X, alpha, M, centering=centering, weights=W)
    blocks = feature_matrices(kernel, X, alpha, M, centering=centering, block_entries=40)
    jac = sampled_feature_matrices(kernel, X, X.clone(), alpha, M, alpha.clone(),
                                   centering=centering, block_entries=40)
    for got in (blocks, jac):
        torch.testing.assert_close(got.fact, dense.fact, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(got.agop, dense.agop, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kernel", KERNELS, ids=IDS)
def test_sampled_feature_matrices_match_autograd_on_the_sample(kernel):
    """F = mean_i G_i w_i x_i^T and AGOP = mean_i G_i G_i^T over the sampled rows, with G_i the
    autograd Jacobian of f(x) = K(x, C) coef (Nyström-like centres, arbitrary weights)."""
    X, C, coef, M = _problem(m=11)
    rows = sample_rows(X.shape[0], 9, torch.Generator().manual_seed(3))
    w = torch.randn(9, coef.shape[1], dtype=torch.float64)
    got = sampled_feature_matrices(kernel, X[rows], C, coef, M, w, block_entries=25)

    def f(x):  # written out of place (the library's kernels work in place)
        if isinstance(kernel, PolynomialKernel):
            k = (C @ M @ x + kernel.coef0) ** kernel.degree
        else:
            diff = x[None, :] - C
            r2 = ((diff @ M) * diff).sum(1)
            L = kernel.bandwidth
            k = (torch.exp(-r2 / (2 * L**2)) if isinstance(kernel, GaussianKernel)
                 else torch.exp(-r2.sqrt() / L))
        return k @ coef

    G = torch.stack([torch.autograd.functional.jacobian(f, x) for x in X[rows]])  # (s, c, d)
    fact = torch.einsum("icd,ic,ie->de", G, w, X[rows]) / 9
    agop = torch.einsum("icd,ice->de", G, G) / 9
    torch.testing.assert_close(got.fact, fact, rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(got.agop, agop, rtol=1e-8, atol=1e-12)
    per = sampled_feature_matrices(kernel, X[rows], C, coef, M, w, agop=False, per_output=True)
    per_ref = torch.einsum("icd,ic,ie->cde", G, w, X[rows]) / 9
    torch.testing.assert_close(per.fact_outputs, per_ref, rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(per.fact, fact, rtol=1e-8, atol=1e-12)


def test_sampled_feature_matrices_check_the_weights_shape():
    X, C, coef, M = _problem(m=5)
    with pytest.raises(ValueError, match="row_weights must have shape"):
        sampled_feature_matrices(LaplaceKernel(), X, C, coef, M, torch.zeros(3, 3))


def test_sample_rows_is_seeded_sorted_and_without_replacement():
    a = sample_rows(1000, 100, torch.Generator().manual_seed(0))
    b = sample_rows(1000, 100, torch.Generator().manual_seed(0))
    c = sample_rows(1000, 100, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len(a.unique()) == 100 and torch.equal(a, a.sort().values)
    assert torch.equal(sample_rows(10, None), torch.arange(10))
    assert torch.equal(sample_rows(10, 50), torch.arange(10))
    with pytest.raises(ValueError, match="sample size must be a positive integer"):
        sample_rows(10, 0)


def test_cached_operator_gives_the_block_wise_products():
    g = torch.Generator().manual_seed(3)
    X = torch.randn(50, 4, generator=g, dtype=torch.float64)
    C = X[:17]
    V = torch.randn(17, 2, generator=g, dtype=torch.float64)
    M = torch.eye(4, dtype=torch.float64)
    blocks = KernelOperator(LaplaceKernel(2.0), X, M, C, block_entries=100)
    cached = KernelOperator(LaplaceKernel(2.0), X, M, C, max_cached_entries=10**6)
    torch.testing.assert_close(cached @ V, blocks @ V)
    assert cached._cached is not None and blocks._cached is None
    torch.testing.assert_close(cached.normal_matmul(V)[0], blocks.normal_matmul(V)[0])
