"""FACT and AGOP against brute-force per-sample computations (Linear and convolution paths)."""

import torch
import torch.nn.functional as F
from torch import nn

from factrfm.nn import fact_diagnostics, mlp, mse_per_sample

LAM = 1e-2


def _mlp_setup():
    torch.manual_seed(1)
    net = mlp(5, 7, 3, 3).double()
    X = torch.randn(23, 5, dtype=torch.float64)
    Y = torch.randn(23, 3, dtype=torch.float64)
    return net, X, Y


def _layer_inputs(net, X):
    """Inputs h of every Linear of an nn.Sequential MLP: [(name, index in Sequential, h)]."""
    hs, h = [], X
    for i, (name, m) in enumerate(net.named_children()):
        if isinstance(m, nn.Linear):
            hs.append((name, i, h))
        h = m(h)
    return hs


def test_agop_matches_per_sample_jacobian():
    net, X, Y = _mlp_setup()
    res = fact_diagnostics(net, (X, Y), mse_per_sample, weight_decay=LAM, batch_size=5,
                           agop_power=0.5)
    for name, i, h in _layer_inputs(net, X):
        tail = net[i:]
        agop = torch.zeros(h.shape[1], h.shape[1], dtype=torch.float64)
        for hi in h:  # brute force: one full Jacobian per sample
            J = torch.autograd.functional.jacobian(tail, hi)  # (c, in)
            agop += J.T @ J
        agop /= X.shape[0]
        layer = res[name]
        torch.testing.assert_close(layer.agop, agop, rtol=1e-10, atol=1e-12)
        evals, evecs = torch.linalg.eigh(agop)
        sqrt = (evecs * evals.clamp_min(0).sqrt()) @ evecs.T
        # sqrt amplifies round-off in the (near-)zero eigenvalues of a rank-deficient AGOP
        torch.testing.assert_close(layer.agop_pow, sqrt, rtol=0, atol=1e-6 * sqrt.abs().max())


