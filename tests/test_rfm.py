"""The RFM loop: history, selection, consistency of recorded matrices, failure handling."""

import pytest
import torch

from factrfm.features import FeatureMatrices, normalize_metric, update_metric
from factrfm.kernels import GaussianKernel, LaplaceKernel
from factrfm.rfm import fit_rfm


def _task(n=300, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = (X[:, 1] * X[:, 4] > 0).double()
    return X, torch.stack([1 - y, y], 1)


@pytest.mark.parametrize("rule", ["fact", "fact-geomean", "fact-inner", "fact-per-output", "agop"])
def test_feature_learning_finds_the_relevant_coordinates(rule):
    X, Y = _task(n=600)
    Xv, Yv = _task(n=200, seed=1)
    res = fit_rfm(
        X, Y, Xv, Yv, kernel=LaplaceKernel(10.0), rule=rule, n_iter=4, ridge=[1.0, 0.1],
        task="classification",
    )
    top = set(torch.diagonal(res.M).argsort()[-2:].tolist())
    assert top == {1, 4}
    acc = [h.metrics["val_accuracy"] for h in res.history]
    assert max(acc[1:]) >= acc[0] + 0.08


def test_iteration_zero_is_plain_kernel_ridge_and_history_is_complete():
    X, Y = _task()
    Xv, Yv = _task(seed=1)
    res = fit_rfm(X, Y, Xv, Yv, kernel=LaplaceKernel(5.0), n_iter=3, ridge=0.1,
                  keep_matrices=True, task="classification", select="last")
    assert [h.iteration for h in res.history] == [0, 1, 2, 3]
    assert torch.equal(res.history[0].M, torch.eye(8, dtype=torch.float64))
    assert res.iteration == 3 and torch.equal(res.M, res.history[3].M)
    K = LaplaceKernel(5.0).matrix(Xv, X, torch.eye(8, dtype=torch.float64))
    ref = K @ torch.linalg.solve(LaplaceKernel(5.0).matrix(X, X, torch.eye(8).double())
                                 + 0.1 * torch.eye(300).double(), Y)
    mse0 = float(((ref - Yv) ** 2).sum(1).mean())
    assert res.history[0].metrics["val_mse"] == pytest.approx(mse0, rel=1e-8)


@pytest.mark.parametrize("rule", ["fact", "fact-per-output", "agop"])
def test_recorded_matrices_produce_the_next_metric(rule):
    X, Y = _task()
    res = fit_rfm(X, Y, kernel=GaussianKernel(3.0), rule=rule, n_iter=2, ridge=0.1,
                  select="last", keep_matrices=True, keep_feature_matrices=True)
    for t in range(2):
        rec = res.history[t]
        mats = FeatureMatrices(fact=rec.fact, agop=rec.agop, fact_outputs=rec.fact_outputs)
        expected = normalize_metric(update_metric(rule, rec.M, mats), "max")
        torch.testing.assert_close(res.history[t + 1].M, expected)
    assert res.history[-1].fact is not None and res.history[-1].agop is not None


@pytest.mark.parametrize("rule", ["fact", "agop"])
def test_median_normalization_keeps_the_median_distance_of_the_start(rule):
    from factrfm.features import median_distance, pair_differences

    X, Y = _task(n=80)  # 3,160 pairs: the reference set is every pair, recomputable here
    res = fit_rfm(X, Y, kernel=LaplaceKernel(5.0), rule=rule, n_iter=3, ridge=0.1,
                  normalize="median", select="last", keep_matrices=True)
    D = pair_differences(X)
    start = float(median_distance(torch.eye(8, dtype=torch.float64), D))
    for rec in res.history[1:]:
        assert float(median_distance(rec.M, D)) == pytest.approx(start, rel=1e-10)
    assert not torch.allclose(res.history[-1].M / res.history[-1].M.abs().max(),
                              torch.eye(8, dtype=torch.float64))
    with pytest.raises(ValueError, match="median distance between training rows is 0"):
        fit_rfm(torch.zeros(10, 8, dtype=torch.float64), Y[:10], kernel=LaplaceKernel(5.0),
                n_iter=1, ridge=0.1, normalize="median", select="last")


def test_validation_selection_keeps_the_best_iteration():
    X, Y = _task()
    Xv, Yv = _task(seed=1)
    res = fit_rfm(X, Y, Xv, Yv, kernel=LaplaceKernel(10.0), n_iter=4, ridge=[1.0, 0.1],
                  task="classification")
    keys = [(-h.metrics["val_accuracy"], h.metrics["val_mse"]) for h in res.history]
    assert res.iteration == min(range(len(keys)), key=keys.__getitem__)
    torch.testing.assert_close(res.predict(Xv).argmax(1).eq(Yv.argmax(1)).double().mean(),
                               torch.tensor(res.history[res.iteration].metrics["val_accuracy"],
                                            dtype=torch.float64))


def test_eigh_and_cholesky_ridge_grids_agree():
    X, Y = _task()
    Xv, Yv = _task(seed=1)
    kw = dict(kernel=LaplaceKernel(10.0), n_iter=2, ridge=[10.0, 1.0, 0.1, 0.01],
              task="classification")
    a = fit_rfm(X, Y, Xv, Yv, ridge_solver="cholesky", **kw)
    b = fit_rfm(X, Y, Xv, Yv, ridge_solver="eigh", **kw)
    assert [h.ridge for h in a.history] == [h.ridge for h in b.history]
    torch.testing.assert_close(a.M, b.M, rtol=1e-6, atol=1e-8)


def test_flat_function_stops_with_a_warning_and_keeps_the_best():
    X, _ = _task()
    Y = torch.zeros(len(X), 1, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="feature learning stopped after iteration 0"):
        res = fit_rfm(X, Y, kernel=LaplaceKernel(), n_iter=3, ridge=0.1, select="last")
    assert len(res.history) == 1 and res.iteration == 0


def test_selection_without_validation_data_is_refused():
    X, Y = _task()
    with pytest.raises(ValueError, match="needs validation data"):
        fit_rfm(X, Y, kernel=LaplaceKernel(), n_iter=2)
    with pytest.raises(ValueError, match="needs validation data"):
        fit_rfm(X, Y, kernel=LaplaceKernel(), n_iter=0, ridge=[1.0, 0.1])


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(rule="nfa"), "unknown rule"),
        (dict(normalize="l2"), "unknown normalize"),
        (dict(task="ranking"), "unknown task"),
        (dict(select="best"), "select must be"),
        (dict(n_iter=1.5), "n_iter must be"),
        (dict(ridge=[]), "non-empty"),
        (dict(ridge=float("nan")), "finite number"),
        (dict(ridge_solver="lu"), "ridge_solver"),
    ],
)
def test_bad_arguments_name_the_problem(kw, match):
    X, Y = _task(n=20)
    with pytest.raises(ValueError, match=match):
        fit_rfm(X, Y, kernel=LaplaceKernel(), select=kw.pop("select", "last"), **kw)


def test_callback_sees_every_iteration():
    X, Y = _task(n=50)
    seen = []
    fit_rfm(X, Y, kernel=LaplaceKernel(), n_iter=2, ridge=0.1, select="last",
            callback=lambda r: seen.append(r.iteration))
    assert seen == [0, 1, 2]


def test_jittered_solves_are_reported_once_per_fit():
    """Duplicated rows make K singular at ridge 0: every solve needs a jitter, and the fit says
    so in one warning that counts them instead of one warning per solve."""
    import warnings

    X, Y = _task(n=40)
    X, Y = torch.cat([X, X]), torch.cat([Y, Y])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = fit_rfm(X, Y, X, Y, kernel=GaussianKernel(50.0), n_iter=2, ridge=[0.0, 0.0],
                      task="classification")
    jitter = [w for w in caught if "jitter" in str(w.message)]
    assert len(jitter) == 1
    assert "in 6 of 6 solves" in str(jitter[0].message)
    assert torch.isfinite(res.alpha).all()
