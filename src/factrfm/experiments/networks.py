"""``factrfm nn-check``: does a trained ReLU network satisfy FACT, layer by layer, and how does that
compare with the Neural Feature Ansatz (MATH.md section 1)?

The paper's setting, shrunk to run on two CPU cores: an MLP with 5 hidden ReLU layers, per-sample
loss ``ℓ_i = mean over outputs of (f(x_i) − y_i)²`` (so the data loss is ``nn.MSELoss()``) on
one-hot targets, coupled L2 weight decay λ = 1e-4 on every parameter. Training has two phases:

1. Adam with coupled decay (``weight_decay=λ``, whose fixed points are stationary points of the
   regularised loss), mini-batches, ``--epochs`` epochs, learning rate on a cosine schedule from
   ``--lr`` to zero;
2. full-batch L-BFGS on ``L + (λ/2)‖θ‖²`` until its gradient norm is below ``--tol`` (or
   ``--lbfgs-iters`` iterations). For the dynamics figure one L-BFGS iteration counts as one epoch
   (it is one full-data gradient plus a line search).

Features are z-scored on the training split; features constant there are dropped (their weights
would feel only the decay). Everything runs in float64. The per-layer agreement (Pearson
correlation and cosine of the entries) of ``WᵀW`` with FACT and with ``AGOP^{1/2}`` is recorded
every few epochs on the training set. Outputs under ``--out``: ``results.json`` (config,
accuracies, final per-layer table), ``table.csv``, ``history.csv`` (agreement over training), then
``dynamics.png`` and ``layers.png``. A checkpoint (``checkpoint.pt``) is written at every record,
so a killed run resumes where it stopped; the L-BFGS memory is rebuilt after a resume.
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from factrfm.experiments.store import write_json_atomic
from factrfm.nn import (
    AgreementTracker,
    fact_diagnostics,
    lbfgs_polish,
    mlp,
    mse_per_sample,
    regularised_grad_norm,
)

COMMAND = "nn-check"
# uci121 calls the UCI "optdigits" set "optical"
_UCI_ALIASES = {"optdigits": "optical"}
_ACTIVATIONS = {"relu": torch.nn.ReLU, "gelu": torch.nn.GELU, "tanh": torch.nn.Tanh}
_CONFIG_KEYS = ("dataset", "activation", "epochs", "width", "depth", "weight_decay", "lr",
                "batch_size", "lbfgs_iters", "tol", "record_every", "lbfgs_record_every",
                "max_train", "test_fraction", "seed")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``factrfm nn-check``."""
    parser.add_argument("--dataset", default="digits",
                        help="digits (scikit-learn) or uci:NAME from uci121, e.g. uci:optdigits, "
                             "uci:pendigits, uci:letter (default: digits)")
    parser.add_argument("--data-dir", default=None,
                        help="folder holding uci121/ (default: $FACTRFM_DATA_DIR, ../shared/data)")
    parser.add_argument("--epochs", type=int, default=300, help="Adam epochs (default 300)")
    parser.add_argument("--width", type=int, default=128, help="hidden width (default 128)")
    parser.add_argument("--depth", type=int, default=5, help="hidden layers (default 5)")
    parser.add_argument("--activation", choices=sorted(_ACTIVATIONS), default="relu",
                        help="hidden activation (default relu, as in the paper; a smooth one lets "
                             "L-BFGS reach a far smaller gradient)")
    parser.add_argument("--weight-decay", type=float, default=1e-4, help="λ (default 1e-4)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lbfgs-iters", type=int, default=3000,
                        help="maximum L-BFGS iterations of the polish (default 3000)")
    parser.add_argument("--tol", type=float, default=1e-9,
                        help="stop the polish when ‖∇(L + λ/2‖θ‖²)‖ < tol (default 1e-9)")
    parser.add_argument("--record-every", type=int, default=10,
                        help="record agreements every this many Adam epochs")
    parser.add_argument("--lbfgs-record-every", type=int, default=100,
                        help="record agreements every this many L-BFGS iterations")
    parser.add_argument("--max-train", type=int, default=3000,
                        help="at most this many training rows (a stratified random subsample)")
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=f"results/{COMMAND}", help="output folder")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: small matrices gain nothing from more, "
                             "and lose much on a busy machine)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny run for tests: width 16, 10 epochs, 100 L-BFGS iterations")
    parser.add_argument("--no-plot", action="store_true", help="write numbers only")


