"""Is FACT-RFM's deficit on multi-class sets a sign problem of the FACT matrix?

    python benchmarks/fact_spectrum.py benchmarks/records/uci121_all.jsonl.gz --max-rows 2500

At a stationary point the FACT matrix equals WᵀW, so it is PSD; away from one ``S`` (``F = M S``,
MATH.md §3) is symmetric but indefinite, and the update ``(F Fᵀ)^{1/2}`` treats its negative
directions as if they were positive. For every uci121 set up to ``--max-rows`` rows this fits
Laplace kernel ridge (``L = 10``, ridge ``1e-3``, ``M = I``, features standardised on the
training part of the validation split), computes ``S`` and its *indefiniteness*: the smaller of
its negative and positive eigenvalue masses over the total (0: definite, 0.5: balanced).
It then compares binary with multi-class sets and correlates the indefiniteness with the
FACT-RFM - NFA-RFM test difference of the records given.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from factrfm.datasets.paths import data_dir
from factrfm.datasets.uci import load_uci121
from factrfm.features import feature_matrices
from factrfm.kernels import LaplaceKernel

sys.path.insert(0, str(Path(__file__).parent))
from uci_analysis import _load  # noqa: E402  (the same record reader)


def indefiniteness(S: torch.Tensor) -> float:
    """min(negative, positive) eigenvalue mass of the symmetric part of ``S`` over the total."""
    ev = torch.linalg.eigvalsh((S + S.T) / 2)
    total = float(ev.abs().sum())
    if total == 0:
        return 0.0
    neg = float(ev.clamp(max=0).abs().sum()) / total
    return min(neg, 1 - neg)


def fact_at_start(X: np.ndarray, y: np.ndarray, bandwidth: float = 10.0,
                  ridge: float = 1e-3) -> torch.Tensor:
    """``S`` of Laplace kernel ridge on one-hot targets at ``M = I`` (standardised ``X``)."""
    sd = X.std(0)
    Xt = torch.tensor((X - X.mean(0)) / np.where(sd > 0, sd, 1.0), dtype=torch.float64)
    classes = np.unique(y)
    Y = torch.tensor((y[:, None] == classes[None, :]).astype(np.float64))
    kernel, M = LaplaceKernel(bandwidth), torch.eye(Xt.shape[1], dtype=torch.float64)
    K = kernel.matrix(Xt, Xt, M)
    K.diagonal().add_(ridge)
    alpha = torch.linalg.solve(K, Y)
    return feature_matrices(kernel, Xt, alpha, M, agop=False).fact


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", type=Path, help="uci121 records (folder or .jsonl(.gz))")
    parser.add_argument("--a", default="fact-rfm")
    parser.add_argument("--b", default="nfa-rfm-s1")
    parser.add_argument("--max-rows", type=int, default=2500)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    acc = {(r["dataset"], r["method"]): r["mean_test_accuracy"] for r in _load(args.records)}
    root = data_dir(args.data_dir)
    names = sorted(d for d, m in acc if m == args.a and (d, args.b) in acc)
    rows = []
    for name in names:
        ds = load_uci121(name, root)
        if ds.n > args.max_rows:
            continue
        S = fact_at_start(ds.X[ds.train_idx], ds.y[ds.train_idx])
        rows.append((name, ds.n_classes, indefiniteness(S), acc[name, args.a] - acc[name, args.b]))
    if not rows:
        parser.error("no data set with both methods recorded under --max-rows")
    c = np.array([r[1] for r in rows])
    ind = np.array([r[2] for r in rows])
    diff = np.array([r[3] for r in rows])
    print(f"{len(rows)} data sets of at most {args.max_rows} rows")
    for label, sel in (("binary", c == 2), ("multi-class", c > 2)):
        print(f"  {label:12s} {sel.sum():3d} sets: mean indefiniteness {ind[sel].mean():.3f}, "
              f"median {np.median(ind[sel]):.3f}")
    if (c == 2).any() and (c > 2).any():
        print(f"  binary against multi-class: Mann-Whitney p = "
              f"{stats.mannwhitneyu(ind[c == 2], ind[c > 2]).pvalue:.2g}")
    rho, p = stats.spearmanr(ind, diff)
    print(f"  Spearman rho between indefiniteness and {args.a} - {args.b}: {rho:+.3f} "
          f"(p = {p:.2g})")
    if (c > 2).sum() > 2:
        rho, p = stats.spearmanr(ind[c > 2], diff[c > 2])
        print(f"  the same on the multi-class sets only: {rho:+.3f} (p = {p:.2g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
