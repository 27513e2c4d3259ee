"""Sparse parity with FACT-RFM and NFA-RFM: the sample-size phase transition (``factrfm parity``).

x is uniform on {0,1}^d (or {-1,+1}^d), y the XOR of k fixed coordinates (0-based indices; the
default support is the paper's (7, 15, 25, 29), its first k for k < 4). For every k, sample size n,
rule and seed one RFM runs for a fixed number of iterations with the last kept; a fresh test sample
is measured at every iteration (measured only, never used for selection). Per iteration: train
and test accuracy, the share of diag(M) on the support, whether the k largest entries of diag(M)
are the support, and diag(M) itself. A run succeeds when at the last iteration the k largest
diagonal entries are the support and the test accuracy is at least ``--success-accuracy``
(default 0.95).

Every run is written to ``<out>/runs/k<k>_n<n>_<rule>_s<seed>.json`` before any figure is drawn;
a finished run is not recomputed.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from factrfm.datasets.tasks import check_support, one_hot, parity_support, sparse_parity
from factrfm.experiments.measures import support_weight, top_k_indices
from factrfm.experiments.store import add_run_arguments, load_run, write_json_atomic

RULES = ("fact", "fact-geomean", "agop")
RULE_LABELS = {"fact": "FACT-RFM", "fact-geomean": "FACT-RFM (geom. mean)", "agop": "NFA-RFM"}

DEFAULTS = dict(
    d=50,
    ks=[2, 3, 4],
    ns=[250, 500, 1000, 2000, 4000],
    n_test=2000,
    n_iter=15,
    kernel="laplace",
    bandwidth=10.0,
    ridge=1e-3,
)
QUICK = dict(ks=[2, 3], ns=[125, 250, 500, 1000, 2000], n_test=1000, n_iter=12)


def derived_seed(*parts: int) -> int:
    """A 32-bit seed from integers (train and test samples differ; runs are reproducible)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def make_parity_kernel(name: str, bandwidth: float):
    """The kernel object for ``name`` from the engine factory."""
    from factrfm.kernels import make_kernel

    if name not in ("laplace", "gaussian"):
        raise ValueError(f"kernel must be 'laplace' or 'gaussian', got {name!r}")
    return make_kernel(name, bandwidth=bandwidth)


def run_single(cfg: dict[str, Any], progress: bool = True, device: str = "cpu") -> dict[str, Any]:
    """Fit one RFM on one sparse-parity sample and measure every iteration.

    Parameters
    ----------
    cfg : dict
        d, k, support, n, n_test, n_iter, kernel, bandwidth, ridge, agop_power, normalize,
        encoding, rule, seed, success_accuracy.
    progress : bool
        Show a tqdm bar over iterations.
    device : str
        Where the RFM computes ("cpu", "cuda", ...); results are stored on the CPU.

    Returns
    -------
    dict
        {"config", "rows" (one dict per iteration), "summary"}; JSON-ready.
    """
    from factrfm.rfm import fit_rfm

    support = check_support(cfg["support"], cfg["d"])
    torch.manual_seed(cfg["seed"])
    X, y = sparse_parity(
        cfg["n"], cfg["d"], support, cfg["encoding"], seed=derived_seed(cfg["seed"], cfg["k"], 0)
    )
    X_test, y_test = sparse_parity(
        cfg["n_test"],
        cfg["d"],
        support,
        cfg["encoding"],
        seed=derived_seed(cfg["seed"], cfg["k"], 1),
    )
    kernel = make_parity_kernel(cfg["kernel"], cfg["bandwidth"])
    desc = f"k={cfg['k']} n={cfg['n']} {cfg['rule']}"
    with tqdm(total=cfg["n_iter"] + 1, desc=desc, disable=not progress, leave=False) as bar:
        result = fit_rfm(
            X.to(device),
            one_hot(y, 2).to(device),
            X_test.to(device),
            one_hot(y_test, 2).to(device),
            kernel=kernel,
            rule=cfg["rule"],
            n_iter=cfg["n_iter"],
            ridge=cfg["ridge"],
            agop_power=cfg["agop_power"],
            normalize=cfg["normalize"],
            task="classification",
            select="last",
            keep_matrices=True,
            callback=lambda rec: bar.update(1),
        )
    rows = measure_history(result.history, support)
    return {"config": cfg, "rows": rows, "summary": summarize_rows(rows, cfg["success_accuracy"])}


