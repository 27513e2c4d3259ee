"""``factrfm grokking``: a quick run groks, the measures behave, results resume and are checked."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from factrfm.cli import main
from factrfm.experiments import grokking
from factrfm.experiments.grokking import measure_history, run_single, summarize_rows
from factrfm.experiments.measures import modular_circulant_deviation
from factrfm.rfm import IterationRecord

QUICK_CFG = dict(
    p=23,
    train_fraction=0.7,
    n_iter=30,
    kernel="gaussian",
    bandwidth=2.5,
    ridge=0.0,
    agop_power=0.5,
    normalize="max",
    centering=False,
    dtype="float32",
    seed=0,
)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("grok")
    code = main(["grokking", "--quick", "--rules", "fact", "agop", "--out", str(out), "--quiet"])
    assert code == 0
    return out


def _load(out, name):
    with open(out / "runs" / f"{name}.json") as fh:
        return json.load(fh)


def test_quick_fact_rfm_groks_to_full_test_accuracy(quick_run):
    rec = _load(quick_run, "add_fact")
    rows = rec["rows"]
    assert rec["config"]["p"] == 23 and rec["config"]["rule"] == "fact"
    assert len(rows) == 31  # iterations 0..30
    # ridgeless: every training point is interpolated from the first iteration on
    assert all(r["train_accuracy"] == 1.0 for r in rows)
    # a plateau: at chance (1/23) or below for several iterations ...
    assert all(r["test_accuracy"] < 0.1 for r in rows[:5])
    # ... then 100 % test accuracy
    assert max(r["test_accuracy"] for r in rows) == 1.0
    s = rec["summary"]
    assert 5 < s["first_test_above_50"] <= s["first_test_above_99"] < 30


def test_circulant_deviation_falls_as_test_accuracy_rises(quick_run):
    rows = _load(quick_run, "add_fact")["rows"]
    s = summarize_rows(rows)
    start = rows[1]["circulant_deviation"]  # iteration 0 has M = I (a zero block)
    after = rows[s["first_test_above_99"]]["circulant_deviation"]
    assert start > 0.9  # no structure after one update
    assert after < 0.25
    assert rows[-1]["circulant_deviation"] < 0.2
    # the deviation falls during the plateau, before the test accuracy rises ("hidden progress")
    assert rows[s["first_test_above_50"] - 1]["circulant_deviation"] < 0.5 * start
    assert rows[-1]["alignment_final"] == pytest.approx(1.0)
    assert rows[0]["alignment_final"] < rows[-1]["alignment_final"]
    assert all(-1.0 <= r["fact_agop_corr"] <= 1.0 for r in rows)


def test_quick_run_writes_numbers_and_figures(quick_run):
    for name in ["summary.csv", "history.csv", "curves_add.png", "heatmaps_add_fact.png"]:
        assert (quick_run / name).exists(), name
    with open(quick_run / "summary.csv") as fh:
        lines = list(csv.DictReader(fh))
    assert {(r["operation"], r["rule"]) for r in lines} == {("add", "fact"), ("add", "agop")}
    snaps = np.load(quick_run / "runs" / "add_fact_M.npz")
    assert snaps["M"].shape[1:] == (46, 46)
    assert snaps["iterations"][0] == 0 and snaps["iterations"][-1] == 30
    assert np.allclose(snaps["M"][0], np.eye(46))


def test_rerun_reuses_finished_runs(quick_run, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("a finished run was computed again")

    monkeypatch.setattr(grokking, "run_single", boom)
    before = (quick_run / "runs" / "add_fact.json").read_text()
    args = ["grokking", "--quick", "--rules", "fact", "--out", str(quick_run), "--quiet"]
    assert main(args + ["--no-plots"]) == 0
    assert (quick_run / "runs" / "add_fact.json").read_text() == before


def test_rerun_with_other_options_is_refused(quick_run):
    args = ["grokking", "--quick", "--rules", "fact", "--out", str(quick_run), "--quiet"]
    with pytest.raises(ValueError, match="different configuration"):
        main(args + ["--bandwidth", "3.0", "--no-plots"])


@pytest.mark.parametrize("operation", ["sub", "mul", "div"])
def test_other_operations_grok_and_are_circulant_in_their_own_order(operation):
    cfg = dict(QUICK_CFG, operation=operation, rule="fact")
    rec, snaps = run_single(cfg, progress=False)
    rows = rec["rows"]
    # (for *, the 2p - 1 pairs with a zero operand lie outside the cyclic group of the logarithm)
    assert max(r["test_accuracy"] for r in rows) >= 0.95
    M = snaps["M"][-1]
    own = modular_circulant_deviation(M, 23, operation)
    assert own < 0.25
    for other in ("add", "sub", "mul", "div"):
        if other != operation:
            assert modular_circulant_deviation(M, 23, other) > 0.5


def test_measure_history_on_a_hand_made_history():
    p = 5
    rng = np.random.default_rng(0)
    M1 = torch.as_tensor(rng.normal(size=(10, 10)))
    M1 = M1 @ M1.T
    F = torch.as_tensor(rng.normal(size=(10, 10)))
    hist = [
        IterationRecord(0, 0.0, {"train_accuracy": 1.0, "val_accuracy": 0.0}, torch.eye(10)),
        IterationRecord(1, 0.0, {"train_accuracy": 1.0, "val_accuracy": 0.6}, M1, F, 2 * F + 1),
    ]
    rows = measure_history(hist, p, "add")
    assert rows[0]["test_accuracy"] == 0.0 and rows[1]["test_accuracy"] == 0.6
    assert rows[0]["fact_agop_corr"] is None
    assert rows[1]["fact_agop_corr"] == pytest.approx(1.0)
    assert rows[1]["alignment_final"] == pytest.approx(1.0)
    expected = float(np.trace(M1.numpy()) / np.linalg.norm(M1.numpy()) / np.sqrt(10))
    assert rows[0]["alignment_final"] == pytest.approx(expected)
    assert rows[0]["circulant_deviation"] == 0.0  # M = I: zero off-diagonal block
    assert summarize_rows(rows)["first_test_above_50"] == 1

    hist[-1].M = None
    with pytest.raises(ValueError, match="keep_matrices=True"):
        measure_history(hist, p, "add")


def test_bad_options_are_named(tmp_path):
    with pytest.raises(ValueError, match="p must be a prime"):
        main(["grokking", "--p", "21", "--out", str(tmp_path), "--quiet", "--no-plots"])
    with pytest.raises(ValueError, match="--ridge must be >= 0"):
        main(["grokking", "--ridge", "-1", "--out", str(tmp_path), "--quiet", "--no-plots"])


def test_centred_agop_lets_nfa_rfm_grok():
    """Measured at the quick size: NFA-RFM plateaus at 93 % test accuracy with the plain AGOP and
    reaches 100 % (from iteration 13 on) when the mean gradient is subtracted first."""
    plain, _ = run_single(dict(QUICK_CFG, operation="add", rule="agop"), progress=False)
    centred, _ = run_single(
        dict(QUICK_CFG, operation="add", rule="agop", centering=True), progress=False
    )
    assert max(r["test_accuracy"] for r in plain["rows"]) < 0.97
    assert centred["summary"]["final_test_accuracy"] == 1.0
    assert centred["summary"]["final_circulant_deviation"] < 0.15
