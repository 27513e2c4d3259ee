"""The tabular benchmark: resumable records, executors agree, report statistics, the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from factrfm.experiments.methods import (
    DEFAULT_METHODS,
    METHODS,
    RFMMethod,
    fitted_route,
    get_method,
    score,
)
from factrfm.experiments.report import markdown_table, summarize, write_report
from factrfm.experiments.runner import JobSpec, ResultsStore, job_seed, run_job, run_jobs

TINY = ["trains", "balloons"]  # 10 and 16 rows
CHEAP = ["laplace", "xgboost"]
VOLATILE = {"fit_seconds"}  # the only record fields allowed to differ between runs


def _specs(root: str, datasets=TINY, methods=CHEAP) -> list[JobSpec]:
    return [JobSpec("uci121", d, m, root, threads=1) for d in datasets for m in methods]


def _stable(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if k not in VOLATILE}


# ---------------------------------------------------------------- report statistics


def _hand_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "fact-rfm": [0.90, 0.80, 0.70, 0.60, 0.50, 0.99],
            "nfa-rfm-s1": [0.89, 0.78, 0.67, 0.56, 0.55, np.nan],
            "laplace": [0.90, 0.79, 0.66, 0.53, 0.40, 0.10],
        },
        index=pd.Index(list("abcdef"), name="dataset"),
    )


def test_summary_matches_hand_computation():
    # Row f has a missing score and is left out. Ranks per row (a..e), 1 = best, ties averaged:
    # fact 1.5,1,1,1,2 -> 1.3; nfa 3,3,2,2,1 -> 2.2; laplace 1.5,2,3,3,3 -> 2.5.
    # Wilcoxon fact-nfa: differences .01,.02,.03,.04,-.05 -> W- = 5; exact two-sided
    # p = 2 * #{subsets of 1..5 with sum <= 5} / 32 = 2 * 10/32 = 0.625.
    # fact-laplace: 0, .01, .04, .07, .10 -> zero dropped, W = 0 over 4 -> p = 2/16 = 0.125.
    s = summarize(_hand_table())
    assert s.attrs["reference"] == "fact-rfm"
    assert list(s["n_datasets"]) == [5, 5, 5]
    np.testing.assert_allclose(s["mean"], [0.70, 0.69, 0.656])
    np.testing.assert_allclose(s["mean_rank"], [1.3, 2.2, 2.5])
    assert list(s["wins"]) == [4, 1, 1]
    np.testing.assert_allclose(s.loc["nfa-rfm-s1", ["wilcoxon_statistic", "wilcoxon_p"]],
                               [5.0, 0.625])
    np.testing.assert_allclose(s.loc["laplace", ["wilcoxon_statistic", "wilcoxon_p"]],
                               [0.0, 0.125])
    assert np.isnan(s.loc["fact-rfm", "wilcoxon_p"])
    np.testing.assert_allclose(s.loc["laplace", "mean_diff"], 0.70 - 0.656)


def test_summary_lower_is_better_reverses_ranks():
    s = summarize(_hand_table(), higher_is_better=False)
    np.testing.assert_allclose(s["mean_rank"], [4 - 1.3, 4 - 2.2, 4 - 2.5])
    # row minima: a, b -> nfa; c, d, e -> laplace
    assert list(s["wins"]) == [0, 2, 3]


def test_summary_rejects_bad_input():
    with pytest.raises(ValueError, match="reference"):
        summarize(_hand_table(), reference="xgboost")
    empty = pd.DataFrame({"a": [np.nan], "b": [1.0]})
    with pytest.raises(ValueError, match="no data set has a score for every method"):
        summarize(empty)


def test_markdown_table_formats_ints_floats_and_nan():
    frame = pd.DataFrame({"n": [3], "x": [0.123456], "y": [np.nan]}, index=["r"])
    text = markdown_table(frame, digits=3)
    assert text.splitlines()[2] == "| r | 3 | 0.123 |  |"


def test_write_report_agrees_with_records(tmp_path):
    table = _hand_table()
    records = [
        {"dataset": d, "method": m, "mean_test_accuracy": float(table.loc[d, m]),
         "fit_seconds": 1.0, "best_params": {"bandwidth": 10.0}}
        for d in table.index for m in table.columns if not np.isnan(table.loc[d, m])
    ]
    rep = write_report(records, tmp_path, "uci121")
    assert rep["n_datasets_complete"] == 5 and rep["n_records"] == 17
    written = pd.read_csv(tmp_path / "table.csv", index_col=0)
    pd.testing.assert_frame_equal(written, table, check_names=False)
    summary = pd.read_csv(tmp_path / "summary.csv", index_col=0)
    np.testing.assert_allclose(summary["mean_rank"], [1.3, 2.2, 2.5])
    np.testing.assert_allclose(summary["fit_seconds_total"], [6.0, 5.0, 6.0])
    hp = pd.read_csv(tmp_path / "hyperparameters.csv")
    assert hp["count"].sum() == 17
    assert {"fact_vs_nfa.png", "ranks.png"} <= set(rep["figures"])
    assert (tmp_path / "ranks.png").stat().st_size > 0


# ---------------------------------------------------------------- methods and jobs


def test_unknown_method_names_known_ones():
    with pytest.raises(ValueError, match="unknown method 'svm'.*fact-rfm"):
        get_method("svm")


def test_score_rejects_unknown_task():
    assert score("classification", np.array([1, 2]), np.array([1, 3])) == 0.5
    assert score("regression", np.array([0.0, 0.0]), np.array([3.0, 4.0])) == pytest.approx(
        np.sqrt(12.5))
    with pytest.raises(ValueError, match="task"):
        score("ranking", np.zeros(2), np.zeros(2))


def test_job_seed_is_stable_across_processes():
    # crc32, not hash(): the value is fixed, whatever PYTHONHASHSEED is
    assert job_seed("uci121", "iris", "fact-rfm") == job_seed("uci121", "iris", "fact-rfm")
    assert job_seed("a") == 0xE8B7BE43 & 0x7FFFFFFF


def test_run_job_record_follows_protocol(uci_root):
    root = str(uci_root)
    rec = run_job(JobSpec("uci121", "balloons", "laplace", root))
    method = METHODS["laplace"]
    assert len(rec["grid"]) == len(method.grid)
    best_val = max(g["val"] for g in rec["grid"])
    assert rec["val_accuracy"] == best_val
    first_best = next(g for g in rec["grid"] if g["val"] == best_val)["params"]
    assert rec["best_params"]["bandwidth"] == first_best["bandwidth"]  # ties: first in grid
    assert len(rec["fold_accuracies"]) == 4
    assert rec["mean_test_accuracy"] == pytest.approx(np.mean(rec["fold_accuracies"]))
    assert (rec["n"], rec["d"], rec["n_classes"]) == (16, 4, 2)
    assert isinstance(rec["best_params"]["ridge"], float)
    assert isinstance(rec["best_params"]["n_iter"], int)
    assert "torch" in rec["versions"]


# ---------------------------------------------------------------- large data sets


def _xor_data(n: int, seed: int):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 5))
    return X, (X[:, 0] * X[:, 1] > 0).astype(int)


def test_rfm_method_partitions_above_max_rows():
    method = RFMMethod("fact-small", {"rule": "fact", "n_iter": 3}, ({"bandwidth": 10.0},),
                       max_rows=150)
    X, y = _xor_data(1400, 0)
    val, final = method.search({"bandwidth": 10.0}, X[:600], y[:600], X[600:1000], y[600:1000],
                               seed=1, threads=1, task="classification")
    assert set(final) == {"bandwidth", "ridge", "n_iter"}
    assert val > 0.8
    est = method.make_final(final, 1, 1, "classification").fit(X[:1000], y[:1000])
    route = fitted_route(est)
    assert route.startswith("partitioned:") and int(route.split(":")[1]) >= 1000 / 150
    assert est.estimator.model_.leaf_sizes_.max() <= 150
    assert score("classification", y[1000:], est.predict(X[1000:])) > 0.8


def test_rfm_method_stays_exact_up_to_max_rows():
    from factrfm import RFMClassifier

    method = RFMMethod("fact-small", {"rule": "fact", "n_iter": 2}, ({"bandwidth": 10.0},),
                       max_rows=300)
    X, y = _xor_data(400, 1)
    params = {"bandwidth": 10.0, "ridge": 1e-3, "n_iter": 2}
    est = method.make_final(params, 3, 1, "classification").fit(X[:300], y[:300])
    assert fitted_route(est) == "exact"
    plain = RFMClassifier(preprocessing="none", kernel="laplace", rule="fact", random_state=3,
                          iteration_selection="last", **params).fit(X[:300], y[:300])
    np.testing.assert_array_equal(est.predict(X[300:]), plain.predict(X[300:]))
    assert fitted_route(METHODS["xgboost"].make_final(
        {"max_depth": 3, "learning_rate": 0.1, "n_estimators": 5}, 0, 1, "classification")) is None


def test_rfm_search_samples_training_rows_reproducibly(monkeypatch):
    from factrfm import RFMClassifier

    sizes = []
    real_fit = RFMClassifier.fit

    def spy(self, X, y, **kw):
        sizes.append((len(X), len(kw["eval_set"][0])))
        return real_fit(self, X, y, **kw)

    monkeypatch.setattr(RFMClassifier, "fit", spy)
    method = RFMMethod("fact-small", {"rule": "fact", "n_iter": 1}, ({"bandwidth": 10.0},),
                       max_rows=200)
    X, y = _xor_data(900, 2)
    a = method.search({"bandwidth": 10.0}, X[:500], y[:500], X[500:], y[500:], seed=4,
                      threads=1, task="classification")
    b = method.search({"bandwidth": 10.0}, X[:500], y[:500], X[500:], y[500:], seed=4,
                      threads=1, task="classification")
    assert sizes == [(200, 400), (200, 400)]
    assert a == b


def test_ablation_is_runnable_but_not_a_default(uci_root):
    from factrfm.experiments.methods import ABLATIONS, DEFAULT_METHODS

    assert set(ABLATIONS) <= set(METHODS) and not set(ABLATIONS) & set(DEFAULT_METHODS)
    assert "fact-rfm" in DEFAULT_METHODS
    rec = run_job(JobSpec("uci121", "balloons", "laplace-l10", str(uci_root)))
    assert rec["best_params"]["bandwidth"] == 10.0 and rec["best_params"]["n_iter"] == 0
    assert len(rec["grid"]) == 1


# ---------------------------------------------------------------- resumability


def test_store_ignores_truncated_last_line(tmp_path):
    store = ResultsStore(tmp_path / "results.jsonl")
    store.append({"dataset": "a", "method": "m", "x": 1})
    store.append({"dataset": "b", "method": "m", "x": 2})
    with open(store.path, "a") as fh:
        fh.write('{"dataset": "c", "method": "m", "x"')  # killed mid-write
    assert [r["dataset"] for r in store.load()] == ["a", "b"]
    store.repair()
    store.append({"dataset": "c", "method": "m", "x": 3})
    lines = store.path.read_text().splitlines()
    assert [json.loads(line)["x"] for line in lines] == [1, 2, 3]


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[1][0] in "ZX"  # a zombie has ended
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_pool_workers_end_when_the_run_is_killed(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    # A run process with the runner's pool set-up; its worker takes a job that sleeps for a
    # minute. SIGKILL the run: the worker must be gone well before its job would have ended.
    script = tmp_path / "run.py"
    script.write_text(f"""
