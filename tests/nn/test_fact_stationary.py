"""FACT holds at a stationary point of the regularised loss and fails before it."""

import pytest
import torch
from torch.func import functional_call

from factrfm.nn import fact_diagnostics, lbfgs_polish, mlp, mse_per_sample, regularised_grad_norm

LAM = 3e-2


def _newton_polish(net, X, Y, lam, tol=1e-12, steps=20):
    """Exact Newton steps on the flat parameter vector of a tiny network (float64)."""
    names = [k for k, _ in net.named_parameters()]
    shapes = [p.shape for _, p in net.named_parameters()]

    def unflat(v):
        out, i = {}, 0
        for k, s in zip(names, shapes, strict=True):
            out[k] = v[i:i + s.numel()].view(s)
            i += s.numel()
        return out

    def objective(v):
        return mse_per_sample(functional_call(net, unflat(v), (X,)), Y).mean() + 0.5 * lam * (v @ v)

    v = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    for _ in range(steps):
        g = torch.func.grad(objective)(v)
        if g.norm() < tol:
            break
        v = v - torch.linalg.solve(torch.func.hessian(objective)(v), g)
    with torch.no_grad():
        for p, val in zip(net.parameters(), unflat(v).values(), strict=True):
            p.copy_(val)


def _data():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(40, 4, generator=g, dtype=torch.float64)
    return X, torch.sin(X[:, :2])


def _net():
    # tanh: the regularised loss is smooth, so Newton converges to machine precision (a tiny ReLU
    # network's loss has kinks at which L-BFGS stalls). FACT does not depend on the activation.
    torch.manual_seed(0)
    return mlp(4, 6, 2, 2, activation=torch.nn.Tanh).double()


@pytest.fixture(scope="module")
def early_and_converged():
    X, Y = _data()
    net = _net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2, weight_decay=LAM)
    for _ in range(20):
        opt.zero_grad()
        mse_per_sample(net(X), Y).mean().backward()
        opt.step()
    early = fact_diagnostics(net, (X, Y), mse_per_sample, optimizer=opt)
    early_grad = regularised_grad_norm(net, X, Y, mse_per_sample, LAM)
    lbfgs_polish(net, X, Y, mse_per_sample, LAM, tol=1e-6, max_iter=1000)
    _newton_polish(net, X, Y, LAM)
    grad = regularised_grad_norm(net, X, Y, mse_per_sample, LAM)
    converged = fact_diagnostics(net, (X, Y), mse_per_sample, optimizer=opt, batch_size=13)
    return early, early_grad, converged, grad


def test_fact_equals_wtw_at_stationary_point(early_and_converged):
    _, _, res, grad = early_and_converged
    assert grad < 1e-9
    assert len(res) == 3
    for row in res.table():
        assert row["fact_relerr"] < 1e-6, row
        assert row["fact_back_relerr"] < 1e-6, row
        assert row["fact_sym_relerr"] < 1e-6, row
        assert row["fact_pearson"] > 1 - 1e-9
        assert row["stationarity"] < 1e-6


def test_fact_fails_when_stopped_early(early_and_converged):
    early, early_grad, _, _ = early_and_converged
    assert early_grad > 1e-2
    for row in early.table():
        assert row["fact_relerr"] > 0.1, row
        assert row["fact_back_relerr"] > 0.1, row


def test_fact_matrix_entries_at_stationary_point(early_and_converged):
    _, _, res, _ = early_and_converged
    for layer in res.layers:
        torch.testing.assert_close(layer.fact, layer.wtw, rtol=0, atol=1e-7 * layer.wtw.abs().max())
        torch.testing.assert_close(layer.fact_back, layer.wwt, rtol=0,
                                   atol=1e-7 * layer.wwt.abs().max())