def measure_history(history: list, support: tuple[int, ...]) -> list[dict[str, Any]]:
    """One row per ``IterationRecord``: accuracies, support weight, top-k match, diag(M).

    Parameters
    ----------
    history : list of IterationRecord (with M kept)
    support : tuple of 0-based indices

    Returns
    -------
    list of dict
    """
    k = len(support)
    rows = []
    for rec in history:
        if rec.M is None:
            raise ValueError("history must hold the matrices: fit with keep_matrices=True")
        diag = torch.diagonal(rec.M).detach().cpu().double().numpy()
        rows.append(
            {
                "iteration": int(rec.iteration),
                "train_accuracy": rec.metrics.get("train_accuracy"),
                "test_accuracy": rec.metrics.get("val_accuracy"),
                "support_weight": support_weight(diag, support),
                "top_k_on_support": top_k_indices(diag, k) == tuple(support),
                "diag": diag.tolist(),
            }
        )
    return rows


def summarize_rows(rows: list[dict[str, Any]], success_accuracy: float = 0.95) -> dict[str, Any]:
    """Final accuracy and support measures, and whether the run succeeded."""
    last = rows[-1]
    ok = [r["top_k_on_support"] and (r["test_accuracy"] or 0.0) >= success_accuracy for r in rows]
    return {
        "final_test_accuracy": last["test_accuracy"],
        "final_train_accuracy": last["train_accuracy"],
        "best_test_accuracy": max(r["test_accuracy"] for r in rows),
        "final_support_weight": last["support_weight"],
        "final_top_k_on_support": last["top_k_on_support"],
        "success": bool(ok[-1]),
        "first_success_iteration": next(
            (r["iteration"] for r, s in zip(rows, ok, strict=True) if s), None
        ),
    }


def transition_n(ns: list[int], success_rates: list[float], level: float = 0.5) -> int | None:
    """The smallest n from which on every larger n in the sweep has success rate >= ``level``.

    Parameters
    ----------
    ns : list of int (any order)
    success_rates : list of float, same order
    level : float

    Returns
    -------
    int or None (no n in the sweep, or the largest n fails)
    """
    pairs = sorted(zip(ns, success_rates, strict=True))
    found = None
    for n, rate in reversed(pairs):
        if rate >= level:
            found = n
        else:
            break
    return found


