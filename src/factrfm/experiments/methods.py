"""The methods of the tabular benchmark: a name, an estimator factory and a hyper-parameter grid.

Two kinds of method share one interface (:meth:`search` on the train/validation split, then
:meth:`make_final` for the reported fits):

* :class:`GridMethod` -- any scikit-learn style estimator: each grid point is fitted on the
  training part and scored on the validation part.
* :class:`RFMMethod` -- the RFM estimators of :mod:`factrfm`: each grid point (bandwidth,
  normalisation of M, ...) is fitted with ``iteration_selection="validation"`` and
  ``eval_set=(X_val, y_val)``, so the estimator itself picks the iteration and the ridge on the
  validation part; the reported fits then reuse that ridge (a float) and that iteration count with
  ``iteration_selection="last"``, so nothing is ever chosen on a test fold.

The inputs reaching these estimators are already standardised (``uci121`` ships z-scored features;
the regression job standardises with training statistics), so RFM runs with
``preprocessing="none"``.

Large data sets. One exact kernel machine on ``n`` rows costs ``O(n^3)``; an RFM method therefore
never fits more than :data:`MAX_EXACT_ROWS` rows as one model. Above that, the grid search runs on a
seeded random sample of that many training rows (and of at most :data:`MAX_VALIDATION_ROWS`
validation rows), so the chosen ridge, bandwidth and iteration count are those of a model of the
leaf size; the reported fits are :class:`~factrfm.partition.PartitionedRFMClassifier` /
``Regressor`` models whose leaves hold at most :data:`MAX_EXACT_ROWS` rows, each leaf fitted with
the chosen parameters. Every data set of the Arora et al. protocol (at most 5,000 rows, so at most
3,750 per fold) stays on the exact path.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "RIDGES",
    "MAX_EXACT_ROWS",
    "MAX_VALIDATION_ROWS",
    "GridMethod",
    "RFMMethod",
    "METHODS",
    "DEFAULT_METHODS",
    "ABLATIONS",
    "METHOD_GROUPS",
    "expand_methods",
    "get_method",
    "fitted_route",
    "score",
]

#: Ridge values tried at every RFM iteration (chosen on the validation split by the estimator).
RIDGES: tuple[float, ...] = (10.0, 1.0, 0.1, 0.01, 0.001)

#: Most training rows an RFM method fits as one exact kernel machine (search sample, leaf size).
MAX_EXACT_ROWS = 4000

#: Most validation rows an RFM grid point is scored on (a seeded sample above it).
MAX_VALIDATION_ROWS = 10_000


def score(task: str, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Accuracy (classification) or root-mean-square error (regression).

    Parameters
    ----------
    task : {"classification", "regression"}
    y_true, y_pred : ndarray of shape (n,)

    Returns
    -------
    float
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred).reshape(y_true.shape)
    if task == "classification":
        return float(np.mean(y_true == y_pred))
    if task == "regression":
        return float(np.sqrt(np.mean((y_true.astype(float) - y_pred.astype(float)) ** 2)))
    raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")


def better(task: str, a: float, b: float) -> bool:
    """Whether score ``a`` is strictly better than ``b`` (higher accuracy, lower RMSE)."""
    return a > b if task == "classification" else a < b


class _EncodedClassifier:
    """Fit a classifier on labels re-coded to ``0..k-1``; a single training class predicts itself.

    XGBoost insists on contiguous labels, and a fold may lack some classes of the data set.
    """

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator

    def fit(self, X: np.ndarray, y: np.ndarray) -> _EncodedClassifier:
        self.classes_, codes = np.unique(y, return_inverse=True)
        if self.classes_.size > 1:
            self.estimator.fit(X, codes)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        if self.classes_.size == 1:
            return np.full(X.shape[0], self.classes_[0])
        return self.classes_[np.asarray(self.estimator.predict(X)).astype(int).ravel()]


class _ThreadCapped:
    """XGBoost with one OpenMP thread below 10,000 training rows per extra thread.

    On small data, OpenMP threads spend their time spinning at barriers; on a busy 2-core machine
    we measured iris (75 rows, 8 grid fits + 4 fold fits) at 116 s with 2 threads against 0.8 s
    with one. The ``hist`` trees do not depend on the thread count.
    """

    def __init__(self, estimator: Any, threads: int) -> None:
        self.estimator = estimator
        self.threads = threads

    def fit(self, X: np.ndarray, y: np.ndarray) -> _ThreadCapped:
        self.estimator.set_params(n_jobs=max(1, min(self.threads, 1 + len(X) // 10_000)))
        self.estimator.fit(X, y)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.estimator.predict(X)


def _xgboost(params: dict, seed: int, threads: int, task: str) -> Any:
    import xgboost as xgb

    common = dict(
        n_estimators=params["n_estimators"],
        max_depth=params["max_depth"],
        learning_rate=params["learning_rate"],
        subsample=0.8,
        colsample_bytree=0.8,
        tree_method="hist",
        n_jobs=threads,
        random_state=seed,
        verbosity=0,
    )
    if task == "classification":
        return _EncodedClassifier(_ThreadCapped(xgb.XGBClassifier(**common), threads))
    return _ThreadCapped(xgb.XGBRegressor(**common), threads)


def _random_forest(params: dict, seed: int, threads: int, task: str) -> Any:
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    cls = RandomForestClassifier if task == "classification" else RandomForestRegressor
    est = cls(
        n_estimators=300,
        max_features=params["max_features"],
        min_samples_leaf=params["min_samples_leaf"],
        n_jobs=threads,
        random_state=seed,
    )
    return _EncodedClassifier(est) if task == "classification" else est


class _QuietMLP:
    """scikit-learn's MLP without its convergence warnings (the budget of epochs is a choice)."""

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator

    def fit(self, X: np.ndarray, y: np.ndarray) -> _QuietMLP:
        from sklearn.exceptions import ConvergenceWarning

        # Early stopping holds out 10 % of the rows; below 100 rows that part is too small to
        # judge (or to hold every class), so tiny sets stop on the training loss instead.
        self.estimator.set_params(early_stopping=len(X) >= 100)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.estimator.fit(X, y)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.estimator.predict(X)


