"""``factrfm demo``: FACT-RFM, NFA-RFM and kernel ridge on data that ships with scikit-learn,
and on a sparse-parity task whose learned metric should single out the parity's support.

Writes ``results.json`` (every score and time) before drawing ``parity_metric.png``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_wine
from sklearn.model_selection import train_test_split

from factrfm.datasets.tasks import parity_support, sparse_parity
from factrfm.estimators import RFMClassifier, RFMRegressor
from factrfm.experiments.store import write_json_atomic

METHODS = {
    "FACT-RFM": dict(rule="fact"),
    "NFA-RFM": dict(rule="agop"),
    "kernel ridge": dict(n_iter=0),
}


def _bundled(seed: int):
    for name, loader, task in [
        ("breast_cancer", load_breast_cancer, "classification"),
        ("wine", load_wine, "classification"),
        ("digits", load_digits, "classification"),
        ("diabetes", load_diabetes, "regression"),
    ]:
        X, y = loader(return_X_y=True)
        yield (name, task, *train_test_split(X, y, test_size=0.25, random_state=seed))


def _parity(seed: int, n_train: int, d: int, k: int):
    support = parity_support(k, d)
    X, y = sparse_parity(n_train + 2000, d, support, seed=seed)
    X = X.numpy()
    name = f"parity (d={d}, k={k}, n={n_train})"
    return name, support, (X[:n_train], X[n_train:], y[:n_train], y[n_train:])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("results/demo"), help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="split and model seed")
    parser.add_argument("--parity-n", type=int, default=3000, help="parity training rows")
    parser.add_argument("--parity-d", type=int, default=50, help="parity input dimension")
    parser.add_argument("--parity-k", type=int, default=3, help="parity order")
    parser.add_argument("--n-iter", type=int, default=8, help="RFM iterations")


def _fit_and_score(task: str, params: dict, n_iter: int, seed: int, Xtr, Xte, ytr, yte):
    Est = RFMClassifier if task == "classification" else RFMRegressor
    est = Est(**{"n_iter": n_iter, **params}, random_state=seed)
    t0 = time.perf_counter()
    est.fit(Xtr, ytr)
    seconds = time.perf_counter() - t0
    return est, float(est.score(Xte, yte)), seconds


def run(args: argparse.Namespace) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    rows, metrics = [], {}
    parity_name, support, parity_split = _parity(
        args.seed, args.parity_n, args.parity_d, args.parity_k
    )
    jobs = list(_bundled(args.seed)) + [(parity_name, "classification", *parity_split)]
    print(f"{'data set':<28} {'method':<13} {'score':>7} {'metric':<8} {'fit s':>7} {'iter':>4}")
    for name, task, Xtr, Xte, ytr, yte in jobs:
        for method, params in METHODS.items():
            est, score, seconds = _fit_and_score(
                task, params, args.n_iter, args.seed, Xtr, Xte, ytr, yte
            )
            metric = "accuracy" if task == "classification" else "R^2"
            rows.append(
                dict(
                    dataset=name,
                    method=method,
                    metric=metric,
                    score=score,
                    fit_seconds=seconds,
                    best_iter=est.best_iter_,
                    n_train=len(Xtr),
                    n_test=len(Xte),
                    n_features=Xtr.shape[1],
                )
            )
            print(
                f"{name:<28} {method:<13} {score:>7.4f} {metric:<8} {seconds:>7.2f} "
                f"{est.best_iter_:>4}"
            )
            if name == parity_name and method != "kernel ridge":
                metrics[method] = est.M_.cpu().numpy()
    top = {m: sorted(np.argsort(np.diag(M))[-len(support) :].tolist()) for m, M in metrics.items()}
    summary = dict(rows=rows, parity_support=list(support), parity_top_diagonal=top)
    write_json_atomic(args.out / "results.json", summary)
    for method, idx in top.items():
        found = "found" if idx == list(support) else "missed"
        print(
            f"{method}: largest diag(M) entries at {idx}; parity support {list(support)} ({found})"
        )
    _plot_metrics(metrics, support, args.out / "parity_metric.png", parity_name)
    print(f"wrote {args.out / 'results.json'} and {args.out / 'parity_metric.png'}")
    return 0


def _plot_metrics(metrics: dict[str, np.ndarray], support, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(metrics), figsize=(5 * len(metrics), 8), squeeze=False)
    for j, (method, M) in enumerate(metrics.items()):
        im = axes[0, j].imshow(M, cmap="viridis")
        axes[0, j].set_title(f"{method}: learned M")
        fig.colorbar(im, ax=axes[0, j], fraction=0.046)
        diag = np.diag(M)
        colors = ["tab:red" if i in support else "tab:gray" for i in range(len(diag))]
        axes[1, j].bar(np.arange(len(diag)), diag, color=colors)
        axes[1, j].set_title(f"{method}: diag(M) (support in red)")
        axes[1, j].set_xlabel("coordinate (0-based)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
