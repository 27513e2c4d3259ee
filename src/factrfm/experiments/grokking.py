"""Grokking of modular arithmetic with FACT-RFM and NFA-RFM (``factrfm grokking``).

Data: all pairs (a, b) of ``(a op b) mod p`` (op in +, -, *, /), inputs e_a (+) e_b, one-hot
targets, a seeded training fraction; the rest is the test set. An RFM runs for many iterations with
the last iteration kept (the test set is only measured, never used for selection). Per iteration:
train/test accuracy and mean squared error, the circulant deviation of M's off-diagonal block after
the re-ordering for the operation (``measures.modular_block_order``), the cosine alignment of M_t
with the final M, and the Pearson correlation between the entries of the FACT matrix F and the AGOP
computed from the same fit.

Every run is written to ``<out>/runs/<operation>_<rule>.json`` (and the matrices at a few iterations
to ``..._M.npz``) before any figure is drawn; a finished run is not recomputed.
"""

from __future__ import annotations

import argparse
import csv
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from factrfm.datasets.tasks import OPERATIONS, modular_arithmetic
from factrfm.experiments.measures import (
    first_iteration_above,
    modular_circulant_deviation,
    reorder_feature_matrix,
)
from factrfm.experiments.store import add_run_arguments, load_run, write_json_atomic
from factrfm.linalg import cosine, pearson

RULES = ("fact", "fact-geomean", "agop")
RULE_LABELS = {"fact": "FACT-RFM", "fact-geomean": "FACT-RFM (geom. mean)", "agop": "NFA-RFM"}
OP_SYMBOLS = {"add": "+", "sub": "−", "mul": "×", "div": "÷"}

DEFAULTS = dict(p=61, train_fraction=0.5, n_iter=75, kernel="gaussian", bandwidth=2.5, ridge=0.0)
QUICK = dict(p=23, train_fraction=0.7, n_iter=30)


def make_grokking_kernel(name: str, bandwidth: float):
    """The kernel object for ``name`` (gaussian, quadratic, laplace) from the engine factory."""
    from factrfm.kernels import make_kernel

    if name not in ("gaussian", "quadratic", "laplace"):
        raise ValueError(f"kernel must be 'gaussian', 'quadratic' or 'laplace', got {name!r}")
    if name == "quadratic":
        return make_kernel("quadratic")
    return make_kernel(name, bandwidth=bandwidth)


def run_config(args_like: dict[str, Any], operation: str, rule: str) -> dict[str, Any]:
    """The configuration that identifies one run (what the stored JSON is checked against)."""
    keys = (
        "p",
        "train_fraction",
        "n_iter",
        "kernel",
        "bandwidth",
        "ridge",
        "agop_power",
        "normalize",
        "centering",
        "dtype",
        "seed",
    )
    cfg = {k: args_like[k] for k in keys}
    cfg.update(operation=operation, rule=rule)
    return cfg


def snapshot_iterations(n_iter: int, count: int = 5) -> list[int]:
    """``count`` iterations spread over 0..n_iter (always including 0, 1 and n_iter)."""
    its = {0, 1, n_iter} | {int(round(x)) for x in np.linspace(0, n_iter, count)}
    return sorted(i for i in its if 0 <= i <= n_iter)