def _mlp(params: dict, seed: int, threads: int, task: str) -> Any:
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    cls = MLPClassifier if task == "classification" else MLPRegressor
    est = cls(
        hidden_layer_sizes=tuple(params["hidden"]),
        alpha=params["alpha"],
        learning_rate_init=1e-3,
        batch_size=128,
        max_iter=200,
        early_stopping=True,  # 10 % of the training part, seeded; see _QuietMLP.fit
        n_iter_no_change=10,
        random_state=seed,
    )
    wrapped = _QuietMLP(est)
    return _EncodedClassifier(wrapped) if task == "classification" else wrapped


_FACTORIES = {"xgboost": _xgboost, "random_forest": _random_forest, "mlp": _mlp}


@dataclass(frozen=True)
class GridMethod:
    """A scikit-learn style method tuned by plain grid search on the validation split.

    Parameters
    ----------
    name : str
        The method's name in records and reports.
    factory : str
        Key of the estimator factory (``"xgboost"``, ``"random_forest"``, ``"mlp"``).
    grid : tuple of dict
        Grid points in the order tried; ties go to the first.
    """

    name: str
    factory: str
    grid: tuple[dict, ...]
    kind: str = field(default="grid", init=False)

    def make(self, params: dict, seed: int, threads: int, task: str) -> Any:
        """Build an unfitted estimator for one grid point."""
        return _FACTORIES[self.factory](params, seed, threads, task)

    def search(
        self,
        params: dict,
        X_tr: np.ndarray,
        y_tr: np.ndarray,
        X_val: np.ndarray,
        y_val: np.ndarray,
        *,
        seed: int,
        threads: int,
        task: str,
    ) -> tuple[float, dict]:
        """Fit one grid point on the training part; return (validation score, final params)."""
        est = self.make(params, seed, threads, task).fit(X_tr, y_tr)
        return score(task, y_val, est.predict(X_val)), dict(params)

    def make_final(self, params: dict, seed: int, threads: int, task: str) -> Any:
        """The estimator fitted on each reported training part with the chosen params."""
        return self.make(params, seed, threads, task)


