"""Where the uci121 numbers come from: measurements on the records of a ``bench uci121`` run.

    python benchmarks/uci_analysis.py results/bench/uci121_all [more runs to pool ...]
    python benchmarks/uci_analysis.py benchmarks/records/uci121_all.jsonl.gz   # the kept records

Prints, from ``results.jsonl`` alone (nothing is refitted):

1. mean test accuracy per method on the 90 Arora et al. sets, on the other 30 and on all of them;
2. FACT-RFM against NFA-RFM per data set: how many differences exceed the fold noise
   (two standard errors of the per-fold differences), the sets that decide the mean, and a
   bootstrap interval of the mean difference; then every method's mean by data-set size;
3. feature learning against the plain Laplace kernel: how often the validation search kept
   iteration 0 (no learned metric), and the mean test gain over ``laplace`` on the sets where
   it did not;
4. how well the validation split predicts the test folds: the rank correlation between the
   FACT - NFA difference on validation and on test, and the accuracy lost by choosing the method
   on validation instead of taking the better one.
5. the RFM fits that were partitioned (training parts above the exact-fit limit);
6. the two methods' difference by number of classes (2, 3-9, 10 or more), with a Mann-Whitney
   test of binary against multi-class sets and a Wilcoxon test within each group.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from factrfm.datasets.paths import data_dir
from factrfm.datasets.uci import list_uci121
from factrfm.experiments.runner import ResultsStore


def _is_rfm(method: str) -> bool:
    """FACT-RFM and NFA-RFM and their ablations (the methods that learn a metric)."""
    return method.startswith(("fact-rfm", "nfa-rfm"))


def _table(records: list[dict], field: str) -> pd.DataFrame:
    rows = [{"dataset": r["dataset"], "method": r["method"], field: r[field]} for r in records]
    return pd.DataFrame(rows).pivot(index="dataset", columns="method", values=field)


def _load(path: Path) -> list[dict]:
    """The records of a bench output folder, or of a ``.jsonl`` / ``.jsonl.gz`` copy of its
    ``results.jsonl`` (as kept under ``benchmarks/records/``)."""
    if path.is_dir():
        return ResultsStore(path / "results.jsonl").load()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+",
                        help="bench output folders (holding results.jsonl) or .jsonl(.gz) copies "
                        "of their records; several runs (say the default methods and an "
                        "ablation) are pooled")
    parser.add_argument("--a", default="fact-rfm", help="first method compared (default fact-rfm)")
    parser.add_argument("--b", default="nfa-rfm-s1", help="second method (default nfa-rfm-s1)")
    parser.add_argument("--methods", nargs="+", default=None,
                        help="analyse only these methods (the data sets compared are those where "
                        "all of them are recorded; default: every method recorded)")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)

    records, seen = [], set()
    for run in args.runs:
        for r in _load(run):
            key = (r["dataset"], r["method"])
            if key in seen:
                parser.error(f"{run}: {key} is recorded in two of the runs given")
            seen.add(key)
            records.append(r)
    if args.methods:
        records = [r for r in records if r["method"] in set(args.methods)]
    if not records:
        parser.error(f"{', '.join(map(str, args.runs))}: no records (of --methods)")
    acc = _table(records, "mean_test_accuracy").dropna()
    val = _table(records, "val_accuracy").reindex(acc.index)
    arora = set(list_uci121(data_dir(args.data_dir), arora90=True))
    in90 = acc.index.isin(sorted(arora))
    print(f"{len(acc)} data sets with every method "
          f"({in90.sum()} Arora-90, {(~in90).sum()} other)\n")

    print("1. mean test accuracy")
    means = pd.DataFrame({"arora90": acc[in90].mean(), "other": acc[~in90].mean(),
                          "all": acc.mean()})
    print(means.sort_values("all", ascending=False).round(4).to_string(), "\n")

    a, b = args.a, args.b
    folds = {(r["dataset"], r["method"]): np.asarray(r["fold_accuracies"]) for r in records}
    diff = acc[a] - acc[b]
    se = pd.Series({d: np.std(folds[d, a] - folds[d, b], ddof=1) / 2 for d in acc.index})
    clear = diff.abs() > 2 * se
    print(f"2. {a} - {b}: mean {diff.mean():+.4f}; {(diff > 0).sum()} sets better, "
          f"{(diff < 0).sum()} worse, {(diff == 0).sum()} equal; beyond 2 fold SE: "
          f"{(clear & (diff > 0)).sum()} better, {(clear & (diff < 0)).sum()} worse")
    order = diff.abs().sort_values(ascending=False).index[:8]
    top = pd.DataFrame({"n": [next(r["n"] for r in records if r["dataset"] == d) for d in order],
                        a: acc.loc[order, a], b: acc.loc[order, b], "diff": diff[order],
                        "2se": 2 * se[order]})
    print(top.round(4).to_string())
    rest = diff.drop(order)
    print(f"   without these 8 sets: mean {rest.mean():+.4f} over {len(rest)} sets")
    rng = np.random.default_rng(0)
    boot = diff.to_numpy()[rng.integers(0, len(diff), (10_000, len(diff)))].mean(axis=1)
    lo, hi = np.quantile(boot, [0.025, 0.975])
    print(f"   95 % bootstrap interval of the mean difference (data sets resampled): "
          f"[{lo:+.4f}, {hi:+.4f}]\n")

    print("2b. mean test accuracy by size (rows in the data set)")
    sizes = pd.Series({d: next(r["n"] for r in records if r["dataset"] == d) for d in acc.index})
    bands = pd.cut(sizes, [0, 100, 500, 1000, 5000, np.inf],
                   labels=["<=100", "101-500", "501-1000", "1001-5000", ">5000"])
    by_size = acc.groupby(bands, observed=True).mean().T
    by_size.loc["n sets"] = bands.value_counts().reindex(by_size.columns).to_numpy()
    print(by_size.round(4).to_string(), "\n")

    print("3. feature learning against the Laplace kernel (iteration 0 = no learned metric)")
    iters = {(r["dataset"], r["method"]): r["best_params"].get("n_iter") for r in records}
    for m in [m for m in acc.columns if _is_rfm(m)]:
        learnt = np.array([iters[d, m] > 0 for d in acc.index])
        gain = acc[m] - acc["laplace"] if "laplace" in acc.columns else acc[m] * np.nan
        print(f"   {m:24s} iteration 0 kept on {int((~learnt).sum()):3d} sets; gain over laplace "
              f"where a metric was learnt: {gain[learnt].mean():+.4f} ({learnt.sum()} sets), "
              f"elsewhere {gain[~learnt].mean():+.4f}")
    print()

    vdiff = val[a] - val[b]
    rho, p = stats.spearmanr(vdiff, diff)
    pick = np.where(vdiff >= 0, acc[a], acc[b])
    oracle = np.maximum(acc[a], acc[b])
    print(f"4. validation vs test, {a} - {b}: Spearman rho {rho:.3f} (p = {p:.2g}); choosing "
          f"per set on validation gives {pick.mean():.4f}, the better of the two on test "
          f"{oracle.mean():.4f} (a bound no protocol can use)\n")

    routes = [(r["dataset"], r["method"], r.get("fold_routes")) for r in records
              if _is_rfm(r["method"]) or r["method"].startswith("laplace")]
    parted = sorted({d for d, _, rs in routes if rs and any(x and x != "exact" for x in rs)})
    print(f"5. data sets whose RFM folds were partitioned: {len(parted)}: {', '.join(parted)}\n")

    classes = pd.Series({d: next(r["n_classes"] for r in records if r["dataset"] == d)
                         for d in acc.index})
    groups = pd.cut(classes, [1, 2, 9, np.inf], labels=["2", "3-9", ">=10"])
    print(f"6. {a} - {b} by number of classes")
    for g in groups.cat.categories:
        sel = diff[groups == g]
        nz = sel[sel != 0]
        p = stats.wilcoxon(nz).pvalue if len(nz) > 5 else float("nan")
        extra = (f", {a} - laplace {(acc[a] - acc['laplace'])[groups == g].mean():+.4f}"
                 if "laplace" in acc.columns else "")
        print(f"   {g:>4s} classes: {len(sel):3d} sets, mean {sel.mean():+.4f} "
              f"(Wilcoxon p = {p:.2g}){extra}")
    binary = classes == 2
    if binary.any() and (~binary).any():
        p = stats.mannwhitneyu(diff[binary], diff[~binary]).pvalue
        print(f"   binary against multi-class sets: Mann-Whitney p = {p:.2g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