def run_single(
    cfg: dict[str, Any], progress: bool = True, device: str = "cpu"
) -> tuple[dict[str, Any], dict]:
    """Fit one RFM on one modular task and measure every iteration.

    Parameters
    ----------
    cfg : dict
        As made by ``run_config``: p, train_fraction, n_iter, kernel, bandwidth, ridge, agop_power,
        normalize, centering, dtype, seed, operation, rule.
    progress : bool
        Show a tqdm bar over iterations.
    device : str
        Where the RFM computes ("cpu", "cuda", ...); results are stored on the CPU.

    Returns
    -------
    record : dict
        {"config", "rows" (one dict per iteration), "summary"}; JSON-ready.
    snapshots : dict
        {"iterations": int array, "M": (s, 2p, 2p) array} for heat maps.
    """
    from factrfm.rfm import fit_rfm

    torch.manual_seed(cfg["seed"])
    dtype = {"float32": torch.float32, "float64": torch.float64}[cfg["dtype"]]
    data = modular_arithmetic(
        cfg["p"], cfg["operation"], cfg["train_fraction"], seed=cfg["seed"], dtype=dtype
    )
    kernel = make_grokking_kernel(cfg["kernel"], cfg["bandwidth"])
    desc = f"{cfg['operation']} p={cfg['p']} {cfg['rule']}"
    bar = tqdm(total=cfg["n_iter"] + 1, desc=desc, disable=not progress, leave=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fit_rfm(
            data.X_train.to(device),
            data.Y_train.to(device),
            data.X_test.to(device),
            data.Y_test.to(device),
            kernel=kernel,
            rule=cfg["rule"],
            n_iter=cfg["n_iter"],
            ridge=cfg["ridge"],
            agop_power=cfg["agop_power"],
            normalize=cfg["normalize"],
            centering=cfg["centering"],
            task="classification",
            select="last",
            keep_matrices=True,
            keep_feature_matrices=True,
            callback=lambda rec: bar.update(1),
        )
    bar.close()
    rows = measure_history(result.history, cfg["p"], cfg["operation"])
    snaps = snapshot_iterations(cfg["n_iter"])
    by_it = {rec.iteration: rec for rec in result.history}
    snap_its = [i for i in snaps if i in by_it and by_it[i].M is not None]
    snapshots = {
        "iterations": np.array(snap_its, dtype=np.int64),
        "M": np.stack([by_it[i].M.detach().cpu().double().numpy() for i in snap_its]),
    }
    record = {
        "config": cfg,
        "n_train": len(data.train_pairs),
        "n_test": len(data.test_pairs),
        "rows": rows,
        "summary": summarize_rows(rows),
        # solver and feature-learning warnings (e.g. jitter added to a singular K when ridgeless)
        "n_warnings": len(caught),
        "warnings": sorted({str(w.message) for w in caught})[:10],
    }
    for message in record["warnings"]:
        warnings.warn(f"{desc}: {message}", RuntimeWarning, stacklevel=2)
    return record, snapshots


def measure_history(history: list, p: int, operation: str) -> list[dict[str, Any]]:
    """One row of measurements per ``IterationRecord`` (needs the kept matrices).

    Parameters
    ----------
    history : list of IterationRecord
        From ``fit_rfm(..., keep_matrices=True, keep_feature_matrices=True)``.
    p : int
    operation : str

    Returns
    -------
    list of dict
        Keys: iteration, ridge, train_accuracy, test_accuracy, train_mse, test_mse,
        circulant_deviation, alignment_final, fact_agop_corr (None where not defined).
    """
    if not history or history[-1].M is None:
        raise ValueError("history must hold the matrices: fit with keep_matrices=True")
    M_final = history[-1].M
    rows = []
    for rec in history:
        m = rec.metrics
        row: dict[str, Any] = {
            "iteration": int(rec.iteration),
            "ridge": float(rec.ridge),
            "train_accuracy": m.get("train_accuracy"),
            "test_accuracy": m.get("val_accuracy"),
            "train_mse": m.get("train_mse"),
            "test_mse": m.get("val_mse"),
            "circulant_deviation": modular_circulant_deviation(rec.M, p, operation),
            "alignment_final": cosine(rec.M, M_final),
            "fact_agop_corr": None,
        }
        fact, agop = getattr(rec, "fact", None), getattr(rec, "agop", None)
        if fact is not None and agop is not None:
            try:
                row["fact_agop_corr"] = pearson(fact, agop)
            except ValueError:  # a constant matrix: correlation undefined
                row["fact_agop_corr"] = None
        rows.append(row)
    return rows


def summarize_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """First iterations with test accuracy above 50 % and 99 %, and the final values."""
    its = [r["iteration"] for r in rows]
    test = [r["test_accuracy"] for r in rows]
    train = [r["train_accuracy"] for r in rows]
    last = rows[-1]
    return {
        "first_test_above_50": first_iteration_above(its, test, 0.5),
        "first_test_above_99": first_iteration_above(its, test, 0.99),
        "first_train_at_100": first_iteration_above(its, train, 1.0 - 1e-9),
        "final_test_accuracy": last["test_accuracy"],
        "final_train_accuracy": last["train_accuracy"],
        "final_circulant_deviation": last["circulant_deviation"],
        "initial_test_accuracy": rows[0]["test_accuracy"],
    }


# --------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``factrfm grokking``."""
    parser.add_argument(
        "--operations", nargs="+", default=["add"], choices=OPERATIONS, help="default: add"
    )
    parser.add_argument(
        "--rules", nargs="+", default=list(RULES), choices=RULES, help="default: all three"
    )
    parser.add_argument("--p", type=int, default=None, help="prime modulus (default 61; quick 23)")
    parser.add_argument("--train-fraction", type=float, default=None, help="default 0.5; quick 0.7")
    parser.add_argument(
        "--n-iter", type=int, default=None, help="iterations (default 75; quick 30)"
    )
    parser.add_argument(
        "--kernel", default=DEFAULTS["kernel"], choices=["gaussian", "quadratic", "laplace"]
    )
    parser.add_argument("--bandwidth", type=float, default=DEFAULTS["bandwidth"])
    parser.add_argument("--ridge", type=float, default=DEFAULTS["ridge"], help="0 = ridgeless")
    parser.add_argument("--agop-power", type=float, default=0.5, help="NFA-RFM: M <- AGOP^s")
    parser.add_argument("--normalize", default="max", choices=["max", "trace", "none"])
    parser.add_argument(
        "--centering",
        action="store_true",
        help="subtract the mean gradient before forming the AGOP (NFA-RFM; FACT is unaffected)",
    )
    parser.add_argument(
        "--dtype", default="float32", choices=["float32", "float64"], help="working precision"
    )
    parser.add_argument("--seed", type=int, default=0)
    add_run_arguments(parser, out="results/grokking", quick_help="small p and few iterations")


def resolve_options(args: argparse.Namespace) -> dict[str, Any]:
    """Fill the size options from --quick or the defaults and check them."""
    base = QUICK if args.quick else DEFAULTS

    def pick(name):
        value = getattr(args, name)
        return value if value is not None else base.get(name, DEFAULTS[name])

    opts = {
        "p": pick("p"),
        "n_iter": pick("n_iter"),
        "train_fraction": pick("train_fraction"),
        "kernel": args.kernel,
        "bandwidth": args.bandwidth,
        "ridge": args.ridge,
        "agop_power": args.agop_power,
        "normalize": args.normalize,
        "centering": args.centering,
        "dtype": args.dtype,
        "seed": args.seed,
    }
    if opts["n_iter"] < 1:
        raise ValueError(f"--n-iter must be at least 1, got {opts['n_iter']}")
    if opts["ridge"] < 0:
        raise ValueError(f"--ridge must be >= 0, got {opts['ridge']}")
    if opts["bandwidth"] <= 0:
        raise ValueError(f"--bandwidth must be > 0, got {opts['bandwidth']}")
    return opts


def run(args: argparse.Namespace) -> int:
    """Run every (operation, rule), write numbers, then draw."""
    opts = resolve_options(args)
    out = Path(args.out)
    runs_dir = out / "runs"
    records = []
    jobs = [(op, rule) for op in args.operations for rule in args.rules]
    for op, rule in tqdm(jobs, desc="grokking runs", disable=args.quiet):
        cfg = run_config(opts, op, rule)
        path = runs_dir / f"{op}_{rule}.json"
        record = load_run(path, cfg)
        if record is None:
            record, snapshots = run_single(cfg, progress=not args.quiet, device=args.device)
            runs_dir.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(runs_dir / f"{op}_{rule}_M.npz", **snapshots)
            write_json_atomic(path, record)  # last: its presence marks the run finished
        records.append(record)
    write_summary(records, out)
    print_summary(records)
    if not args.no_plots:
        plot_all(records, out)
        print(f"figures in {out}")
    return 0


def write_summary(records: list[dict[str, Any]], out: Path) -> None:
    """``summary.csv`` (one line per run) and ``history.csv`` (one line per run and iteration)."""
    out.mkdir(parents=True, exist_ok=True)
    fields = ["operation", "rule", "p", "n_train", "n_test"] + list(records[0]["summary"])
    with open(out / "summary.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for r in records:
            c = r["config"]
            w.writerow(
                {"operation": c["operation"], "rule": c["rule"], "p": c["p"], **r["summary"]}
                | {"n_train": r["n_train"], "n_test": r["n_test"]}
            )
    row_fields = ["operation", "rule"] + list(records[0]["rows"][0])
    with open(out / "history.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=row_fields)
        w.writeheader()
        for r in records:
            for row in r["rows"]:
                key = {"operation": r["config"]["operation"], "rule": r["config"]["rule"]}
                w.writerow(key | row)


def print_summary(records: list[dict[str, Any]]) -> None:
    """A table of the grokking iterations on stdout."""
    head = ("op", "rule", "train", ">50%", ">99%", "test", "circ.dev")
    widths = (4, 13, 6, 5, 5, 7, 8)
    print(" ".join(f"{h:>{w}}" for h, w in zip(head, widths, strict=True)))
    for r in records:
        s, c = r["summary"], r["config"]

        def fmt(v):
            return "-" if v is None else str(v)

        print(
            f"{c['operation']:>4} {c['rule']:>13} {fmt(s['first_train_at_100']):>6} "
            f"{fmt(s['first_test_above_50']):>5} {fmt(s['first_test_above_99']):>5} "
            f"{s['final_test_accuracy']:7.4f} {s['final_circulant_deviation']:8.4f}"
        )


# --------------------------------------------------------------------------- figures


def plot_all(records: list[dict[str, Any]], out: Path) -> None:
    """Accuracy and progress measures per operation, and heat maps of M per run (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    ops = sorted({r["config"]["operation"] for r in records}, key=OPERATIONS.index)
    for op in ops:
        recs = [r for r in records if r["config"]["operation"] == op]
        plot_curves(recs, out / f"curves_{op}.png")
        for r in recs:
            npz = out / "runs" / f"{op}_{r['config']['rule']}_M.npz"
            if npz.exists():
                plot_heatmaps(r, np.load(npz), out / f"heatmaps_{op}_{r['config']['rule']}.png")


def plot_curves(records: list[dict[str, Any]], path: Path) -> None:
    """Four panels against iteration: accuracy (train dashed, test solid), circulant deviation,
    alignment with the final M, and FACT-AGOP correlation; one colour per rule."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    c0 = records[0]["config"]
    for i, r in enumerate(records):
        rule = r["config"]["rule"]
        colour = f"C{i}"
        its = np.array([row["iteration"] for row in r["rows"]])

        def col(key, rows=r["rows"]):
            return np.array([np.nan if row[key] is None else row[key] for row in rows], float)

        label = RULE_LABELS.get(rule, rule)
        axes[0].plot(its, col("test_accuracy"), color=colour, label=f"{label} test")
        axes[0].plot(its, col("train_accuracy"), color=colour, ls="--", label=f"{label} train")
        # iteration 0 has M = I: its off-diagonal block is zero (trivially circulant); leave it out
        axes[1].plot(its[1:], col("circulant_deviation")[1:], color=colour, label=label)
        axes[2].plot(its, col("alignment_final"), color=colour, label=label)
        axes[3].plot(its, col("fact_agop_corr"), color=colour, label=label)
    titles = [
        "accuracy",
        "circulant deviation of M[a, b] block (re-ordered)",
        "cosine(M_t, M_final)",
        "Pearson(FACT, AGOP) entries",
    ]
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    axes[0].axhline(1.0 / c0["p"], color="grey", lw=0.8, ls=":")
    axes[0].legend(fontsize=7, loc="center left")
    axes[1].legend(fontsize=7)
    fig.suptitle(
        f"(a {OP_SYMBOLS[c0['operation']]} b) mod {c0['p']}, train fraction "
        f"{c0['train_fraction']}, {c0['kernel']} kernel, ridge {c0['ridge']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_heatmaps(record: dict[str, Any], snapshots: Any, path: Path) -> None:
    """M at a few iterations: top row as learned, bottom row re-ordered so that the off-diagonal
    block is circulant (b -> -b for -, discrete logarithm for * and /)."""
    import matplotlib.pyplot as plt

    c = record["config"]
    its, Ms = snapshots["iterations"], snapshots["M"]
    fig, axes = plt.subplots(2, len(its), figsize=(2.8 * len(its), 5.8), squeeze=False)
    for j, (it, M) in enumerate(zip(its, Ms, strict=True)):
        R = reorder_feature_matrix(M, c["p"], c["operation"])
        for i, A in enumerate((M, R)):
            ax = axes[i, j]
            # the diagonal dominates; clip the colour scale at the off-diagonal range
            off = A[~np.eye(len(A), dtype=bool)]
            v = float(np.max(np.abs(off))) or 1.0
            ax.imshow(A, cmap="RdBu_r", vmin=-v, vmax=v)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"iteration {int(it)}", fontsize=9)
        axes[0, 0].set_ylabel("M")
        axes[1, 0].set_ylabel("M re-ordered")
    fig.suptitle(
        f"{RULE_LABELS.get(c['rule'], c['rule'])}: (a {OP_SYMBOLS[c['operation']]} b) mod {c['p']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