@dataclass(frozen=True)
class RFMMethod:
    """An RFM estimator (FACT-RFM, NFA-RFM, or plain kernel ridge with ``n_iter=0``).

    Parameters
    ----------
    name : str
    fixed : dict
        Estimator parameters common to all grid points (``rule``, ``agop_power``, ``n_iter``...).
    grid : tuple of dict
        Grid points (``bandwidth``, ``normalize``...) in the order tried.
    max_rows : int, default=MAX_EXACT_ROWS
        Most training rows fitted as one exact model; above it the search runs on a seeded
        sample and the reported fits are partitioned (see the module docstring).
    """

    name: str
    fixed: dict
    grid: tuple[dict, ...]
    max_rows: int = MAX_EXACT_ROWS
    kind: str = field(default="rfm", init=False)

    def _params(self, params: dict, seed: int) -> dict:
        kwargs = {"preprocessing": "none", "random_state": seed, "kernel": "laplace"}
        kwargs.update(self.fixed)
        kwargs.update(params)
        return kwargs

    def make(self, params: dict, seed: int, threads: int, task: str) -> Any:
        """Build an unfitted (exact) RFM estimator from ``fixed`` updated by ``params``."""
        from factrfm import RFMClassifier, RFMRegressor

        cls = RFMClassifier if task == "classification" else RFMRegressor
        return cls(**self._params(params, seed))

    def search(
        self,
        params: dict,
        X_tr: np.ndarray,
        y_tr: np.ndarray,
        X_val: np.ndarray,
        y_val: np.ndarray,
        *,
        seed: int,
        threads: int,
        task: str,
    ) -> tuple[float, dict]:
        """Fit with validation-selected iteration and ridge; return (val score, final params).

        The final params fix ``ridge`` to the chosen float and ``n_iter`` to the chosen
        iteration, with ``iteration_selection="last"``.
        """
        rng = np.random.default_rng(seed)
        X_tr, y_tr = _sample(rng, self.max_rows, X_tr, y_tr)
        X_val, y_val = _sample(rng, MAX_VALIDATION_ROWS, X_val, y_val)
        if task == "classification" and np.unique(y_tr).size < 2:
            # A single training class: the constant prediction, no metric to learn.
            val = score(task, y_val, np.full(y_val.shape, y_tr[0]))
            return val, {**params, "ridge": RIDGES[0], "n_iter": 0}
        est = self.make(
            {"ridge": RIDGES, "iteration_selection": "validation", "refit": False, **params},
            seed,
            threads,
            task,
        )
        # Validation rows of a class absent from training cannot be fitted; the estimator selects
        # on the other rows, and they still count as errors in the returned score.
        seen = np.isin(y_val, y_tr) if task == "classification" else np.ones(len(y_val), bool)
        est.fit(X_tr, y_tr, eval_set=(X_val[seen], y_val[seen]))
        val = score(task, y_val, est.predict(X_val))
        final = dict(params)
        final["ridge"] = float(est.ridge_)
        final["n_iter"] = int(est.best_iter_)
        return val, final

    def make_final(self, params: dict, seed: int, threads: int, task: str) -> Any:
        """The estimator for the reported fits: fixed ridge and iteration count, no selection;
        exact up to ``max_rows`` training rows, partitioned above."""
        est = _SizeRouted(
            self._params({**params, "iteration_selection": "last"}, seed), task, self.max_rows, seed
        )
        return _EncodedClassifier(est) if task == "classification" else est