def _config(args: argparse.Namespace) -> dict[str, Any]:
    if args.quick:
        args.width, args.epochs, args.lbfgs_iters = 16, 10, 100
        args.record_every, args.lbfgs_record_every, args.max_train = 5, 50, 400
    for name in ("epochs", "width", "depth", "batch_size", "record_every", "lbfgs_record_every",
                 "max_train"):
        v = getattr(args, name)
        if v < (0 if name in ("epochs", "depth") else 1):
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {v}")
    if args.lbfgs_iters < 0:
        raise ValueError(f"--lbfgs-iters must be >= 0, got {args.lbfgs_iters}")
    if not args.weight_decay > 0:
        raise ValueError(f"--weight-decay must be > 0 (FACT needs λ > 0), got {args.weight_decay}")
    if not 0 < args.test_fraction < 1:
        raise ValueError(f"--test-fraction must be in (0, 1), got {args.test_fraction}")
    return {k: getattr(args, k) for k in _CONFIG_KEYS}


# ----------------------------------------------------------------------------- data

def _read_uci121(name: str, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Features and integer labels of a uci121 data set (all rows of its main file)."""
    from factrfm.datasets.uci import load_uci121

    data = load_uci121(_UCI_ALIASES.get(name, name), data_dir)
    return data.X, data.y


def load_dataset(
    spec: str, data_dir: str | None, max_train: int, test_fraction: float, seed: int
) -> dict[str, Any]:
    """Standardised train/test split of a classification data set with one-hot targets.

    Parameters
    ----------
    spec : str
        ``digits`` or ``uci:NAME``.
    data_dir : str or None
        Folder holding ``uci121/``.
    max_train : int
        Cap on the training rows (stratified subsample).
    test_fraction : float
        Fraction held out for test accuracy (stratified).
    seed : int
        Seed of the split and the subsample.

    Returns
    -------
    dict
        ``X_train, Y_train, y_train, X_test, y_test`` (float64 tensors / int arrays), ``name``.
    """
    from sklearn.model_selection import train_test_split

    if spec == "digits":
        from sklearn.datasets import load_digits

        X, y = load_digits(return_X_y=True)
        X = X.astype(np.float64)
    elif spec.startswith("uci:") and len(spec) > 4:
        X, y = _read_uci121(spec[4:], data_dir)
    else:
        raise ValueError(f"--dataset must be 'digits' or 'uci:NAME', got {spec!r}")
    classes, y = np.unique(y, return_inverse=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=test_fraction, stratify=y,
                                          random_state=seed)
    if len(ytr) > max_train:
        Xtr, _, ytr, _ = train_test_split(Xtr, ytr, train_size=max_train, stratify=ytr,
                                          random_state=seed)
    # Drop constant columns; a stored constant column can vary at round-off level (std 1e-16).
    scale = np.maximum(np.abs(Xtr).max(0), 1.0)
    keep = Xtr.std(0) > 1e-12 * scale
    Xtr, Xte = Xtr[:, keep], Xte[:, keep]
    mu, sd = Xtr.mean(0), Xtr.std(0)
    Xtr, Xte = (Xtr - mu) / sd, (Xte - mu) / sd
    Y = np.eye(len(classes))[ytr]
    return {
        "name": spec,
        "X_train": torch.tensor(Xtr, dtype=torch.float64),
        "Y_train": torch.tensor(Y, dtype=torch.float64),
        "y_train": ytr,
        "X_test": torch.tensor(Xte, dtype=torch.float64),
        "y_test": yte,
    }


# ----------------------------------------------------------------------------- outputs

def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    keys = list(dict.fromkeys(k for r in rows for k in r))
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)


def _accuracy(model: torch.nn.Module, X: torch.Tensor, y: np.ndarray) -> float:
    with torch.no_grad():
        return float((model(X).argmax(1).numpy() == y).mean())


def _print_table(rows: list[dict[str, Any]]) -> None:
    cols = [("layer", "{:>6}"), ("in", "{:>4}"), ("out", "{:>4}"), ("stationarity", "{:>12.2e}"),
            ("fact_pearson", "{:>12.6f}"), ("fact_relerr", "{:>11.2e}"),
            ("fact_back_pearson", "{:>17.6f}"), ("nfa_pearson", "{:>11.4f}"),
            ("agop_pearson", "{:>12.4f}")]
    print("  ".join(f"{c:>{len(fmt.format(rows[0][c]))}}" for c, fmt in cols))
    for r in rows:
        print("  ".join(fmt.format(r[c]) for c, fmt in cols))


# ----------------------------------------------------------------------------- run

def run(args: argparse.Namespace) -> int:
    """Train, record, write numbers, then draw. Returns 0."""
    from tqdm.auto import tqdm

    cfg = _config(args)
    torch.set_num_threads(max(1, args.threads))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset(cfg["dataset"], args.data_dir, cfg["max_train"], cfg["test_fraction"],
                        cfg["seed"])
    X, Y = data["X_train"], data["Y_train"]
    n, d = X.shape
    lam = cfg["weight_decay"]

    torch.manual_seed(cfg["seed"])
    model = mlp(d, cfg["width"], cfg["depth"], Y.shape[1],
                activation=_ACTIVATIONS[cfg["activation"]]).double()
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"], weight_decay=lam)
    gen = torch.Generator().manual_seed(cfg["seed"])
    tracker = AgreementTracker(model, (X, Y), mse_per_sample, optimizer=opt, batch_size=1024)
    state = {"epoch": 0, "lbfgs_iter": 0, "phase": "adam", "seconds": 0.0}

    ckpt_path = out / "checkpoint.pt"
    if ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, weights_only=False)
        if ckpt["config"] != cfg:
            raise ValueError(
                f"--out {out} holds a run with another configuration ({ckpt['config']}); "
                "choose another --out or delete the folder"
            )
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        gen.set_state(ckpt["generator"])
        tracker.history = ckpt["history"]
        state = ckpt["state"]
        print(f"resuming from {ckpt_path}: phase {state['phase']}, epoch {state['epoch']}, "
              f"L-BFGS iteration {state['lbfgs_iter']}")

    t0 = time.perf_counter() - state["seconds"]

    def record(step: float, phase: str) -> None:
        if any(r["epoch"] == step for r in tracker.history):
            return
        gnorm = regularised_grad_norm(model, X, Y, mse_per_sample, lam)
        with torch.no_grad():
            mse = float(mse_per_sample(model(X), Y).mean())
        tracker(step, force=True, phase=phase, grad_norm=gnorm, train_mse=mse)
        state["seconds"] = time.perf_counter() - t0
        torch.save({"config": cfg, "model": model.state_dict(), "optimizer": opt.state_dict(),
                    "generator": gen.get_state(), "history": tracker.history, "state": state},
                   ckpt_path.with_suffix(".tmp"))
        ckpt_path.with_suffix(".tmp").replace(ckpt_path)

    # phase 1: Adam with coupled L2 decay
    if state["phase"] == "adam":
        if state["epoch"] == 0:
            record(0, "adam")
        bar = tqdm(range(state["epoch"], cfg["epochs"]), desc="Adam epochs", initial=state["epoch"],
                   total=cfg["epochs"])
        for epoch in bar:
            model.train()
            for group in opt.param_groups:  # cosine schedule, a function of the epoch only
                group["lr"] = cfg["lr"] * 0.5 * (1 + math.cos(math.pi * epoch / cfg["epochs"]))
            perm = torch.randperm(n, generator=gen)
            for i in range(0, n, cfg["batch_size"]):
                idx = perm[i:i + cfg["batch_size"]]
                opt.zero_grad()
                mse_per_sample(model(X[idx]), Y[idx]).mean().backward()
                opt.step()
            state["epoch"] = epoch + 1
            if state["epoch"] % cfg["record_every"] == 0 or state["epoch"] == cfg["epochs"]:
                record(state["epoch"], "adam")
                bar.set_postfix(fact=f"{tracker.history[-1]['fact_pearson']:.3f}")
        state["phase"] = "lbfgs"

    # phase 2: full-batch L-BFGS polish of the regularised loss
    if state["phase"] == "lbfgs":
        E = cfg["epochs"]
        bar = tqdm(total=cfg["lbfgs_iters"], initial=state["lbfgs_iter"], desc="L-BFGS")
        start = state["lbfgs_iter"]

        def callback(it: int, gnorm: float) -> bool:
            state["lbfgs_iter"] = start + it
            bar.n = state["lbfgs_iter"]
            bar.set_postfix(grad=f"{gnorm:.2e}")
            bar.refresh()
            record(E + state["lbfgs_iter"], "lbfgs")
            return False

        remaining = cfg["lbfgs_iters"] - state["lbfgs_iter"]
        if remaining > 0:
            lbfgs_polish(model, X, Y, mse_per_sample, lam, tol=cfg["tol"], max_iter=remaining,
                         chunk=cfg["lbfgs_record_every"], callback=callback)
        bar.close()
        state["phase"] = "done"
        record(E + state["lbfgs_iter"], "lbfgs")

    # final numbers: written before anything is drawn
    final = fact_diagnostics(model, (X, Y), mse_per_sample, weight_decay=lam, batch_size=1024)
    table = final.table()
    gnorm = regularised_grad_norm(model, X, Y, mse_per_sample, lam)
    results = {
        "config": cfg,
        "n_train": n,
        "n_test": int(len(data["y_test"])),
        "d": d,
        "classes": int(Y.shape[1]),
        "train_accuracy": _accuracy(model, X, data["y_train"]),
        "test_accuracy": _accuracy(model, data["X_test"], data["y_test"]),
        "train_mse": float(mse_per_sample(model(X), Y).mean().detach()),
        "grad_norm": gnorm,
        "adam_epochs": state["epoch"],
        "lbfgs_iterations": state["lbfgs_iter"],
        "seconds": time.perf_counter() - t0,
        "table": table,
        "warnings": tracker.warnings,
    }
    write_json_atomic(out / "results.json", results)
    _write_csv(out / "table.csv", table)
    _write_csv(out / "history.csv", tracker.history)

    print(f"{cfg['dataset']}: n_train={n}, d={d}, width={cfg['width']}, depth={cfg['depth']}, "
          f"λ={lam:g}; train acc {results['train_accuracy']:.4f}, test acc "
          f"{results['test_accuracy']:.4f}, ‖∇(L+λ/2‖θ‖²)‖ = {gnorm:.2e} after "
          f"{state['epoch']} Adam epochs + {state['lbfgs_iter']} L-BFGS iterations "
          f"({results['seconds']:.0f} s)")
    _print_table(table)

    if not args.no_plot:
        from factrfm.nn.plotting import plot_agreement_dynamics, plot_layer_agreement

        plot_agreement_dynamics(tracker.history, path=str(out / "dynamics.png"),
                                marks=[(cfg["epochs"], "L-BFGS")])
        ax = plot_layer_agreement(table)
        ax.set_title(f"{cfg['dataset']}: agreement with WᵀW at the end of training",
                     fontsize="medium")
        ax.figure.tight_layout()
        ax.figure.savefig(out / "layers.png", dpi=130)
    print(f"wrote {out}/results.json, table.csv, history.csv"
          + ("" if args.no_plot else ", dynamics.png, layers.png"))
    if not all(math.isfinite(r["fact_pearson"]) for r in table):
        raise ValueError("a layer's FACT correlation is not finite (a zero weight matrix?)")
    return 0
