"""Partitioned FACT-RFM for inputs too large for one kernel matrix.

The data are split recursively: at a node with more than ``max_leaf_size`` rows, a small
FACT-RFM (``split_iters`` metric updates on a seeded sample of ``split_sample`` rows of the
node) learns a metric ``M``; the node's rows are split at the median of their projection on
the leading eigenvector ``v`` of ``M`` (``x . v <= threshold`` goes left). Every leaf gets its
own :class:`~factrfm.estimators.RFMClassifier` / :class:`~factrfm.estimators.RFMRegressor`, and
a prediction is routed to exactly one leaf by the same rule, so routing is deterministic and
covers every point.

Leaves are independent: they are fitted one after another (``n_jobs=1``), in ``n_jobs`` local
processes (joblib), or on a Dask cluster when a ``dask.distributed.Client`` is passed as
``client``. Splits use features standardised on the whole training set; the leaves do their own
preprocessing as set in ``leaf_params``.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.preprocessing import StandardScaler
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from factrfm.estimators import RFMClassifier, RFMRegressor

__all__ = ["PartitionedRFMClassifier", "PartitionedRFMRegressor", "SplitNode"]


@dataclass
class SplitNode:
    """An inner node (``direction`` and ``threshold`` set, children ``left``/``right``) or a
    leaf (``leaf`` is its index into ``leaves_``)."""

    direction: np.ndarray | None = None
    threshold: float = 0.0
    left: SplitNode | None = None
    right: SplitNode | None = None
    leaf: int = -1
    size: int = 0


class _ConstantLeaf:
    """A leaf whose rows all have one class: it predicts that class."""

    def __init__(self, label):
        self.classes_ = np.array([label])

    def predict(self, X):
        return np.full(len(X), self.classes_[0])

    def predict_proba(self, X):
        return np.ones((len(X), 1))


def _fit_leaf(cls, params: dict, X: np.ndarray, y: np.ndarray, threads: int | None):
    """Fit one leaf (run in the worker process when the leaves are fitted in parallel)."""
    if threads is not None:
        torch.set_num_threads(threads)
    if cls is RFMClassifier and len(np.unique(y)) == 1:
        return _ConstantLeaf(y[0])
    return cls(**params).fit(X, y)


def _leading_direction(cls, params: dict, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Leading eigenvector of the metric a small FACT-RFM learns on ``(X, y)``."""
    model = cls(**params).fit(X, y)
    _, vecs = torch.linalg.eigh(model.M_.double().cpu())
    v = vecs[:, -1].numpy()
    return v * np.sign(v[np.argmax(np.abs(v))])  # fix the sign: deterministic direction