import multiprocessing, os, time
from concurrent.futures import ProcessPoolExecutor
from factrfm.experiments.runner import _exit_with_parent

def job(path):
    with open(path, "w") as fh:
        fh.write(str(os.getpid()))
    time.sleep(60)

if __name__ == "__main__":
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_exit_with_parent, initargs=(os.getpid(), 0.1))
    pool.submit(job, {str(tmp_path / "pid")!r}).result()
""")
    run = subprocess.Popen([sys.executable, str(script)])
    try:
        deadline = time.time() + 60
        while not (tmp_path / "pid").exists() or not (tmp_path / "pid").read_text():
            assert time.time() < deadline, "the worker never started"
            time.sleep(0.1)
        worker = int((tmp_path / "pid").read_text())
        assert not _gone(worker)
        run.send_signal(signal.SIGKILL)
        run.wait()
        deadline = time.time() + 10
        while not _gone(worker):
            assert time.time() < deadline, "the worker outlived the killed run by 10 s"
            time.sleep(0.1)
    finally:
        run.kill()


def test_rerun_after_kill_loses_nothing_and_duplicates_nothing(uci_root, tmp_path):
    root = str(uci_root)
    specs = _specs(root)
    first = run_jobs(specs, tmp_path, progress=False)
    assert (first["done"], first["skipped"], first["failed"]) == (4, 0, 0)
    path = tmp_path / "results.jsonl"
    complete = path.read_bytes().splitlines(keepends=True)
    reference = {(r["dataset"], r["method"]): _stable(r) for r in ResultsStore(path).load()}
    # A kill during the third write: two whole lines and half of the third survive.
    path.write_bytes(b"".join(complete[:2]) + complete[2][: len(complete[2]) // 2])
    second = run_jobs(specs, tmp_path, progress=False)
    assert (second["done"], second["skipped"], second["failed"]) == (2, 2, 0)
    lines = path.read_bytes().splitlines()
    assert lines[:2] == [c.rstrip(b"\n") for c in complete[:2]]  # kept records untouched
    records = [json.loads(line) for line in lines]  # every line parses
    keys = [(r["dataset"], r["method"]) for r in records]
    assert sorted(keys) == sorted(reference) and len(set(keys)) == 4
    assert {(r["dataset"], r["method"]): _stable(r) for r in records} == reference
    third = run_jobs(specs, tmp_path, progress=False)
    assert (third["done"], third["skipped"]) == (0, 4)
    assert len(path.read_bytes().splitlines()) == 4


def test_dataset_groups(uci_root):
    from factrfm.experiments.tabular import resolve_datasets

    root = str(uci_root)
    assert len(resolve_datasets("uci121", ["arora90"], root, None)) == 90
    multi = resolve_datasets("uci121", ["multiclass"], root, 500)
    assert multi and "iris" in multi and "trains" not in multi
    with pytest.raises(ValueError, match="'multiclass' exists only for uci121"):
        resolve_datasets("uci-regression", ["multiclass"], root, None)


def test_method_groups_expand_to_the_default_methods():
    from factrfm.experiments.methods import METHOD_GROUPS, expand_methods

    kernel, baselines = METHOD_GROUPS["kernel"], METHOD_GROUPS["baselines"]
    assert "fact-rfm" in kernel and "laplace" in kernel and "xgboost" in baselines
    assert sorted(kernel + baselines) == sorted(DEFAULT_METHODS)
    assert expand_methods(["xgboost", "kernel", "fact-rfm", "mlp"]) == [
        "xgboost", *kernel, "mlp"]


def test_sigterm_stops_the_run_cleanly_and_it_records_itself(tmp_path, monkeypatch):
    """SIGTERM during a run (in-process worker): the finished job stays recorded, the run
    stops with KeyboardInterrupt, runs.jsonl says it was interrupted, and the process's own
    SIGTERM handler is back afterwards."""
    import signal

    from factrfm.experiments import runner

    stop_at = {"second"}

    def fake_job(spec):
        if spec.dataset in stop_at:
            os.kill(os.getpid(), signal.SIGTERM)
        return {"dataset": spec.dataset, "method": spec.method, "suite": spec.suite}

    monkeypatch.setattr(runner, "run_job", fake_job)
    specs = [JobSpec("uci121", name, "laplace", str(tmp_path)) for name in
             ("first", "second", "third")]
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        run_jobs(specs, tmp_path / "out", progress=False)
    assert signal.getsignal(signal.SIGTERM) == before
    records = ResultsStore(tmp_path / "out" / "results.jsonl").load()
    assert [r["dataset"] for r in records] == ["first"]
    runs = ResultsStore(tmp_path / "out" / "runs.jsonl").load()
    assert len(runs) == 1 and runs[0]["interrupted"] is True and runs[0]["done"] == 1
    stop_at.clear()
    again = run_jobs(specs, tmp_path / "out", progress=False)
    assert (again["done"], again["skipped"], again["interrupted"]) == (2, 1, False)


def test_failed_job_is_logged_and_retried(uci_root, tmp_path):
    root = str(uci_root)
    specs = [JobSpec("uci121", "no-such-set", "laplace", root),
             JobSpec("uci121", "trains", "laplace", root)]
    out = run_jobs(specs, tmp_path, progress=False)
    assert (out["done"], out["failed"]) == (1, 1)
    errors = ResultsStore(tmp_path / "errors.jsonl").load()
    assert errors[0]["dataset"] == "no-such-set" and "unknown uci121 data set" in errors[0]["error"]
    again = run_jobs(specs, tmp_path, progress=False)
    assert (again["done"], again["skipped"], again["failed"]) == (0, 1, 1)


# ---------------------------------------------------------------- executors


def test_dask_local_cluster_records_equal_local_run(uci_root, tmp_path):
    distributed = pytest.importorskip("distributed")
    root = str(uci_root)
    specs = _specs(root)
    run_jobs(specs, tmp_path / "local", progress=False)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  protocol="tcp://", host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        summary = run_jobs(specs, tmp_path / "dask", scheduler=cluster.scheduler_address,
                           progress=False)
    assert summary["done"] == 4 and summary["scheduler"].startswith("tcp://127.0.0.1")
    local = {(r["dataset"], r["method"]): _stable(r)
             for r in ResultsStore(tmp_path / "local" / "results.jsonl").load()}
    dask = {(r["dataset"], r["method"]): _stable(r)
            for r in ResultsStore(tmp_path / "dask" / "results.jsonl").load()}
    assert dask == local


def test_process_pool_records_equal_in_process_run(uci_root, tmp_path):
    root = str(uci_root)
    specs = _specs(root, datasets=["trains"])
    run_jobs(specs, tmp_path / "one", progress=False)
    run_jobs(specs, tmp_path / "pool", workers=2, progress=False)
    one = {(r["dataset"], r["method"]): _stable(r)
           for r in ResultsStore(tmp_path / "one" / "results.jsonl").load()}
    pool = {(r["dataset"], r["method"]): _stable(r)
            for r in ResultsStore(tmp_path / "pool" / "results.jsonl").load()}
    assert pool == one and len(pool) == 2


# ---------------------------------------------------------------- command line


def test_cli_bench_runs_resumes_and_reports(uci_root, tmp_path, capsys):
    from factrfm.cli import main

    root = str(uci_root)
    argv = ["bench", "uci121", "--data-dir", root, "--datasets", *TINY, "--methods", *CHEAP,
            "--out", str(tmp_path), "--no-progress", "--no-figures", "--threads", "1",
            "--workers", "1"]
    assert main(argv) == 0
    assert "4 jobs done, 0 already recorded" in capsys.readouterr().out
    assert main(argv) == 0
    assert "0 jobs done, 4 already recorded" in capsys.readouterr().out
    summary = pd.read_csv(tmp_path / "report" / "summary.csv", index_col=0)
    records = ResultsStore(tmp_path / "results.jsonl").load()
    for m in CHEAP:
        expected = np.mean([r["mean_test_accuracy"] for r in records if r["method"] == m])
        assert summary.loc[m, "mean"] == pytest.approx(expected)


def test_cli_runs_one_worker_process_per_core_by_default():
    import argparse

    from factrfm.experiments.tabular import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["uci121"])
    assert args.workers == (os.cpu_count() or 1)
    assert args.threads is None  # then cores // workers, i.e. one thread per job


def test_cli_refuses_to_mix_protocols(uci_root, tmp_path):
    from factrfm.cli import main

    root = str(uci_root)
    base = ["bench", "uci-regression", "--data-dir", root, "--datasets", "yacht",
            "--methods", "xgboost", "--out", str(tmp_path), "--no-progress", "--no-figures",
            "--report-only"]
    (tmp_path / "results.jsonl").touch()
    main([*base, "--splits", "2"])
    with pytest.raises(ValueError, match="another protocol"):
        main([*base, "--splits", "3"])


def test_cli_rejects_unknown_dataset(uci_root, tmp_path):
    from factrfm.cli import main

    root = str(uci_root)
    with pytest.raises(ValueError, match="unknown uci121 data sets"):
        main(["bench", "uci121", "--data-dir", root, "--datasets", "nope", "--out",
              str(tmp_path)])


def test_regression_job_uses_training_statistics_only(uci_root):
    root = str(uci_root)
    rec = run_job(JobSpec("uci-regression", "yacht", "xgboost", root, n_splits=2))
    assert rec["n_splits"] == 2 and len(rec["split_rmses"]) == 2
    assert rec["mean_test_rmse"] == pytest.approx(np.mean(rec["split_rmses"]))
    assert rec["std_test_rmse"] == pytest.approx(np.std(rec["split_rmses"], ddof=1))
    # yacht's residuary resistance has a std of about 15; trees do far better than the mean
    assert 0 < rec["mean_test_rmse"] < 5


# ---------------------------------------------------------------- the whole pipeline


@pytest.mark.slow
def test_full_pipeline_on_three_small_sets(uci_root, tmp_path):
    from factrfm.cli import main

    root = str(uci_root)
    datasets = ["trains", "balloons", "lenses"]
    argv = ["bench", "uci121", "--data-dir", root, "--datasets", *datasets, "--out",
            str(tmp_path), "--no-progress", "--threads", "2"]
    assert main(argv) == 0
    records = ResultsStore(tmp_path / "results.jsonl").load()
    assert len(records) == 3 * len(DEFAULT_METHODS)
    table = pd.read_csv(tmp_path / "report" / "table.csv", index_col=0)
    summary = pd.read_csv(tmp_path / "report" / "summary.csv", index_col=0)
    for r in records:
        assert r["mean_test_accuracy"] == pytest.approx(np.mean(r["fold_accuracies"]))
        assert table.loc[r["dataset"], r["method"]] == pytest.approx(r["mean_test_accuracy"])
    methods = list(DEFAULT_METHODS)
    acc = np.array([[table.loc[d, m] for m in methods] for d in datasets])
    # brute-force ranks (average over ties) and wins
    ranks = np.zeros_like(acc)
    for i, row in enumerate(acc):
        for j, v in enumerate(row):
            ranks[i, j] = (row > v).sum() + ((row == v).sum() + 1) / 2
    np.testing.assert_allclose(summary.loc[methods, "mean"], acc.mean(axis=0))
    np.testing.assert_allclose(summary.loc[methods, "mean_rank"], ranks.mean(axis=0))
    wins = (acc == acc.max(axis=1, keepdims=True)).sum(axis=0)
    np.testing.assert_array_equal(summary.loc[methods, "wins"], wins)
    assert Path(tmp_path / "report" / "fact_vs_nfa.png").exists()
