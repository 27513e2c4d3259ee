"""The resumable job runner of the tabular benchmark.

A job is one (data set, method) pair. :func:`run_job` is a pure function of its
:class:`JobSpec` (every seed derives from the data set and method names), so a record does not
depend on which executor ran it: in-process, a local process pool, or a Dask cluster.

Records go to ``results.jsonl``, one JSON line per finished job, appended with ``flush`` and
``os.fsync`` by the parent process only. A run killed at any moment loses at most the jobs in
flight: on the next start a truncated last line is cut off, and every (data set, method) already
recorded is skipped.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import multiprocessing
import os
import signal
import threading
import time
import traceback
import warnings
import zlib
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from factrfm.experiments.methods import better, fitted_route, get_method, score

__all__ = ["SUITES", "JobSpec", "job_seed", "run_job", "ResultsStore", "run_jobs"]

#: benchmark suite -> task
SUITES: dict[str, str] = {"uci121": "classification", "uci-regression": "regression"}


@dataclass(frozen=True)
class JobSpec:
    """Everything a worker needs to run one job.

    Parameters
    ----------
    suite : {"uci121", "uci-regression"}
    dataset : str
    method : str
        A name in :data:`factrfm.experiments.methods.METHODS`.
    data_dir : str
        The shared data folder (the one holding ``uci121/``); must be readable by the worker.
    threads : int
        Threads the job may use (torch intra-op threads and the baselines' ``n_jobs``).
    n_splits : int or None
        Regression only: use the first ``n_splits`` fixed splits (None: all of them).
    """

    suite: str
    dataset: str
    method: str
    data_dir: str
    threads: int = 1
    n_splits: int | None = None

    @property
    def key(self) -> tuple[str, str]:
        """The (data set, method) key that identifies a finished job."""
        return (self.dataset, self.method)


def job_seed(*parts: str) -> int:
    """A seed in ``[0, 2**31)`` from names, equal in every process (unlike ``hash``)."""
    return zlib.crc32("/".join(parts).encode()) & 0x7FFFFFFF


def _versions(kind: str) -> dict[str, str]:
    import sklearn

    import factrfm

    out = {"factrfm": factrfm.__version__, "numpy": np.__version__, "sklearn": sklearn.__version__}
    if kind == "rfm":
        import torch

        out["torch"] = torch.__version__
    else:
        with contextlib.suppress(ImportError):
            import xgboost

            out["xgboost"] = xgboost.__version__
    return out


def _select(method: Any, task: str, X_tr, y_tr, X_val, y_val, seed: int, threads: int):
    """Grid search on one train/validation split: (best val score, final params, all scores)."""
    best_val, best_final, scores = None, None, []
    for params in method.grid:
        val, final = method.search(
            params, X_tr, y_tr, X_val, y_val, seed=seed, threads=threads, task=task
        )
        scores.append({"params": params, "val": val})
        if best_val is None or better(task, val, best_val):
            best_val, best_final = val, final
    return best_val, best_final, scores


def _run_classification(spec: JobSpec, method: Any, seed: int) -> dict:
    from factrfm.datasets.uci import load_uci121

    ds = load_uci121(spec.dataset, spec.data_dir)
    X, y = ds.X, ds.y
    t0 = time.perf_counter()
    best_val, final, grid_scores = _select(
        method,
        "classification",
        X[ds.train_idx],
        y[ds.train_idx],
        X[ds.val_idx],
        y[ds.val_idx],
        seed,
        spec.threads,
    )
    folds, routes = [], []
    for tr, te in ds.folds:
        est = method.make_final(final, seed, spec.threads, "classification").fit(X[tr], y[tr])
        folds.append(score("classification", y[te], est.predict(X[te])))
        routes.append(fitted_route(est))
    return {
        "best_params": final,
        "val_accuracy": best_val,
        "fold_accuracies": folds,
        "fold_routes": routes,
        "mean_test_accuracy": float(np.mean(folds)),
        "grid": grid_scores,
        "n": ds.n,
        "d": ds.d,
        "n_classes": ds.n_classes,
        "fit_seconds": time.perf_counter() - t0,
    }


def _standardizer(A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = A.mean(axis=0)
    std = A.std(axis=0)
    std = np.where(std > 0, std, 1.0)  # constant columns (naval) stay at zero
    return mean, std


def _run_regression(spec: JobSpec, method: Any, seed: int) -> dict:
    from factrfm.datasets.uci import load_uci_regression, validation_split

    ds = load_uci_regression(spec.dataset, spec.data_dir)
    splits = ds.splits if spec.n_splits is None else ds.splits[: spec.n_splits]
    t0 = time.perf_counter()
    rmses, vals, chosen, routes = [], [], [], []
    for i, (tr, te) in enumerate(splits):
        # Statistics from the training part only; the test part never influences a choice.
        mx, sx = _standardizer(ds.X[tr])
        my, sy = float(ds.y[tr].mean()), float(ds.y[tr].std()) or 1.0
        X = (ds.X - mx) / sx
        y = (ds.y - my) / sy
        fit_idx, val_idx = validation_split(tr, 0.2, seed=job_seed(spec.dataset, f"split{i}"))
        best_val, final, _ = _select(
            method,
            "regression",
            X[fit_idx],
            y[fit_idx],
            X[val_idx],
            y[val_idx],
            seed,
            spec.threads,
        )
        est = method.make_final(final, seed, spec.threads, "regression").fit(X[tr], y[tr])
        rmses.append(sy * score("regression", y[te], est.predict(X[te])))
        routes.append(fitted_route(est))
        vals.append(sy * best_val)
        chosen.append(final)
    return {
        "best_params": chosen,
        "val_rmses": vals,
        "split_rmses": rmses,
        "split_routes": routes,
        "mean_test_rmse": float(np.mean(rmses)),
        "std_test_rmse": float(np.std(rmses, ddof=1)) if len(rmses) > 1 else 0.0,
        "n": ds.n,
        "d": ds.d,
        "n_splits": len(splits),
        "fit_seconds": time.perf_counter() - t0,
    }


def run_job(spec: JobSpec) -> dict:
    """Run one (data set, method) job and return its record.

    Parameters
    ----------
    spec : JobSpec

    Returns
    -------
    dict
        For ``uci121``: ``dataset, method, best_params, val_accuracy, fold_accuracies,
        fold_routes, mean_test_accuracy, grid, n, d, n_classes, fit_seconds, versions``. For
        ``uci-regression``: ``dataset, method, best_params`` (one per split), ``val_rmses,
        split_rmses, split_routes, mean_test_rmse, std_test_rmse, n, d, n_splits, fit_seconds,
        versions``. A route is ``"exact"`` or ``"partitioned:<leaves>"`` for RFM methods and
        None for the baselines.
    """
    if spec.suite not in SUITES:
        raise ValueError(f"suite must be one of {sorted(SUITES)}, got {spec.suite!r}")
    if not isinstance(spec.threads, int) or spec.threads < 1:
        raise ValueError(f"threads must be a positive integer, got {spec.threads!r}")
    method = get_method(spec.method)
    seed = job_seed(spec.suite, spec.dataset, spec.method)
    if method.kind == "rfm":
        import torch

        torch.set_num_threads(spec.threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        if SUITES[spec.suite] == "classification":
            body = _run_classification(spec, method, seed)
        else:
            body = _run_regression(spec, method, seed)
    return {
        "suite": spec.suite,
        "dataset": spec.dataset,
        "method": spec.method,
        **body,
        "threads": spec.threads,
        "versions": _versions(method.kind),
    }


class ResultsStore:
    """Append-only JSON-lines file of job records, safe against a kill at any moment.

    Parameters
    ----------
    path : path-like
        The ``results.jsonl`` file (created with its folder when absent).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def _lines(self) -> Iterator[bytes]:
        if not self.path.exists():
            return iter(())
        data = self.path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]  # a truncated last line is not a record
        return iter(complete.splitlines())

    def load(self) -> list[dict]:
        """All complete records, first occurrence of each (data set, method) key only."""
        records, seen = [], set()
        for i, line in enumerate(self._lines()):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                warnings.warn(f"{self.path}: line {i + 1} is not JSON; ignored", stacklevel=2)
                continue
            key = (rec.get("dataset"), rec.get("method"))
            if key not in seen:
                seen.add(key)
                records.append(rec)
        return records

    def done(self) -> set[tuple[str, str]]:
        """The (data set, method) keys already recorded."""
        return {(r["dataset"], r["method"]) for r in self.load()}

    def repair(self) -> None:
        """Cut off a truncated last line left by a kill during a write."""
        if not self.path.exists():
            return
        size = self.path.stat().st_size
        with open(self.path, "rb+") as fh:
            data = fh.read()
            keep = data.rfind(b"\n") + 1
            if keep < size:
                fh.truncate(keep)
                fh.flush()
                os.fsync(fh.fileno())

    def append(self, record: dict) -> None:
        """Write one record as one line, then flush and fsync."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record, sort_keys=True, allow_nan=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())


@contextlib.contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"out: another run is writing to {str(folder)!r}") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM (``kill``, a batch system's time limit) into ``KeyboardInterrupt`` while the
    run lasts, so its clean-up runs: the pool is shut down and ``runs.jsonl`` gets its line.
    Only the main thread can set signal handlers; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"stopped by signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _exit_with_parent(parent_pid: int, poll_seconds: float = 1.0) -> None:
    """Worker initializer: end this process soon after the run's process is gone.

    A run killed by a signal it cannot handle (SIGTERM, SIGKILL) runs no clean-up, and its pool
    workers would go on computing jobs whose records nobody will write. A daemon thread polls
    the parent's pid and exits the worker when it changes (the worker was re-parented).
    """

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_seconds)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _iter_local(specs: list[JobSpec], workers: int) -> Iterator[tuple[JobSpec, Any, str | None]]:
    if workers == 1:
        for spec in specs:
            try:
                yield spec, run_job(spec), None
            except Exception:  # noqa: BLE001 - recorded and reported, the run goes on
                yield spec, None, traceback.format_exc()
        return
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=ctx,
        initializer=_exit_with_parent,
        initargs=(os.getpid(),),
    )
    try:
        futures = {pool.submit(run_job, s): s for s in specs}
        for fut in as_completed(futures):
            exc = fut.exception()
            if exc is None:
                yield futures[fut], fut.result(), None
            else:
                yield futures[fut], None, "".join(traceback.format_exception(exc))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _iter_dask(specs: list[JobSpec], address: str) -> Iterator[tuple[JobSpec, Any, str | None]]:
    from distributed import Client
    from distributed import as_completed as dask_completed

    client = Client(address)
    try:
        futures = {client.submit(run_job, s, pure=False): s for s in specs}
        for fut in dask_completed(list(futures)):
            spec = futures[fut]
            if fut.status == "finished":
                yield spec, fut.result(), None
            else:
                yield spec, None, "".join(traceback.format_exception(fut.exception()))
        for fut in futures:
            fut.cancel()
    finally:
        client.close()


def run_jobs(
    specs: Iterable[JobSpec],
    out: str | os.PathLike[str],
    *,
    workers: int = 1,
    scheduler: str | None = None,
    progress: bool = True,
) -> dict:
    """Run every job not yet recorded under ``out`` and append each record as it finishes.

    Parameters
    ----------
    specs : iterable of JobSpec
    out : path-like
        Output folder: ``results.jsonl`` (records), ``errors.jsonl`` (failed jobs, retried next
        time) and ``runs.jsonl`` (one line per run: wall time, jobs done, and whether it was
        interrupted; SIGTERM and Ctrl-C both let the run write it).
    workers : int, default 1
        Local worker processes (1 runs in this process). Ignored with ``scheduler``.
    scheduler : str, optional
        Address of an existing Dask scheduler (``tcp://host:port``); jobs are submitted there.
    progress : bool, default True
        Show a tqdm bar with the estimated time left.

    Returns
    -------
    dict
        ``{"done": n finished now, "skipped": n already recorded, "failed": n, "wall_seconds"}``.
    """
    from tqdm.auto import tqdm

    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    out = Path(out)
    specs = list(specs)
    store = ResultsStore(out / "results.jsonl")
    errors = ResultsStore(out / "errors.jsonl")
    t0 = time.time()
    done_now = failed = 0
    interrupted = False
    with _exclusive(out), _sigterm_as_interrupt():
        store.repair()
        errors.repair()
        done = store.done()
        pending = [s for s in specs if s.key not in done]
        skipped = len(specs) - len(pending)
        if scheduler:
            stream = _iter_dask(pending, scheduler)
        else:
            stream = _iter_local(pending, min(workers, max(1, len(pending))))
        bar = tqdm(
            total=len(pending),
            unit="job",
            disable=not progress,
            desc=specs[0].suite if specs else "bench",
        )
        try:
            for spec, record, error in stream:
                if record is not None:
                    store.append(record)
                    done_now += 1
                else:
                    errors.append({**asdict(spec), "error": error, "time": time.time()})
                    failed += 1
                bar.set_postfix_str(f"{spec.dataset}/{spec.method}", refresh=False)
                bar.update(1)
        except KeyboardInterrupt:
            interrupted = True
            raise
        finally:
            bar.close()
            if isinstance(stream, Iterator):
                with contextlib.suppress(Exception):
                    stream.close()  # type: ignore[attr-defined]
            summary = {
                "done": done_now,
                "skipped": skipped,
                "failed": failed,
                "wall_seconds": time.time() - t0,
                "workers": workers,
                "scheduler": scheduler,
                "start": t0,
                "interrupted": interrupted,
            }
            ResultsStore(out / "runs.jsonl").append(summary)
    return summary