def fitted_route(estimator: Any) -> str | None:
    """How a fitted final RFM estimator was fitted (``"exact"``, ``"partitioned:<leaves>"``);
    None for the baselines."""
    inner = estimator.estimator if isinstance(estimator, _EncodedClassifier) else estimator
    return getattr(inner, "route_", None)


def _sample(rng: np.random.Generator, limit: int, X: np.ndarray, y: np.ndarray):
    """``(X, y)`` itself up to ``limit`` rows, else a random sample of ``limit`` rows (in order)."""
    if len(X) <= limit:
        return X, y
    keep = np.sort(rng.choice(len(X), limit, replace=False))
    return X[keep], y[keep]


class _SizeRouted:
    """An exact RFM model up to ``max_rows`` training rows, a partitioned one above.

    The partition's leaves hold at most ``max_rows`` rows and use ``params``; ``route_`` records
    which path the last fit took (``"exact"`` or ``"partitioned:<number of leaves>"``).
    """

    def __init__(self, params: dict, task: str, max_rows: int, seed: int) -> None:
        self.params, self.task, self.max_rows, self.seed = params, task, max_rows, seed

    def fit(self, X: np.ndarray, y: np.ndarray) -> _SizeRouted:
        from factrfm import (
            PartitionedRFMClassifier,
            PartitionedRFMRegressor,
            RFMClassifier,
            RFMRegressor,
        )

        clf = self.task == "classification"
        if len(X) <= self.max_rows:
            self.model_ = (RFMClassifier if clf else RFMRegressor)(**self.params)
            self.model_.fit(X, y)
            self.route_ = "exact"
        else:
            leaf = {k: v for k, v in self.params.items() if k != "random_state"}
            cls = PartitionedRFMClassifier if clf else PartitionedRFMRegressor
            self.model_ = cls(max_leaf_size=self.max_rows, leaf_params=leaf,
                              random_state=self.seed).fit(X, y)
            self.route_ = f"partitioned:{len(self.model_.leaves_)}"
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.model_.predict(X)


def _product(**axes: list) -> tuple[dict, ...]:
    """All combinations of the given axes, the first axis varying slowest."""
    points: list[dict] = [{}]
    for key, values in axes.items():
        points = [{**p, key: v} for p in points for v in values]
    return tuple(points)


_RFM_GRID = _product(bandwidth=[1.0, 10.0], normalize=["max", "trace"])
_WIDE_GRID = _product(bandwidth=[1.0, 5.0, 10.0, 20.0], normalize=["max", "trace"])
_MEDIAN_GRID = _product(bandwidth=[1.0, 5.0, 10.0, 20.0], normalize=["median"])
_FIXED_RIDGE_GRID = _product(bandwidth=[1.0, 10.0], normalize=["max", "trace"], ridge=list(RIDGES))
_N_ITER = 5

