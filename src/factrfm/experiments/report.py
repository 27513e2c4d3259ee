"""Tables, statistics and figures of the tabular benchmark, computed from its records.

Everything here reads the records written by :mod:`factrfm.experiments.runner` and writes
numbers (CSV / JSON / Markdown) before any figure, so figures can be redrawn without rerunning.
Comparisons across methods use only the data sets on which every compared method has a record.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

__all__ = [
    "METRICS",
    "score_table",
    "summarize",
    "hyperparameter_counts",
    "grid_validation_means",
    "markdown_table",
    "write_report",
]

#: suite -> (record field, higher is better)
METRICS: dict[str, tuple[str, bool]] = {
    "uci121": ("mean_test_accuracy", True),
    "uci-regression": ("mean_test_rmse", False),
}


def score_table(records: list[dict], metric: str, methods: list[str] | None = None) -> pd.DataFrame:
    """Data sets x methods table of one record field.

    Parameters
    ----------
    records : list of dict
    metric : str
        The record field to tabulate (e.g. ``"mean_test_accuracy"``).
    methods : list of str, optional
        Column order (default: order of first appearance).

    Returns
    -------
    pandas.DataFrame
        Index ``dataset`` (sorted), one column per method, NaN where a record is missing.
    """
    if not records:
        raise ValueError("records: no records to tabulate")
    frame = pd.DataFrame(
        [{"dataset": r["dataset"], "method": r["method"], "value": r[metric]} for r in records]
    )
    table = frame.pivot_table(index="dataset", columns="method", values="value", aggfunc="first")
    order = methods or list(dict.fromkeys(frame["method"]))
    table = table.reindex(columns=[m for m in order if m in table.columns])
    return table.sort_index()


def summarize(
    table: pd.DataFrame, *, higher_is_better: bool = True, reference: str | None = None
) -> pd.DataFrame:
    """Mean score, mean rank, wins and a Wilcoxon test against a reference method.

    Only rows without a missing value are used (complete cases).

    Parameters
    ----------
    table : pandas.DataFrame
        Data sets x methods, as from :func:`score_table`.
    higher_is_better : bool, default True
        True for accuracy, False for RMSE.
    reference : str, optional
        The method tested against every other one (default ``"fact-rfm"`` when present, else the
        first column).

    Returns
    -------
    pandas.DataFrame
        One row per method: ``n_datasets, mean, mean_rank, wins, wilcoxon_statistic,
        wilcoxon_p`` (two-sided, zero differences dropped; NaN for the reference itself and when
        all differences are zero) and ``mean_diff`` (reference minus method).
        Ranks: 1 is best, ties get their average rank. Wins: data sets where the method attains
        the best score (ties count for every tied method).
    """
    if table.shape[1] == 0:
        raise ValueError("table: no method columns")
    complete = table.dropna(axis=0, how="any")
    if complete.shape[0] == 0:
        raise ValueError("table: no data set has a score for every method")
    if reference is None:
        reference = "fact-rfm" if "fact-rfm" in complete.columns else str(complete.columns[0])
    if reference not in complete.columns:
        raise ValueError(f"reference: {reference!r} is not a column of the table")
    values = complete.to_numpy(dtype=float)
    signed = -values if higher_is_better else values
    ranks = np.apply_along_axis(stats.rankdata, 1, signed)
    best = signed.min(axis=1, keepdims=True)
    wins = (signed == best).sum(axis=0)
    rows = []
    ref = complete[reference].to_numpy(dtype=float)
    for j, method in enumerate(complete.columns):
        col = values[:, j]
        stat = p = float("nan")
        if method != reference and np.any(ref != col):
            res = stats.wilcoxon(ref, col, zero_method="wilcox", alternative="two-sided")
            stat, p = float(res.statistic), float(res.pvalue)
        rows.append(
            {
                "method": method,
                "n_datasets": int(complete.shape[0]),
                "mean": float(col.mean()),
                "mean_rank": float(ranks[:, j].mean()),
                "wins": int(wins[j]),
                "mean_diff": float((ref - col).mean()),
                "wilcoxon_statistic": stat,
                "wilcoxon_p": p,
            }
        )
    out = pd.DataFrame(rows).set_index("method")
    out.attrs["reference"] = reference
    return out


def _flat_params(record: dict) -> list[dict]:
    params = record["best_params"]
    return params if isinstance(params, list) else [params]


def hyperparameter_counts(records: list[dict]) -> pd.DataFrame:
    """How often each value of each hyper-parameter was chosen on validation, per method.

    Returns
    -------
    pandas.DataFrame
        Columns ``method, parameter, value, count`` (regression: one count per split).
    """
    counts: Counter = Counter()
    for r in records:
        for params in _flat_params(r):
            for key, value in params.items():
                counts[(r["method"], key, json.dumps(value))] += 1
    rows = [
        {"method": m, "parameter": k, "value": v, "count": c} for (m, k, v), c in counts.items()
    ]
    frame = pd.DataFrame(rows, columns=["method", "parameter", "value", "count"])
    return frame.sort_values(["method", "parameter", "count"], ascending=[True, True, False])


def grid_validation_means(records: list[dict]) -> pd.DataFrame:
    """Mean validation score of every grid point over the data sets (classification records).

    Returns
    -------
    pandas.DataFrame
        Columns ``method, params, n_datasets, mean_val``; the basis for choosing defaults.
    """
    rows = [
        {"method": r["method"], "params": json.dumps(g["params"], sort_keys=True), "val": g["val"]}
        for r in records
        for g in r.get("grid", [])
    ]
    if not rows:
        return pd.DataFrame(columns=["method", "params", "n_datasets", "mean_val"])
    frame = pd.DataFrame(rows)
    out = frame.groupby(["method", "params"], sort=False)["val"].agg(["count", "mean"])
    out = out.reset_index().rename(columns={"count": "n_datasets", "mean": "mean_val"})
    return out.sort_values(["method", "mean_val"], ascending=[True, False])


def _fmt(value: object, digits: int) -> str:
    if isinstance(value, (float, np.floating)):
        return "" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def markdown_table(frame: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub Markdown table of a DataFrame (index as first column).

    Parameters
    ----------
    frame : pandas.DataFrame
    digits : int, default 4
        Decimals of floats; NaN prints as an empty cell.

    Returns
    -------
    str
    """
    header = [str(frame.index.name or "")] + [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for idx, row in frame.astype(object).iterrows():
        cells = [str(idx)] + [_fmt(v, digits) for v in row.tolist()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _regression_cells(records: list[dict], table: pd.DataFrame) -> pd.DataFrame:
    std = score_table(records, "std_test_rmse", list(table.columns))
    cells = table.copy().astype(object)
    for d in table.index:
        for m in table.columns:
            v, s = table.loc[d, m], std.loc[d, m]
            cells.loc[d, m] = "" if pd.isna(v) else f"{v:.4g} ± {s:.2g}"
    return cells


def _figures(table: pd.DataFrame, summary: pd.DataFrame, out: Path, higher: bool) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    ref = summary.attrs.get("reference", "fact-rfm")
    nfa = [m for m in ("nfa-rfm-s1", "nfa-rfm-s0.5") if m in table.columns]
    if ref in table.columns and nfa:
        fig, ax = plt.subplots(figsize=(5, 5))
        for m, marker in zip(nfa, ("o", "x"), strict=False):
            pair = table[[ref, m]].dropna()
            ax.scatter(pair[m], pair[ref], s=14, marker=marker, label=f"{m} (n={len(pair)})")
        lo = np.nanmin(table[[ref, *nfa]].to_numpy())
        hi = np.nanmax(table[[ref, *nfa]].to_numpy())
        ax.plot([lo, hi], [lo, hi], color="gray", lw=0.8)
        ax.set_xlabel("NFA-RFM")
        ax.set_ylabel(ref)
        ax.set_title("per data set test score")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / "fact_vs_nfa.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path.name)
    complete = table.dropna(axis=0, how="any")
    if complete.shape[0] and complete.shape[1] > 1:
        signed = -complete.to_numpy(float) if higher else complete.to_numpy(float)
        ranks = np.apply_along_axis(stats.rankdata, 1, signed)
        order = np.argsort(ranks.mean(axis=0))
        fig, ax = plt.subplots(figsize=(1.1 * complete.shape[1] + 2, 4))
        ax.boxplot([ranks[:, j] for j in order], showmeans=True)
        ax.set_xticks(
            range(1, len(order) + 1), [complete.columns[j] for j in order], rotation=30, ha="right"
        )
        ax.set_ylabel("rank (1 = best)")
        ax.set_title(f"rank distribution over {complete.shape[0]} data sets")
        fig.tight_layout()
        path = out / "ranks.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path.name)
    return written


def write_report(
    records: list[dict],
    out: str | os.PathLike[str],
    suite: str = "uci121",
    *,
    methods: list[str] | None = None,
    figures: bool = True,
) -> dict:
    """Write the benchmark report under ``out`` and return its summary.

    Files: ``table.csv`` / ``table.md`` (per data set), ``summary.csv`` / ``summary.md`` /
    ``summary.json`` (mean, mean rank, wins, Wilcoxon, total fit seconds),
    ``hyperparameters.csv`` (chosen values), ``grid_validation.csv`` (classification: mean
    validation score per grid point), then figures ``fact_vs_nfa.png`` and ``ranks.png``.

    Parameters
    ----------
    records : list of dict
        Records of one suite.
    out : path-like
        Output folder.
    suite : {"uci121", "uci-regression"}
    methods : list of str, optional
        Restrict to and order by these methods.
    figures : bool, default True

    Returns
    -------
    dict
        ``{"summary": {method: {...}}, "reference", "n_datasets_complete", "n_records",
        "fit_seconds": {method: total}, "figures": [...]}``.
    """
    if suite not in METRICS:
        raise ValueError(f"suite must be one of {sorted(METRICS)}, got {suite!r}")
    metric, higher = METRICS[suite]
    if methods is not None:
        records = [r for r in records if r["method"] in methods]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = score_table(records, metric, methods)
    summary = summarize(table, higher_is_better=higher)
    fit_seconds = (
        pd.DataFrame([{"method": r["method"], "s": r["fit_seconds"]} for r in records])
        .groupby("method")["s"]
        .sum()
    )
    summary["fit_seconds_total"] = fit_seconds.reindex(summary.index)
    table.to_csv(out / "table.csv")
    summary.to_csv(out / "summary.csv")
    shown = _regression_cells(records, table) if suite == "uci-regression" else table
    (out / "table.md").write_text(markdown_table(shown))
    (out / "summary.md").write_text(
        f"Reference for the Wilcoxon test: {summary.attrs['reference']}; "
        f"{int(summary['n_datasets'].iloc[0])} data sets with every method.\n\n"
        + markdown_table(summary)
    )
    hyperparameter_counts(records).to_csv(out / "hyperparameters.csv", index=False)
    if suite == "uci121":
        grid_validation_means(records).to_csv(out / "grid_validation.csv", index=False)
    result = {
        "suite": suite,
        "metric": metric,
        "reference": summary.attrs["reference"],
        "n_records": len(records),
        "n_datasets_complete": int(summary["n_datasets"].iloc[0]),
        "summary": json.loads(summary.to_json(orient="index")),
    }
    (out / "summary.json").write_text(json.dumps(result, indent=2, sort_keys=True))
    result["figures"] = _figures(table, summary, out, higher) if figures else []
    return result
