"""Loaders for the shared UCI benchmark data (``uci121`` and ``uci_regression``).

``uci121`` is the preprocessed Fernández-Delgado et al. (2014) collection with the standard
train/validation split (``conxuntos.dat``) and the four (train, test) folds
(``conxuntos_kfold.dat``); indices refer to rows of the first file (``fich1``) only.
``uci_regression`` holds the nine regression sets of Hernández-Lobato & Adams (2015) with their
fixed train/test splits.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from factrfm.datasets.paths import data_dir

__all__ = [
    "UCIClassificationSet",
    "UCIRegressionSet",
    "uci121_index",
    "list_uci121",
    "load_uci121",
    "uci_regression_index",
    "list_uci_regression",
    "load_uci_regression",
    "validation_split",
]


@dataclass
class UCIClassificationSet:
    """One ``uci121`` data set with its standard splits.

    Attributes
    ----------
    name : str
    X : ndarray of shape (n, d), float64 (already z-scored by the providers)
    y : ndarray of shape (n,), int64 labels in ``0 .. n_classes - 1``
    n_classes : int
        The class count stated in the metadata (some classes may have no rows).
    train_idx, val_idx : ndarray of int
        The ``conxuntos`` split used for hyper-parameter selection.
    folds : list of (train, test) index arrays
        The four ``conxuntos_kfold`` folds used for the reported accuracy.
    meta : dict
        The key/value pairs of ``<name>.txt``.
    """

    name: str
    X: np.ndarray
    y: np.ndarray
    n_classes: int
    train_idx: np.ndarray
    val_idx: np.ndarray
    folds: list[tuple[np.ndarray, np.ndarray]]
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def n(self) -> int:
        """Number of rows of ``fich1``."""
        return int(self.X.shape[0])

    @property
    def d(self) -> int:
        """Number of features."""
        return int(self.X.shape[1])


@dataclass
class UCIRegressionSet:
    """One ``uci_regression`` data set with its fixed train/test splits.

    Attributes
    ----------
    name : str
    X : ndarray of shape (n, d), float64, raw (unscaled)
    y : ndarray of shape (n,), float64
    splits : list of (train, test) index arrays
    """

    name: str
    X: np.ndarray
    y: np.ndarray
    splits: list[tuple[np.ndarray, np.ndarray]]

    @property
    def n(self) -> int:
        """Number of rows."""
        return int(self.X.shape[0])

    @property
    def d(self) -> int:
        """Number of features."""
        return int(self.X.shape[1])


def _root(folder: str, root: str | os.PathLike[str] | None) -> Path:
    path = data_dir(root) / folder
    if not path.is_dir():
        raise FileNotFoundError(f"the data folder {str(path)!r} does not exist")
    return path


def _read_index_lines(path: Path) -> list[np.ndarray]:
    with gzip.open(path, "rt") as fh:
        return [np.array(line.split(), dtype=np.int64) for line in fh if line.strip()]


def _read_meta(path: Path) -> dict[str, str]:
    meta: dict[str, str] = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2:
            meta[parts[0].rstrip("=")] = parts[1]
    return meta


def uci121_index(root: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Read ``uci121/index.csv`` (one row per data set, including the missing ``miniboone``).

    Parameters
    ----------
    root : path-like, optional
        The shared data folder; default :func:`factrfm.datasets.paths.data_dir`.

    Returns
    -------
    pandas.DataFrame
        Columns ``name, n_features, n_classes, n_trainval, n_test, fich1, fich2, status, note``.
    """
    return pd.read_csv(_root("uci121", root) / "index.csv", keep_default_na=False)


def list_uci121(
    root: str | os.PathLike[str] | None = None,
    *,
    max_rows: int | None = None,
    arora90: bool = False,
    min_classes: int | None = None,
) -> list[str]:
    """Names of the available ``uci121`` data sets, smallest first (by rows, then name).

    Parameters
    ----------
    root : path-like, optional
        The shared data folder.
    max_rows : int, optional
        Keep only sets whose ``fich1`` has at most this many rows.
    arora90 : bool, default False
        Keep only the 90 sets of the Arora et al. protocol (``n_trainval + n_test <= 5000`` and
        no separate test file).
    min_classes : int, optional
        Keep only sets with at least this many classes (3: the multi-class sets).

    Returns
    -------
    list of str
    """
    if max_rows is not None and (not isinstance(max_rows, (int, np.integer)) or max_rows < 1):
        raise ValueError(f"max_rows must be a positive integer, got {max_rows!r}")
    idx = uci121_index(root)
    idx = idx[idx["status"] == "ok"]
    if max_rows is not None:
        idx = idx[idx["n_trainval"] <= max_rows]
    if arora90:
        idx = idx[(idx["n_trainval"] + idx["n_test"] <= 5000) & (idx["n_test"] == 0)]
    if min_classes is not None:
        idx = idx[idx["n_classes"] >= min_classes]
    idx = idx.sort_values(["n_trainval", "name"], kind="stable")
    return [str(x) for x in idx["name"]]