METHODS: dict[str, GridMethod | RFMMethod] = {
    m.name: m
    for m in [
        RFMMethod("fact-rfm", {"rule": "fact", "n_iter": _N_ITER}, _RFM_GRID),
        RFMMethod("fact-rfm-geomean", {"rule": "fact-geomean", "n_iter": _N_ITER}, _RFM_GRID),
        RFMMethod("nfa-rfm-s1", {"rule": "agop", "agop_power": 1.0, "n_iter": _N_ITER}, _RFM_GRID),
        RFMMethod(
            "nfa-rfm-s0.5", {"rule": "agop", "agop_power": 0.5, "n_iter": _N_ITER}, _RFM_GRID
        ),
        RFMMethod("laplace", {"n_iter": 0}, _product(bandwidth=[1.0, 5.0, 10.0, 20.0])),
        GridMethod(
            "xgboost",
            "xgboost",
            _product(max_depth=[3, 6], learning_rate=[0.05, 0.2], n_estimators=[200]),
        ),
        GridMethod(
            "random_forest",
            "random_forest",
            _product(max_features=["sqrt", 0.5], min_samples_leaf=[1, 3]),
        ),
        GridMethod("mlp", "mlp", _product(hidden=[[256], [256, 256]], alpha=[1e-4, 1e-2])),
        # Ablations (not run by default). The Laplace kernel at the single bandwidth L = 10, only
        # the ridge chosen on validation: how much the kernel baseline owes to its bandwidth grid.
        RFMMethod("laplace-l10", {"n_iter": 0}, _product(bandwidth=[10.0])),
        # FACT-RFM and NFA-RFM with the Laplace baseline's four bandwidths: how much the RFM
        # methods owe to theirs.
        RFMMethod("fact-rfm-wide", {"rule": "fact", "n_iter": _N_ITER}, _WIDE_GRID),
        RFMMethod("nfa-rfm-s1-wide", {"rule": "agop", "agop_power": 1.0, "n_iter": _N_ITER},
                  _WIDE_GRID),
        # The median normalisation (M rescaled so the median distance between training rows
        # stays that of M = I): the bandwidth keeps its iteration-0 meaning, so the grid is the
        # Laplace baseline's.
        RFMMethod("fact-rfm-median", {"rule": "fact", "n_iter": _N_ITER}, _MEDIAN_GRID),
        RFMMethod("nfa-rfm-s1-median", {"rule": "agop", "agop_power": 1.0, "n_iter": _N_ITER},
                  _MEDIAN_GRID),
        # FACT with each output's matrix squared before the outputs are added (one-hot classes
        # cannot cancel each other); the same grid as FACT-RFM.
        RFMMethod("fact-rfm-per-output", {"rule": "fact-per-output", "n_iter": _N_ITER},
                  _RFM_GRID),
        # The ridge as a grid axis, fixed along the iterations (as in the original RFM code), so
        # the validated path of metrics is the one the reported fits retrace. The default
        # methods choose the ridge anew at every iteration during the search, and the reported
        # fits then use the kept iteration's ridge at every iteration.
        RFMMethod("fact-rfm-fixed-ridge", {"rule": "fact", "n_iter": _N_ITER}, _FIXED_RIDGE_GRID),
        RFMMethod("nfa-rfm-s1-fixed-ridge", {"rule": "agop", "agop_power": 1.0,
                                             "n_iter": _N_ITER}, _FIXED_RIDGE_GRID),
    ]
}

#: Methods that answer one question about the others; run only when named in ``--methods``.
ABLATIONS: tuple[str, ...] = (
    "laplace-l10",
    "fact-rfm-wide",
    "nfa-rfm-s1-wide",
    "fact-rfm-median",
    "nfa-rfm-s1-median",
    "fact-rfm-per-output",
    "fact-rfm-fixed-ridge",
    "nfa-rfm-s1-fixed-ridge",
)

#: The methods run when ``--methods`` is not given.
DEFAULT_METHODS: tuple[str, ...] = tuple(m for m in METHODS if m not in ABLATIONS)

#: Names that stand for several default methods in ``--methods``: the kernel methods (RFM and
#: the Laplace kernel) and the other baselines.
METHOD_GROUPS: dict[str, tuple[str, ...]] = {
    "kernel": tuple(m for m in DEFAULT_METHODS if isinstance(METHODS[m], RFMMethod)),
    "baselines": tuple(m for m in DEFAULT_METHODS if not isinstance(METHODS[m], RFMMethod)),
}


def expand_methods(names: list[str]) -> list[str]:
    """Method names with the groups of :data:`METHOD_GROUPS` replaced by their members, in
    order and without repeats."""
    out: list[str] = []
    for name in names:
        for m in METHOD_GROUPS.get(name, (name,)):
            if m not in out:
                out.append(m)
    return out


def get_method(name: str) -> GridMethod | RFMMethod:
    """Look up a method by name.

    Raises
    ------
    ValueError
        If ``name`` is not a known method; the message lists the known ones.
    """
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"method: unknown method {name!r}; known: {', '.join(METHODS)}") from None