class _PartitionedBase(BaseEstimator):
    _leaf_class = RFMRegressor

    def __init__(
        self,
        max_leaf_size: int = 10_000,
        leaf_params: dict | None = None,
        split_sample: int = 2000,
        split_iters: int = 1,
        n_jobs: int = 1,
        client=None,
        random_state=None,
    ):
        self.max_leaf_size = max_leaf_size
        self.leaf_params = leaf_params
        self.split_sample = split_sample
        self.split_iters = split_iters
        self.n_jobs = n_jobs
        self.client = client
        self.random_state = random_state

    def _check_params(self) -> None:
        for name in ("max_leaf_size", "split_sample"):
            v = getattr(self, name)
            if not isinstance(v, numbers.Integral) or v < 10:
                raise ValueError(f"{name} must be an integer >= 10, got {v!r}")
        if not isinstance(self.split_iters, numbers.Integral) or self.split_iters < 1:
            raise ValueError(f"split_iters must be a positive integer, got {self.split_iters!r}")
        if not isinstance(self.n_jobs, numbers.Integral) or self.n_jobs == 0:
            raise ValueError(f"n_jobs must be a non-zero integer (-1: all cores), got "
                             f"{self.n_jobs!r}")
        if self.leaf_params is not None and not isinstance(self.leaf_params, dict):
            raise TypeError(f"leaf_params must be a dict, got {type(self.leaf_params).__name__}")

    # -- the tree -------------------------------------------------------------------------
    def _split_params(self, rng) -> dict:
        base = dict(self.leaf_params or {})
        ridge = base.get("ridge", 1e-3)
        ridge = ridge if isinstance(ridge, numbers.Real) else min(ridge)
        keep = {k: base[k] for k in ("rule", "kernel", "bandwidth", "exponent", "normalize",
                                     "agop_power", "dtype", "device") if k in base}
        return dict(keep, n_iter=int(self.split_iters), ridge=ridge, iteration_selection="last",
                    preprocessing="none", solver="exact", refit=False,
                    random_state=rng.randint(2**31 - 1))

    def _build(self, Xs: np.ndarray, targets: np.ndarray, idx: np.ndarray, rng, leaves: list):
        node = SplitNode(size=len(idx))
        if len(idx) > self.max_leaf_size:
            take = idx if len(idx) <= self.split_sample else np.sort(
                rng.choice(idx, self.split_sample, replace=False))
            v = _leading_direction(RFMRegressor, self._split_params(rng), Xs[take], targets[take])
            proj = Xs[idx] @ v
            thr = float(np.median(proj))
            go_left = proj <= thr
            if 0 < go_left.sum() < len(idx):
                node.direction, node.threshold = v, thr
                node.left = self._build(Xs, targets, idx[go_left], rng, leaves)
                node.right = self._build(Xs, targets, idx[~go_left], rng, leaves)
                return node
            # all projections tie: this node cannot be split along v; it stays a leaf
        node.leaf = len(leaves)
        leaves.append(idx)
        return node

    def _route(self, Xs: np.ndarray) -> np.ndarray:
        out = np.empty(len(Xs), dtype=np.int64)
        stack = [(self.tree_, np.arange(len(Xs)))]
        while stack:
            node, idx = stack.pop()
            if node.leaf >= 0:
                out[idx] = node.leaf
                continue
            go_left = Xs[idx] @ node.direction <= node.threshold
            stack.append((node.left, idx[go_left]))
            stack.append((node.right, idx[~go_left]))
        return out

    def apply(self, X) -> np.ndarray:
        """Index of the leaf (into ``leaves_``) that each row of ``X`` is routed to."""
        check_is_fitted(self, "tree_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return self._route(self.scaler_.transform(X))

    # -- fitting --------------------------------------------------------------------------
    def _fit_leaves(self, X: np.ndarray, y: np.ndarray, leaf_rows: list, rng) -> list:
        cls = self._leaf_class
        params = [dict(self.leaf_params or {}, random_state=rng.randint(2**31 - 1))
                  for _ in leaf_rows]
        jobs = [(cls, p, X[rows], y[rows]) for p, rows in zip(params, leaf_rows, strict=True)]
        if self.client is not None:
            futures = [self.client.submit(_fit_leaf, *job, 1, pure=False) for job in jobs]
            return self.client.gather(futures)
        if self.n_jobs == 1 or len(jobs) == 1:
            return [_fit_leaf(*job, None) for job in jobs]
        from joblib import Parallel, delayed

        return Parallel(n_jobs=self.n_jobs, backend="loky")(
            delayed(_fit_leaf)(*job, 1) for job in jobs)

    def _fit_tree(self, X: np.ndarray, y: np.ndarray, targets: np.ndarray):
        self._check_params()
        rng = check_random_state(self.random_state)
        self.scaler_ = StandardScaler().fit(X)
        Xs = self.scaler_.transform(X)
        leaf_rows: list = []
        self.tree_ = self._build(Xs, targets, np.arange(len(X)), rng, leaf_rows)
        self.leaf_sizes_ = np.array([len(r) for r in leaf_rows])
        self.leaves_ = self._fit_leaves(X, y, leaf_rows, rng)
        return self

    def _leaf_outputs(self, X, method: str, width: int | None):
        X = validate_data(self, X, reset=False, dtype=np.float64)
        leaf = self._route(self.scaler_.transform(X))
        out = None
        for j in np.unique(leaf):
            rows = np.flatnonzero(leaf == j)
            pred = getattr(self.leaves_[j], method)(X[rows])
            if out is None:
                shape = (len(X),) + ((width,) if width else pred.shape[1:])
                out = np.zeros(shape, dtype=pred.dtype if width is None else np.float64)
            if width:
                cols = np.searchsorted(self.classes_, self.leaves_[j].classes_)
                out[np.ix_(rows, cols)] = pred
            else:
                out[rows] = pred
        return out


class PartitionedRFMClassifier(ClassifierMixin, _PartitionedBase):
    """FACT-RFM classifier on a recursive partition of the data (see the module docstring).

    Parameters
    ----------
    max_leaf_size : int, default=10000
        Nodes with more rows are split; leaves have at most this many rows (except when every
        projection ties).
    leaf_params : dict, optional
        Parameters of the :class:`~factrfm.estimators.RFMClassifier` of every leaf (its
        ``random_state`` is drawn from ``random_state``). Its rule, kernel, bandwidth and
        normalisation also serve the split models.
    split_sample : int, default=2000
        Rows (a seeded random sample of the node) on which each split direction is learned.
    split_iters : int, default=1
        Metric updates of the split models.
    n_jobs : int, default=1
        Local processes fitting leaves in parallel (``-1``: all cores).
    client : dask.distributed.Client, optional
        Fit the leaves on this Dask cluster instead.
    random_state : int, RandomState or None

    Attributes
    ----------
    classes_, tree_ (:class:`SplitNode`), leaves_ (fitted leaf models), leaf_sizes_, scaler_
    """

    _leaf_class = RFMClassifier

    def fit(self, X, y):
        """Build the partition and fit one FACT-RFM per leaf."""
        X, y = validate_data(self, X, y, dtype=np.float64, ensure_min_samples=2)
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise ValueError("PartitionedRFMClassifier needs at least 2 classes, got only "
                             f"{self.classes_[0]!r}")
        onehot = np.eye(len(self.classes_))[np.searchsorted(self.classes_, y)]
        return self._fit_tree(X, y, onehot)

    def predict(self, X):
        check_is_fitted(self, "tree_")
        return self._leaf_outputs(X, "predict", None)

    def predict_proba(self, X):
        """Each leaf's probabilities, with 0 for classes its rows did not contain."""
        check_is_fitted(self, "tree_")
        return self._leaf_outputs(X, "predict_proba", len(self.classes_))


class PartitionedRFMRegressor(RegressorMixin, _PartitionedBase):
    """FACT-RFM regressor on a recursive partition of the data; parameters and attributes as
    :class:`PartitionedRFMClassifier` (the leaves are :class:`~factrfm.estimators.RFMRegressor`).
    """

    _leaf_class = RFMRegressor

    def fit(self, X, y):
        """Build the partition and fit one FACT-RFM per leaf."""
        X, y = validate_data(self, X, y, dtype=np.float64, y_numeric=True, multi_output=True,
                             ensure_min_samples=2)
        return self._fit_tree(X, y, y.reshape(len(y), -1))

    def predict(self, X):
        check_is_fitted(self, "tree_")
        return self._leaf_outputs(X, "predict", None)
