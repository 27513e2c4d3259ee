"""`factrfm nn-check --quick`: the numbers it writes, resuming after a kill, and its errors."""

import csv
import json
import math

import pandas as pd
import pytest
import torch

from factrfm import cli
from factrfm.experiments import networks
from factrfm.nn import fact_diagnostics, mlp, mse_per_sample


def _read_csv(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("nncheck")
    assert cli.main(["nn-check", "--quick", "--out", str(out)]) == 0
    return out


def test_quick_run_writes_consistent_numbers(quick_run):
    out = quick_run
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["dataset"] == "digits" and res["config"]["weight_decay"] == 1e-4
    data = networks.load_dataset("digits", None, 400, 0.2, 0)
    d = data["X_train"].shape[1]
    assert 50 < d < 64  # digits' pixels that are constant on the training rows are dropped
    assert res["d"] == d and res["classes"] == 10 and res["n_train"] == 400
    assert res["adam_epochs"] == 10 and 0 < res["lbfgs_iterations"] <= 100
    assert 0.5 < res["test_accuracy"] <= 1 and res["train_accuracy"] >= res["test_accuracy"] - 0.1
    table = res["table"]
    assert [r["layer"] for r in table] == [f"fc{i}" for i in range(6)]
    assert [(r["in"], r["out"]) for r in table] == [(d, 16)] + [(16, 16)] * 4 + [(16, 10)]
    for r in table:
        for key in ("fact_pearson", "fact_cosine", "nfa_pearson", "nfa_cosine", "agop_pearson"):
            assert -1 <= r[key] <= 1, (key, r)
    # the CSV table is the JSON table
    rows = _read_csv(out / "table.csv")
    assert [float(r["fact_pearson"]) for r in rows] == pytest.approx(
        [r["fact_pearson"] for r in table], rel=1e-12)
    # the numbers are those of the saved model: recompute them from the checkpoint
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    model = mlp(d, 16, 5, 10).double()
    model.load_state_dict(ckpt["model"])
    again = fact_diagnostics(model, (data["X_train"], data["Y_train"]), mse_per_sample,
                             weight_decay=1e-4).table()
    for a, b in zip(again, table, strict=True):
        assert a["fact_pearson"] == pytest.approx(b["fact_pearson"], abs=1e-10)
        assert a["nfa_pearson"] == pytest.approx(b["nfa_pearson"], abs=1e-10)
    # history: one record per (step, layer), Adam records every 5 epochs, then L-BFGS
    hist = _read_csv(out / "history.csv")
    steps = [(float(r["epoch"]), r["layer"]) for r in hist]
    assert len(steps) == len(set(steps))
    adam = sorted({float(r["epoch"]) for r in hist if r["phase"] == "adam"})
    assert adam == [0.0, 5.0, 10.0]
    assert any(r["phase"] == "lbfgs" for r in hist)
    last = [r for r in hist if float(r["epoch"]) == max(s for s, _ in steps)]
    assert [float(r["fact_pearson"]) for r in last] == pytest.approx(
        [r["fact_pearson"] for r in table], abs=1e-10)
    assert float(last[0]["grad_norm"]) == pytest.approx(res["grad_norm"], rel=1e-8)
    assert (out / "dynamics.png").stat().st_size > 1000 and (out / "layers.png").is_file()


def test_resume_after_kill_neither_loses_nor_duplicates(quick_run, tmp_path, monkeypatch):
    out = tmp_path / "killed"
    real = networks.lbfgs_polish

    def killed_polish(*args, callback, **kwargs):
        def cb(it, g):
            callback(it, g)
            raise KeyboardInterrupt  # killed right after the first L-BFGS record

        return real(*args, callback=cb, **kwargs)

    monkeypatch.setattr(networks, "lbfgs_polish", killed_polish)
    with pytest.raises(KeyboardInterrupt):
        cli.main(["nn-check", "--quick", "--no-plot", "--out", str(out)])
    assert not (out / "results.json").exists()
    monkeypatch.setattr(networks, "lbfgs_polish", real)
    assert cli.main(["nn-check", "--quick", "--no-plot", "--out", str(out)]) == 0
    hist = _read_csv(out / "history.csv")
    steps = [(float(r["epoch"]), r["layer"]) for r in hist]
    assert len(steps) == len(set(steps))
    ref = {(float(r["epoch"]), r["layer"]): r for r in _read_csv(quick_run / "history.csv")}
    for r in hist:  # the Adam phase is deterministic: identical to the uninterrupted run
        if r["phase"] == "adam":
            key = (float(r["epoch"]), r["layer"])
            assert float(r["fact_pearson"]) == pytest.approx(float(ref[key]["fact_pearson"]),
                                                             abs=1e-12)
    assert json.loads((out / "results.json").read_text())["lbfgs_iterations"] == 100
    # a finished run is not trained again; a different configuration is refused
    assert cli.main(["nn-check", "--quick", "--no-plot", "--out", str(out)]) == 0
    assert len(_read_csv(out / "history.csv")) == len(hist)
    with pytest.raises(ValueError, match="another configuration"):
        cli.main(["nn-check", "--quick", "--no-plot", "--seed", "1", "--out", str(out)])


def test_bad_options_raise(tmp_path):
    with pytest.raises(ValueError, match="--dataset"):
        cli.main(["nn-check", "--quick", "--dataset", "mnist", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="--weight-decay"):
        cli.main(["nn-check", "--quick", "--weight-decay", "0", "--out", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        cli.main(["nn-check", "--quick", "--dataset", "uci:nosuchset", "--data-dir",
                  str(tmp_path), "--out", str(tmp_path)])


def test_uci_pendigits_loads():
    from factrfm.datasets.paths import data_dir

    try:
        root = data_dir()
    except FileNotFoundError as err:
        pytest.skip(f"uci121 data not found: {err}")
    data = networks.load_dataset("uci:pendigits", None, 500, 0.2, 0)
    assert data["X_train"].shape == (500, 16) and data["Y_train"].shape == (500, 10)
    torch.testing.assert_close(data["X_train"].mean(0), torch.zeros(16, dtype=torch.float64),
                               rtol=0, atol=1e-12)
    n_rows = int(pd.read_csv(root / "uci121" / "index.csv").set_index("name").loc[
        "pendigits", "n_trainval"])
    assert len(data["y_test"]) == math.ceil(0.2 * n_rows)  # rows of the main file, 20 % held out
    # optdigits is called "optical" in uci121
    opt = networks.load_dataset("uci:optdigits", None, 300, 0.2, 0)
    assert opt["X_train"].shape[0] == 300 and opt["Y_train"].shape[1] == 10