def load_uci121(name: str, root: str | os.PathLike[str] | None = None) -> UCIClassificationSet:
    """Load one ``uci121`` data set with its ``conxuntos`` split and its four folds.

    Parameters
    ----------
    name : str
        A name from ``uci121/index.csv`` (e.g. ``"iris"``).
    root : path-like, optional
        The shared data folder.

    Returns
    -------
    UCIClassificationSet

    Raises
    ------
    ValueError
        If ``name`` is unknown or marked missing, or if the files disagree with the metadata
        (row count, labels out of range, indices out of range).
    """
    base = _root("uci121", root)
    index = uci121_index(root)
    rows = index[index["name"] == name]
    if rows.empty:
        raise ValueError(f"name: unknown uci121 data set {name!r}")
    if rows.iloc[0]["status"] != "ok":
        raise ValueError(
            f"name: the uci121 data set {name!r} is not available ({rows.iloc[0]['note']})"
        )
    folder = base / name
    meta = _read_meta(folder / f"{name}.txt")
    df = pd.read_csv(folder / f"{meta['fich1']}.gz", sep="\t", index_col=0)
    X = df.iloc[:, :-1].to_numpy(dtype=np.float64)
    y = df.iloc[:, -1].to_numpy(dtype=np.int64)
    n_classes = int(meta["n_clases"])
    d = int(meta["n_entradas"])
    if X.shape != (int(meta["n_patrons1"]), d):
        raise ValueError(
            f"{name}: data shape {X.shape} disagrees with metadata "
            f"({meta['n_patrons1']} rows, {d} features)"
        )
    if y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"{name}: labels outside 0..{n_classes - 1}")
    train_val = _read_index_lines(folder / "conxuntos.dat.gz")
    kfold = _read_index_lines(folder / "conxuntos_kfold.dat.gz")
    if len(train_val) != 2 or len(kfold) != 8:
        raise ValueError(
            f"{name}: expected 2 conxuntos lines and 8 kfold lines, "
            f"got {len(train_val)} and {len(kfold)}"
        )
    for arr in (*train_val, *kfold):
        if arr.size and (arr.min() < 0 or arr.max() >= X.shape[0]):
            raise ValueError(f"{name}: split indices outside 0..{X.shape[0] - 1}")
    folds = [(kfold[2 * i], kfold[2 * i + 1]) for i in range(4)]
    return UCIClassificationSet(
        name=name,
        X=X,
        y=y,
        n_classes=n_classes,
        train_idx=train_val[0],
        val_idx=train_val[1],
        folds=folds,
        meta=meta,
    )


def uci_regression_index(root: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Read ``uci_regression/index.csv``.

    Parameters
    ----------
    root : path-like, optional
        The shared data folder.

    Returns
    -------
    pandas.DataFrame
        Columns ``name, n_rows, n_cols, n_features, target_col, n_splits, n_train, n_test``.
    """
    return pd.read_csv(_root("uci_regression", root) / "index.csv")


def list_uci_regression(
    root: str | os.PathLike[str] | None = None, *, max_rows: int | None = None
) -> list[str]:
    """Names of the ``uci_regression`` sets, smallest first.

    Parameters
    ----------
    root : path-like, optional
        The shared data folder.
    max_rows : int, optional
        Keep only sets with at most this many rows.

    Returns
    -------
    list of str
    """
    if max_rows is not None and (not isinstance(max_rows, (int, np.integer)) or max_rows < 1):
        raise ValueError(f"max_rows must be a positive integer, got {max_rows!r}")
    idx = uci_regression_index(root)
    if max_rows is not None:
        idx = idx[idx["n_rows"] <= max_rows]
    idx = idx.sort_values(["n_rows", "name"], kind="stable")
    return [str(x) for x in idx["name"]]


def load_uci_regression(name: str, root: str | os.PathLike[str] | None = None) -> UCIRegressionSet:
    """Load one ``uci_regression`` data set with its fixed train/test splits.

    Parameters
    ----------
    name : str
        A name from ``uci_regression/index.csv`` (e.g. ``"yacht"``).
    root : path-like, optional
        The shared data folder.

    Returns
    -------
    UCIRegressionSet

    Raises
    ------
    ValueError
        If ``name`` is unknown or a split index is out of range.
    """
    base = _root("uci_regression", root)
    index = uci_regression_index(root)
    if name not in set(index["name"]):
        raise ValueError(f"name: unknown uci_regression data set {name!r}")
    folder = base / name
    data = np.loadtxt(folder / "data.txt.gz", dtype=np.float64)
    features = np.atleast_1d(np.loadtxt(folder / "index_features.txt", dtype=np.int64))
    target = int(np.loadtxt(folder / "index_target.txt", dtype=np.int64))
    n_splits = int(np.loadtxt(folder / "n_splits.txt", dtype=np.int64))
    splits = []
    for i in range(n_splits):
        tr = np.atleast_1d(np.loadtxt(folder / f"index_train_{i}.txt.gz", dtype=np.int64))
        te = np.atleast_1d(np.loadtxt(folder / f"index_test_{i}.txt.gz", dtype=np.int64))
        for arr in (tr, te):
            if arr.min() < 0 or arr.max() >= data.shape[0]:
                raise ValueError(f"{name}: split {i} has indices outside 0..{data.shape[0] - 1}")
        splits.append((tr, te))
    return UCIRegressionSet(name=name, X=data[:, features], y=data[:, target], splits=splits)


def validation_split(
    indices: np.ndarray, fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Carve a seeded random validation part out of a set of training indices.

    Parameters
    ----------
    indices : ndarray of int
        The training indices to split.
    fraction : float, default 0.2
        Share of ``indices`` that goes to validation, in (0, 1).
    seed : int, default 0
        Seed of the permutation.

    Returns
    -------
    (train, val) : tuple of ndarray
        Disjoint, together equal to ``indices``; ``val`` has ``max(1, round(fraction * n))`` rows.
    """
    indices = np.asarray(indices)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must lie in (0, 1), got {fraction!r}")
    if indices.size < 2:
        raise ValueError(f"indices: need at least 2 indices to split, got {indices.size}")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(indices.size)
    n_val = min(indices.size - 1, max(1, int(round(fraction * indices.size))))
    return indices[perm[n_val:]], indices[perm[:n_val]]