# --------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``factrfm parity``."""
    parser.add_argument("--d", type=int, default=DEFAULTS["d"])
    parser.add_argument("--ks", type=int, nargs="+", default=None, help="default 2 3 4; quick 2 3")
    parser.add_argument(
        "--support",
        type=int,
        nargs="+",
        default=None,
        help="0-based support for a single k (default: first k of 7 15 25 29)",
    )
    parser.add_argument("--ns", type=int, nargs="+", default=None, help="training sizes")
    parser.add_argument("--n-test", type=int, default=None)
    parser.add_argument("--n-iter", type=int, default=None)
    parser.add_argument("--rules", nargs="+", default=["fact", "agop"], choices=RULES)
    parser.add_argument("--kernel", default=DEFAULTS["kernel"], choices=["laplace", "gaussian"])
    parser.add_argument("--bandwidth", type=float, default=DEFAULTS["bandwidth"])
    parser.add_argument("--ridge", type=float, default=DEFAULTS["ridge"])
    parser.add_argument("--agop-power", type=float, default=0.5)
    parser.add_argument("--normalize", default="max", choices=["max", "trace", "none"])
    parser.add_argument("--encoding", default="binary", choices=["binary", "pm1"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--seed", type=int, default=None, help="shorthand for --seeds SEED")
    parser.add_argument("--success-accuracy", type=float, default=0.95)
    add_run_arguments(parser, out="results/parity", quick_help="k = 2, 3 and n <= 2000")


def resolve_options(args: argparse.Namespace) -> dict[str, Any]:
    """Fill the sweep from --quick or the defaults, and check it."""
    base = QUICK if args.quick else DEFAULTS

    def pick(name):
        v = getattr(args, name)
        return v if v is not None else base.get(name, DEFAULTS[name])

    opts = {
        "d": args.d,
        "ks": pick("ks"),
        "ns": sorted(pick("ns")),
        "n_test": pick("n_test"),
        "n_iter": pick("n_iter"),
        "seeds": [args.seed] if args.seed is not None else args.seeds,
    }
    if args.support is not None:
        if len(opts["ks"]) != 1 or opts["ks"][0] != len(args.support):
            opts["ks"] = [len(args.support)]
        opts["supports"] = {len(args.support): check_support(args.support, args.d)}
    else:
        opts["supports"] = {k: parity_support(k, args.d) for k in opts["ks"]}
    if min(opts["ns"]) < 2:
        raise ValueError(f"--ns must all be at least 2, got {opts['ns']}")
    if opts["n_iter"] < 1:
        raise ValueError(f"--n-iter must be at least 1, got {opts['n_iter']}")
    if not 0 < args.success_accuracy <= 1:
        raise ValueError(f"--success-accuracy must be in (0, 1], got {args.success_accuracy}")
    return opts


def run(args: argparse.Namespace) -> int:
    """Run the sweep over k, n, rule and seed; write numbers; then draw."""
    opts = resolve_options(args)
    out = Path(args.out)
    records = []
    jobs = [
        (k, n, rule, seed)
        for k in opts["ks"]
        for n in opts["ns"]
        for rule in args.rules
        for seed in opts["seeds"]
    ]
    for k, n, rule, seed in tqdm(jobs, desc="parity runs", disable=args.quiet):
        cfg = {
            "d": args.d,
            "k": k,
            "support": list(opts["supports"][k]),
            "n": n,
            "n_test": opts["n_test"],
            "n_iter": opts["n_iter"],
            "kernel": args.kernel,
            "bandwidth": args.bandwidth,
            "ridge": args.ridge,
            "agop_power": args.agop_power,
            "normalize": args.normalize,
            "encoding": args.encoding,
            "rule": rule,
            "seed": seed,
            "success_accuracy": args.success_accuracy,
        }
        path = out / "runs" / f"k{k}_n{n}_{rule}_s{seed}.json"
        record = load_run(path, cfg)
        if record is None:
            record = run_single(cfg, progress=not args.quiet, device=args.device)
            write_json_atomic(path, record)
        records.append(record)
    table = success_table(records)
    write_summary(records, table, out)
    print_table(table)
    if not args.no_plots:
        plot_all(records, table, out)
        print(f"figures in {out}")
    return 0


def success_table(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (k, rule, n): success rate and mean final test accuracy over seeds, and per (k, rule)
    the transition n (``transition_n``)."""
    groups: dict[tuple, list] = {}
    for r in records:
        c = r["config"]
        groups.setdefault((c["k"], c["rule"], c["n"]), []).append(r["summary"])
    table = []
    for (k, rule, n), sums in sorted(groups.items()):
        table.append(
            {
                "k": k,
                "rule": rule,
                "n": n,
                "seeds": len(sums),
                "success_rate": float(np.mean([s["success"] for s in sums])),
                "mean_final_test_accuracy": float(
                    np.mean([s["final_test_accuracy"] for s in sums])
                ),
                "mean_final_support_weight": float(
                    np.mean([s["final_support_weight"] for s in sums])
                ),
            }
        )
    for k, rule in {(t["k"], t["rule"]) for t in table}:
        sub = [t for t in table if t["k"] == k and t["rule"] == rule]
        tn = transition_n([t["n"] for t in sub], [t["success_rate"] for t in sub])
        for t in sub:
            t["transition_n"] = tn
    return table


def write_summary(records: list[dict[str, Any]], table: list[dict[str, Any]], out: Path) -> None:
    """``success.csv`` (the table) and ``history.csv`` (one line per run and iteration)."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "success.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(table[0]))
        w.writeheader()
        w.writerows(table)
    fields = ["k", "n", "rule", "seed", "iteration", "train_accuracy", "test_accuracy"]
    fields += ["support_weight", "top_k_on_support"]
    with open(out / "history.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in records:
            c = r["config"]
            for row in r["rows"]:
                w.writerow({"k": c["k"], "n": c["n"], "rule": c["rule"], "seed": c["seed"]} | row)


def print_table(table: list[dict[str, Any]]) -> None:
    """The success table on stdout."""
    print(f"{'k':>2} {'rule':>13} {'n':>6} {'success':>7} {'test acc':>8} {'supp.w':>6} {'n*':>6}")
    for t in table:
        tn = "-" if t["transition_n"] is None else str(t["transition_n"])
        print(
            f"{t['k']:>2} {t['rule']:>13} {t['n']:>6} {t['success_rate']:7.2f} "
            f"{t['mean_final_test_accuracy']:8.4f} {t['mean_final_support_weight']:6.3f} {tn:>6}"
        )


# --------------------------------------------------------------------------- figures


def plot_all(records: list[dict[str, Any]], table: list[dict[str, Any]], out: Path) -> None:
    """Per k: test accuracy against iteration for every n, diag(M) at the largest n, and success
    against n (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = sorted({r["config"]["k"] for r in records})
    rules = [r for r in RULES if any(rec["config"]["rule"] == r for rec in records)]
    for k in ks:
        recs = [r for r in records if r["config"]["k"] == k]
        seed0 = min(r["config"]["seed"] for r in recs)
        ns = sorted({r["config"]["n"] for r in recs})
        support = recs[0]["config"]["support"]
        fig, axes = plt.subplots(len(rules), 2, figsize=(11, 3.6 * len(rules)), squeeze=False)
        cmap = plt.get_cmap("viridis")
        for i, rule in enumerate(rules):
            ax = axes[i, 0]
            for j, n in enumerate(ns):
                rec = next(
                    (
                        r
                        for r in recs
                        if r["config"]["rule"] == rule
                        and r["config"]["n"] == n
                        and r["config"]["seed"] == seed0
                    ),
                    None,
                )
                if rec is None:
                    continue
                its = [row["iteration"] for row in rec["rows"]]
                acc = [row["test_accuracy"] for row in rec["rows"]]
                ax.plot(its, acc, color=cmap(j / max(1, len(ns) - 1)), label=f"n={n}", marker=".")
            ax.axhline(0.5, color="grey", lw=0.8, ls=":")
            ax.set_ylim(0.4, 1.02)
            ax.set_xlabel("iteration")
            ax.set_ylabel("test accuracy")
            ax.set_title(f"{RULE_LABELS[rule]}, k={k}", fontsize=9)
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
            ax = axes[i, 1]
            big = [
                r
                for r in recs
                if r["config"]["rule"] == rule
                and r["config"]["n"] == ns[-1]
                and r["config"]["seed"] == seed0
            ]
            if big:
                diag = np.array(big[0]["rows"][-1]["diag"])
                colours = ["C3" if c in support else "C0" for c in range(len(diag))]
                ax.bar(np.arange(len(diag)), diag, color=colours)
                ax.set_title(
                    f"diag(M), last iteration, n={ns[-1]} (support in red: {support}, 0-based)",
                    fontsize=9,
                )
                ax.set_xlabel("coordinate (0-based)")
        fig.tight_layout()
        fig.savefig(out / f"parity_k{k}.png", dpi=110)
        plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for i, (k, rule) in enumerate(sorted({(t["k"], t["rule"]) for t in table})):
        sub = sorted((t for t in table if t["k"] == k and t["rule"] == rule), key=lambda t: t["n"])
        ns = [t["n"] for t in sub]
        style = dict(color=f"C{i}", marker="o", label=f"k={k} {RULE_LABELS[rule]}")
        axes[0].plot(ns, [t["success_rate"] for t in sub], **style)
        axes[1].plot(ns, [t["mean_final_test_accuracy"] for t in sub], **style)
    axes[0].set_ylabel("success rate (top-k diag(M) = support, test acc >= threshold)")
    axes[1].set_ylabel("final test accuracy")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("training samples n")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "parity_success_vs_n.png", dpi=110)
    plt.close(fig)
