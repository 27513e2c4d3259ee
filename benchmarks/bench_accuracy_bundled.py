"""Default ``RFMClassifier`` against scikit-learn's SVC and random forest and XGBoost's defaults,
on the raw (unscaled) bundled data sets, one fixed split (``random_state=0``), in one run.

    python benchmarks/bench_accuracy_bundled.py
"""

from __future__ import annotations

import time

from sklearn.datasets import load_breast_cancer, load_digits, load_wine
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import train_test_split
from sklearn.svm import SVC

from factrfm import RFMClassifier


def methods():
    out = {
        "FACT-RFM": lambda: RFMClassifier(random_state=0),
        "FACT-RFM geomean": lambda: RFMClassifier(rule="fact-geomean", random_state=0),
        "NFA-RFM": lambda: RFMClassifier(rule="agop", random_state=0),
        "SVC": lambda: SVC(),
        "RandomForest": lambda: RandomForestClassifier(random_state=0),
    }
    try:
        from xgboost import XGBClassifier

        out["XGBoost"] = lambda: XGBClassifier(random_state=0, n_jobs=2)
    except ImportError:  # pragma: no cover
        print("xgboost not installed: skipping it")
    return out


def main() -> None:
    sets = {"breast_cancer": load_breast_cancer, "wine": load_wine, "digits": load_digits}
    table = {}
    for name, loader in sets.items():
        X, y = loader(return_X_y=True)
        Xtr, Xte, ytr, yte = train_test_split(X, y, random_state=0)
        for method, make in methods().items():
            t0 = time.perf_counter()
            est = make().fit(Xtr, ytr)
            secs = time.perf_counter() - t0
            table[name, method] = (est.score(Xte, yte), secs)
    names = list(methods())
    print(f"{'data set':<14}" + "".join(f"{m:>18}" for m in names))
    for name in sets:
        print(f"{name:<14}" + "".join(
            f"{table[name, m][0]:>11.4f} ({table[name, m][1]:>4.1f}s)" for m in names))


if __name__ == "__main__":
    main()
