"""How the estimator's defaults were chosen: preprocessing and bandwidth, by cross-validation on
raw (unscaled) tables, never on a test set.

Data: scikit-learn's bundled breast_cancer, wine, digits, diabetes, and the raw UCI regression
tables under ``../shared/data/uci_regression`` (the training part of split 0), when present.
Score: mean 3-fold CV accuracy (classification) or R^2 (regression) of FACT-RFM.

    python benchmarks/choose_defaults.py
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_wine
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score

from factrfm import RFMClassifier, RFMRegressor

REGRESSION_SETS = ["bostonHousing", "concrete", "energy", "yacht", "wine-quality-red"]


def datasets(data_dir: Path | None):
    for name, loader, task in [
        ("breast_cancer", load_breast_cancer, "clf"),
        ("wine", load_wine, "clf"),
        ("digits", load_digits, "clf"),
        ("diabetes", load_diabetes, "reg"),
    ]:
        X, y = loader(return_X_y=True)
        yield name, task, X, y
    if data_dir is None or not (data_dir / "uci_regression").is_dir():
        print("uci_regression not found: bundled data only")
        return
    for name in REGRESSION_SETS:
        d = data_dir / "uci_regression" / name
        D = np.loadtxt(d / "data.txt.gz")
        f = np.loadtxt(d / "index_features.txt", dtype=int)
        t = int(np.loadtxt(d / "index_target.txt"))
        tr = np.loadtxt(d / "index_train_0.txt.gz", dtype=int)
        yield name, "reg", D[tr][:, f], D[tr, t]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", type=Path,
                   default=Path(__file__).resolve().parents[2] / "shared" / "data")
    p.add_argument("--preprocessing", nargs="+", default=["standard", "quantile"])
    p.add_argument("--bandwidths", type=float, nargs="+", default=[1, 3, 10, 30])
    args = p.parse_args()
    grid = list(itertools.product(args.preprocessing, args.bandwidths))
    header = "".join(f"{pre[:5]}/L={bw:g}".rjust(14) for pre, bw in grid)
    print(f"{'data set':<18}{header}")
    means = np.zeros(len(grid))
    count = 0
    for name, task, X, y in datasets(args.data_dir):
        scores = []
        for pre, bw in grid:
            if task == "clf":
                est = RFMClassifier(preprocessing=pre, bandwidth=bw, random_state=0)
                cv = StratifiedKFold(3, shuffle=True, random_state=0)
            else:
                est = RFMRegressor(preprocessing=pre, bandwidth=bw, random_state=0)
                cv = KFold(3, shuffle=True, random_state=0)
            scores.append(cross_val_score(est, X, y, cv=cv).mean())
        # rank-free summary: score relative to the best setting on this data set
        rel = np.array(scores) - max(scores)
        means += rel
        count += 1
        print(f"{name:<18}" + "".join(f"{s:>14.4f}" for s in scores), flush=True)
    print(f"{'mean gap to best':<18}" + "".join(f"{m / count:>14.4f}" for m in means))


if __name__ == "__main__":
    main()
