"""Scaling FACT-RFM past one kernel matrix: accuracy of the exact, iterative and partitioned
paths on a real data set, and fit time / peak memory against ``xrfm.xRFM`` for growing n.

Two modes, each case run in its own subprocess (so its peak memory is its own) and appended to a
JSON-lines file under ``--out`` as soon as it finishes; a rerun skips finished cases (resume).

    # accuracy and time of each path on a UCI set (75/25 seeded stratified split)
    python benchmarks/bench_scaling.py uci --dataset letter
    # fit time and peak RSS for n = 1e4, 1e5, 1e6 (d = 20), ours and xRFM, 5 iterations each
    python benchmarks/bench_scaling.py scaling --sizes 10000 100000 1000000

``xrfm`` is a benchmark-only dependency (``pip install xrfm``). The UCI files are read with
``factrfm.datasets.uci`` from ``../shared/data`` (or ``$FACTRFM_DATA_DIR``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


# -- data ---------------------------------------------------------------------------------
def read_uci(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of a uci121 set (the rows of its main file)."""
    from factrfm.datasets.uci import load_uci121

    data = load_uci121(name)
    return data.X, data.y


def synthetic(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian inputs; the class depends on three directions: x0 x1 + sin(2 x2) + noise > 0."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    score = X[:, 0] * X[:, 1] + np.sin(2 * X[:, 2]) + 0.3 * rng.standard_normal(n)
    return X, (score > 0).astype(np.int64)


# -- one case, in a subprocess ------------------------------------------------------------
LEAF = dict(rule="fact", kernel="laplace", bandwidth=10.0, ridge=1e-3, dtype="float32")


def make_model(path: str, args, n_train: int):
    from factrfm import RFMClassifier
    from factrfm.partition import PartitionedRFMClassifier

    common = dict(LEAF, n_iter=args.iters, random_state=args.seed)
    if path == "exact":
        return RFMClassifier(**common, solver="exact")
    if path == "iterative":
        return RFMClassifier(**common, solver="iterative", n_centres=args.centres,
                             feature_sample=args.feature_sample)
    if path == "partitioned":
        return PartitionedRFMClassifier(max_leaf_size=args.leaf, leaf_params=common,
                                        split_sample=args.split_sample, random_state=args.seed)
    raise ValueError(path)


def fit_xrfm(X, y, Xte, yte, args):
    from sklearn.model_selection import train_test_split
    from xrfm import xRFM

    Xtr, Xv, ytr, yv = train_test_split(X, y, test_size=0.2, random_state=args.seed,
                                        stratify=y)
    params = {
        "model": {"kernel": "laplace", "bandwidth": 10.0, "exponent": 1.0, "diag": False,
                  "bandwidth_mode": "constant"},
        "fit": {"reg": 1e-3, "iters": args.iters, "early_stop_rfm": False,
                "return_best_params": True, "verbose": False},
    }
    model = xRFM(rfm_params=params, max_leaf_size=args.leaf, device="cpu",
                 tuning_metric="accuracy", random_state=args.seed, verbose=False)
    t0 = time.perf_counter()
    model.fit(Xtr.astype(np.float32), ytr, Xv.astype(np.float32), yv)
    seconds = time.perf_counter() - t0
    acc = float(np.mean(model.predict(Xte.astype(np.float32)).reshape(-1) == yte))
    return seconds, acc


def worker(args) -> None:
    torch.manual_seed(args.seed)
    if args.mode == "uci":
        from sklearn.model_selection import train_test_split

        X, y = read_uci(args.dataset)
        X, Xte, y, yte = train_test_split(X, y, test_size=0.25, random_state=args.seed,
                                          stratify=y)
    else:
        X, y = synthetic(args.n + args.n_test, args.d, args.seed)
        X, Xte, y, yte = X[: args.n], X[args.n:], y[: args.n], y[args.n:]
    rec = {"mode": args.mode, "path": args.path, "n_train": len(X), "d": X.shape[1],
           "iters": args.iters, "threads": torch.get_num_threads()}
    if args.path == "xrfm":
        rec["fit_s"], rec["test_accuracy"] = fit_xrfm(X, y, Xte, yte, args)
        rec["leaf"] = args.leaf
    else:
        model = make_model(args.path, args, len(X))
        t0 = time.perf_counter()
        model.fit(X, y)
        rec["fit_s"] = time.perf_counter() - t0
        rec["test_accuracy"] = float(np.mean(model.predict(Xte) == yte))
        if hasattr(model, "solver_"):
            rec["solver"] = model.solver_
        if args.path == "partitioned":
            rec["leaf"] = args.leaf
            rec["n_leaves"] = len(model.leaves_)
            rec["leaf_sizes"] = [int(model.leaf_sizes_.min()), int(model.leaf_sizes_.max())]
        if args.path == "iterative":
            rec["n_centres"], rec["feature_sample"] = args.centres, args.feature_sample
    rec["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print("RESULT " + json.dumps(rec), flush=True)


# -- driver -------------------------------------------------------------------------------
def cases(args):
    if args.mode == "uci":
        for path in args.paths:
            yield {"path": path, "dataset": args.dataset}
    else:
        for n in args.sizes:
            for path in args.paths:
                yield {"path": path, "n": n}


def case_path(args, case) -> str:
    """The path used for a synthetic size: exact while it fits, partitioned above."""
    if args.mode == "scaling" and case["path"] == "ours":
        return "exact" if case["n"] <= args.exact_max else "partitioned"
    return case["path"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=["uci", "scaling"])
    p.add_argument("--dataset", default="letter")
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--paths", nargs="+", default=None,
                   help="uci: exact iterative partitioned xrfm; scaling: ours xrfm")
    p.add_argument("--d", type=int, default=20)
    p.add_argument("--n-test", type=int, default=10_000)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--leaf", type=int, default=2500, help="max leaf size (ours and xRFM)")
    p.add_argument("--split-sample", type=int, default=1000)
    p.add_argument("--exact-max", type=int, default=20_000)
    p.add_argument("--centres", type=int, default=4000)
    p.add_argument("--feature-sample", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--path", default=None, help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    from tqdm import tqdm

    if args.paths is None:
        args.paths = (["exact", "iterative", "partitioned"] if args.mode == "uci"
                      else ["ours", "xrfm"])
    out = Path(args.out or ROOT / "results" / "bench_scaling")
    out.mkdir(parents=True, exist_ok=True)
    log = out / f"{args.mode}.jsonl"
    done = set()
    if log.exists():
        for line in log.read_text().splitlines():
            r = json.loads(line)
            done.add(json.dumps(r["case"], sort_keys=True))
    todo = [c for c in cases(args) if json.dumps(c, sort_keys=True) not in done]
    for case in tqdm(todo, desc=f"bench_scaling {args.mode}"):
        cmd = [sys.executable, __file__, args.mode, "--worker", "--path", case_path(args, case)]
        passthrough = ["dataset", "d", "n_test", "iters", "leaf", "split_sample", "centres",
                       "feature_sample", "seed"]
        for k in passthrough:
            v = getattr(args, k)
            if v is not None:
                cmd += [f"--{k.replace('_', '-')}", str(v)]
        if "n" in case:
            cmd += ["--n", str(case["n"])]
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            tqdm.write(f"case {case} failed:\n{proc.stderr[-3000:]}")
            continue
        rec = json.loads(lines[-1][len("RESULT "):])
        rec["case"] = case
        with log.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        tqdm.write(json.dumps(rec))


if __name__ == "__main__":
    main()
