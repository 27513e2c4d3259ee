"""Reading λ from optimisers, the warnings for decoupled or zero decay, and input errors."""

import warnings

import pytest
import torch

from factrfm.nn import FactAssumptionWarning, fact_diagnostics, mlp, mse_per_sample
from factrfm.nn.optim import optimizer_weight_decay


def _setup():
    torch.manual_seed(0)
    net = mlp(3, 4, 1, 2).double()
    X, Y = torch.randn(9, 3, dtype=torch.float64), torch.randn(9, 2, dtype=torch.float64)
    return net, X, Y


def test_sgd_weight_decay_is_read_without_warning():
    net, X, Y = _setup()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, weight_decay=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FactAssumptionWarning)
        res = fact_diagnostics(net, (X, Y), mse_per_sample, optimizer=opt)
    assert [r["weight_decay"] for r in res.table()] == [1e-3, 1e-3]
    assert res.warnings == []
    # FACT scales as 1/λ: the explicit λ gives the same matrix
    res2 = fact_diagnostics(net, (X, Y), mse_per_sample, weight_decay=1e-3)
    torch.testing.assert_close(res["fc0"].fact, res2["fc0"].fact)


def test_per_group_weight_decay_is_used_per_layer():
    net, X, Y = _setup()
    opt = torch.optim.Adam([
        {"params": [net.fc0.weight, net.fc0.bias], "weight_decay": 1e-2},
        {"params": [net.fc1.weight, net.fc1.bias], "weight_decay": 1e-4},
    ])
    res = fact_diagnostics(net, (X, Y), mse_per_sample, optimizer=opt)
    assert res["fc0"].weight_decay == 1e-2 and res["fc1"].weight_decay == 1e-4
    ref = fact_diagnostics(net, (X, Y), mse_per_sample, weight_decay={"fc0": 1e-2, "fc1": 1e-4})
    for name in ("fc0", "fc1"):
        torch.testing.assert_close(res[name].fact, ref[name].fact)
    # a single λ for both layers rescales fc1's FACT by 1e-4 / 1e-2
    one = fact_diagnostics(net, (X, Y), mse_per_sample, weight_decay=1e-2)
    torch.testing.assert_close(one["fc1"].fact, res["fc1"].fact * 1e-2)


@pytest.mark.parametrize("make", [
    lambda p: torch.optim.AdamW(p, weight_decay=1e-2),
    lambda p: torch.optim.Adam(p, weight_decay=1e-2, decoupled_weight_decay=True),
])
def test_decoupled_decay_warns(make):
    net, X, Y = _setup()
    opt = make(net.parameters())
    with pytest.warns(FactAssumptionWarning, match="decoupled"):
        res = fact_diagnostics(net, (X, Y), mse_per_sample, optimizer=opt)
    assert any("decoupled" in m for m in res.warnings)
    assert optimizer_weight_decay(opt)[id(net.fc0.weight)] == (1e-2, False)


def test_zero_decay_warns_and_reports_unscaled_fact():
    net, X, Y = _setup()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.warns(FactAssumptionWarning, match="zero"):
        res = fact_diagnostics(net, (X, Y), mse_per_sample, optimizer=opt)
    row = res.table()[0]
    assert row["fact_relerr"] != row["fact_relerr"]  # NaN, and said so in the warning
    ref = fact_diagnostics(net, (X, Y), mse_per_sample, weight_decay=0.5)
    torch.testing.assert_close(res["fc0"].fact, 0.5 * ref["fc0"].fact)
    assert row["fact_pearson"] == pytest.approx(ref.table()[0]["fact_pearson"])


def test_unknown_optimizer_warns():
    class MyOpt(torch.optim.Optimizer):
        def __init__(self, params):
            super().__init__(params, {"lr": 0.1, "weight_decay": 1e-3})

        def step(self, closure=None):
            return None

    net, X, Y = _setup()
    with pytest.warns(FactAssumptionWarning, match="cannot tell"):
        fact_diagnostics(net, (X, Y), mse_per_sample, optimizer=MyOpt(net.parameters()))


def test_bad_inputs_raise_clear_errors():
    net, X, Y = _setup()
    with pytest.raises(ValueError, match="exactly one"):
        fact_diagnostics(net, (X, Y), mse_per_sample)
    with pytest.raises(ValueError, match="exactly one"):
        fact_diagnostics(net, (X, Y), mse_per_sample, weight_decay=1e-3,
                         optimizer=torch.optim.SGD(net.parameters(), lr=0.1))
    with pytest.raises(ValueError, match="one loss per sample"):
        fact_diagnostics(net, (X, Y), torch.nn.MSELoss(), weight_decay=1e-3)
    with pytest.raises(ValueError, match="one loss per sample"):
        fact_diagnostics(net, (X, Y), torch.nn.MSELoss(reduction="none"), weight_decay=1e-3)
    with pytest.raises(ValueError, match="weight_decay"):
        fact_diagnostics(net, (X, Y), mse_per_sample, weight_decay=-1.0)
    with pytest.raises(ValueError, match="neither a module nor a parameter"):
        fact_diagnostics(net, (X, Y), mse_per_sample, weight_decay=1e-3, layers=["nope"])
    with pytest.raises(ValueError, match="ndim >= 2"):
        fact_diagnostics(net, (X, Y), mse_per_sample, weight_decay=1e-3, layers=["fc0.bias"])
    with pytest.raises(ValueError, match="not a supported"):
        fact_diagnostics(net, (X, Y), mse_per_sample, weight_decay=1e-3, layers=["act0"])
    with pytest.raises(ValueError, match="no value for layer"):
        fact_diagnostics(net, (X, Y), mse_per_sample, weight_decay={"fc0": 1e-3})
    with pytest.raises(TypeError, match="DataLoader"):
        fact_diagnostics(net, X, mse_per_sample, weight_decay=1e-3)
    with pytest.raises(ValueError, match="rows"):
        fact_diagnostics(net, (X, Y[:3]), mse_per_sample, weight_decay=1e-3)
    with pytest.raises(TypeError, match="optimizer"):
        optimizer_weight_decay("sgd")
    other = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1, weight_decay=1e-3)
    with pytest.raises(ValueError, match="not held by the optimizer"):
        fact_diagnostics(net, (X, Y), mse_per_sample, optimizer=other)
    nan_net = mlp(3, 4, 1, 2).double()
    with torch.no_grad():
        nan_net.fc0.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        fact_diagnostics(nan_net, (X, Y), mse_per_sample, weight_decay=1e-3)


def test_dataloader_and_tensor_pair_agree():
    net, X, Y = _setup()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, Y), batch_size=4)
    a = fact_diagnostics(net, loader, mse_per_sample, weight_decay=1e-3)
    b = fact_diagnostics(net, (X, Y), mse_per_sample, weight_decay=1e-3)
    for la, lb in zip(a.layers, b.layers, strict=True):
        torch.testing.assert_close(la.fact, lb.fact)
        torch.testing.assert_close(la.agop, lb.agop)
    assert a.table()[0]["n_samples"] == 9
    assert net.training  # the mode is restored