def test_fact_matches_per_sample_definition():
    net, X, Y = _mlp_setup()
    res = fact_diagnostics(net, (X, Y), mse_per_sample, weight_decay=LAM, batch_size=4)
    n = X.shape[0]
    for name, i, h in _layer_inputs(net, X):
        tail = net[i:]
        W = net[i].weight.detach()
        fwd = torch.zeros(W.shape[1], W.shape[1], dtype=torch.float64)
        bwd = torch.zeros(W.shape[0], W.shape[0], dtype=torch.float64)
        for hi, yi in zip(h, Y, strict=True):
            hi = hi.detach().requires_grad_(True)
            z = net[i](hi)
            z.retain_grad()
            loss = mse_per_sample(tail[1:](z)[None], yi[None])[0]
            loss.backward()
            fwd += torch.outer(hi.grad, hi.detach())
            bwd += torch.outer((W @ hi.detach()), z.grad)
        torch.testing.assert_close(res[name].fact, -fwd / (n * LAM), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(res[name].fact_back, -bwd / (n * LAM), rtol=1e-10, atol=1e-12)


class _CNN(nn.Module):
    def __init__(self, conv_cls, k):
        super().__init__()
        self.conv1 = conv_cls(2, 3, k, padding=1)
        self.conv2 = conv_cls(3, 4, k, stride=2)
        self.head = nn.Linear(1, 2)  # replaced after the shape is known

    def features(self, x):
        return self.conv2(torch.relu(self.conv1(x)))

    def forward(self, x):
        return self.head(torch.tanh(self.features(x)).flatten(1))


def _unfold(x, conv):
    """Patches (B, in·k, positions) of ``x`` as ``conv`` sees them."""
    if x.ndim == 4:
        return F.unfold(x, conv.kernel_size, padding=conv.padding, stride=conv.stride)
    x4 = x[:, :, None, :]  # Conv1d as a 1 × k Conv2d
    return F.unfold(x4, (1, conv.kernel_size[0]), padding=(0, conv.padding[0]),
                    stride=(1, conv.stride[0]))


def _check_conv(net, X, Y):
    res = fact_diagnostics(net, (X, Y), mse_per_sample, weight_decay=LAM, batch_size=3)
    n = X.shape[0]
    for name in ("conv1", "conv2"):
        conv = getattr(net, name)
        W = conv.weight.detach().reshape(conv.out_channels, -1)

        # the network as a function of the unfolded patches P of this conv's input
        def from_patches(P, x_in, conv=conv, name=name, W=W):
            z = (W @ P + conv.bias.detach()[:, None])  # (out, positions)
            if name == "conv1":
                shape = conv(x_in[None]).shape[2:]
                a = z.reshape(1, conv.out_channels, *shape)
                f = net.head(torch.tanh(net.conv2(torch.relu(a))).flatten(1))
            else:
                shape = conv(x_in[None]).shape[2:]
                a = z.reshape(1, conv.out_channels, *shape)
                f = net.head(torch.tanh(a).flatten(1))
            return f[0]

        agop = torch.zeros(W.shape[1], W.shape[1], dtype=torch.float64)
        fact = torch.zeros_like(agop)
        for x, y in zip(X, Y, strict=True):
            x_in = x if name == "conv1" else torch.relu(net.conv1(x[None]))[0].detach()
            P = _unfold(x_in[None], conv)[0].detach()  # (in·k, positions)
            J = torch.autograd.functional.jacobian(lambda P_, x_in=x_in: from_patches(P_, x_in), P)
            for p in range(P.shape[1]):  # every position is one h
                Jp = J[:, :, p]  # (c, in·k)
                agop += Jp.T @ Jp
            P_ = P.clone().requires_grad_(True)
            mse_per_sample(from_patches(P_, x_in)[None], y[None])[0].backward()
            fact += P_.grad @ P.T  # Σ_p ∇_{h_p} ℓ h_pᵀ
        torch.testing.assert_close(res[name].agop, agop / n, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(res[name].fact, -fact / (n * LAM), rtol=1e-9, atol=1e-12)
        assert res[name].kind == ("conv2d" if X.ndim == 4 else "conv1d")


def test_conv2d_matches_unfold():
    torch.manual_seed(2)
    net = _CNN(nn.Conv2d, 3).double()
    X = torch.randn(6, 2, 6, 5, dtype=torch.float64)
    feat = net.features(X).flatten(1).shape[1]
    net.head = nn.Linear(feat, 2).double()
    _check_conv(net, X, torch.randn(6, 2, dtype=torch.float64))


def test_conv1d_matches_unfold():
    torch.manual_seed(3)
    net = _CNN(nn.Conv1d, 3).double()
    X = torch.randn(5, 2, 9, dtype=torch.float64)
    feat = net.features(X).flatten(1).shape[1]
    net.head = nn.Linear(feat, 2).double()
    _check_conv(net, X, torch.randn(5, 2, dtype=torch.float64))


class _Bilinear(nn.Module):
    """A model whose weight is a bare parameter used twice (shared): f = V tanh(W x) + V' W x."""

    def __init__(self):
        super().__init__()
        self.W = nn.Parameter(torch.randn(4, 3, dtype=torch.float64))
        self.V = nn.Linear(4, 2).double()

    def forward(self, x):
        z = x @ self.W.T
        return self.V(torch.tanh(z)) + 0.5 * self.V(z)


def test_named_parameter_fact_is_minus_wt_grad_over_lambda():
    torch.manual_seed(4)
    net = _Bilinear()
    X, Y = torch.randn(11, 3, dtype=torch.float64), torch.randn(11, 2, dtype=torch.float64)
    res = fact_diagnostics(net, (X, Y), mse_per_sample, weight_decay=LAM, layers=["W", "V"])
    net.zero_grad()
    mse_per_sample(net(X), Y).mean().backward()
    W = net.W.detach()
    torch.testing.assert_close(res["W"].fact, -W.T @ net.W.grad / LAM)
    torch.testing.assert_close(res["W"].fact_back, -W @ net.W.grad.T / LAM)
    assert res["W"].kind == "param" and res["W"].agop is None
    assert res["V"].kind == "linear" and res["V"].agop is not None
    row = res.to_dataframe().loc["W"]
    assert row["nfa_pearson"] != row["nfa_pearson"]  # NaN: not computed for a bare parameter
