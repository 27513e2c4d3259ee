"""Agreement scores against numpy/scipy, and the over-training tracker and figures."""

import numpy as np
import pytest
import scipy.linalg
import torch

from factrfm.linalg import cosine, pearson, psd_power, relative_error, sqrt_aat
from factrfm.nn import AgreementTracker, mlp, mse_per_sample


def test_scores_match_numpy():
    rng = np.random.default_rng(0)
    A, B = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    assert pearson(torch.tensor(A), torch.tensor(B)) == pytest.approx(
        np.corrcoef(A.ravel(), B.ravel())[0, 1], rel=1e-12)
    assert cosine(torch.tensor(A), torch.tensor(B)) == pytest.approx(
        (A * B).sum() / np.linalg.norm(A) / np.linalg.norm(B), rel=1e-12)
    assert relative_error(torch.tensor(A), torch.tensor(B)) == pytest.approx(
        np.linalg.norm(A - B) / np.linalg.norm(B), rel=1e-12)
    assert pearson(torch.tensor(A), torch.tensor(3 * A + 1)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same shape"):
        pearson(torch.zeros(2, 2), torch.zeros(3, 3))


def test_psd_power_and_sqrt_aat_match_scipy():
    rng = np.random.default_rng(1)
    G = rng.normal(size=(6, 8))
    A = G @ G.T  # positive definite
    for s in (0.5, 1.0, 0.25, 1.5):
        ref = np.real(scipy.linalg.fractional_matrix_power(A, s))
        np.testing.assert_allclose(psd_power(torch.tensor(A), s).numpy(), ref, rtol=1e-9,
                                   atol=1e-10)
    # a rank-deficient PSD matrix: the power acts on the range, zero on the null space
    G4 = G[:, :4]
    B = psd_power(torch.tensor(G4 @ G4.T), 0.5).numpy()
    np.testing.assert_allclose(B @ B, G4 @ G4.T, atol=1e-9)
    assert np.linalg.matrix_rank(B, tol=1e-6) == 4
    F = rng.normal(size=(4, 4))
    np.testing.assert_allclose(sqrt_aat(torch.tensor(F)).numpy(),
                               np.real(scipy.linalg.sqrtm(F @ F.T)), atol=1e-10)
    with pytest.raises(ValueError, match="positive"):
        psd_power(torch.tensor(A), 0.0)
    with pytest.raises(ValueError, match="square"):
        psd_power(torch.zeros(2, 3), 0.5)


def test_tracker_records_every_k_steps_and_plots(tmp_path):
    torch.manual_seed(0)
    net = mlp(3, 5, 2, 2).double()
    X, Y = torch.randn(20, 3, dtype=torch.float64), torch.randn(20, 2, dtype=torch.float64)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, weight_decay=1e-2)
    tracker = AgreementTracker(net, (X, Y), mse_per_sample, optimizer=opt, every=2)
    for epoch in range(5):
        opt.zero_grad()
        mse_per_sample(net(X), Y).mean().backward()
        opt.step()
        tracker(epoch, lr=0.05)
    df = tracker.to_dataframe()
    assert sorted(df["epoch"].unique()) == [0, 2, 4]
    assert len(df) == 3 * 3 and set(df["layer"]) == {"fc0", "fc1", "fc2"}
    assert (df["lr"] == 0.05).all()
    assert df["fact_pearson"].between(-1, 1).all() and df["nfa_pearson"].between(-1, 1).all()
    # the recorded numbers are those of a fresh diagnostic at the last epoch
    from factrfm.nn import fact_diagnostics

    last = fact_diagnostics(net, (X, Y), mse_per_sample, optimizer=opt).to_dataframe()
    got = df[df["epoch"] == 4].set_index("layer")
    np.testing.assert_allclose(got["fact_pearson"], last["fact_pearson"], rtol=1e-12)
    path = tmp_path / "dyn.png"
    tracker.plot(str(path))
    assert path.stat().st_size > 1000
    with pytest.raises(ValueError, match="metric"):
        tracker.plot(metric="spearman")
    with pytest.raises(ValueError, match="every"):
        AgreementTracker(net, (X, Y), mse_per_sample, optimizer=opt, every=0)


def test_tracker_warns_once_for_adamw():
    net = mlp(3, 5, 1, 2).double()
    X, Y = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
    opt = torch.optim.AdamW(net.parameters())
    tracker = AgreementTracker(net, (X, Y), mse_per_sample, optimizer=opt)
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for epoch in range(3):
            tracker(epoch)
    assert sum("decoupled" in str(w.message) for w in caught) == 1
    assert any("decoupled" in m for m in tracker.warnings)
