"""Loaders of the shared UCI data: shapes and labels against index.csv, splits, data_dir lookup."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from factrfm.datasets import paths
from factrfm.datasets.uci import (
    list_uci121,
    list_uci_regression,
    load_uci121,
    load_uci_regression,
    uci121_index,
    validation_split,
)


def test_data_dir_env_var_wins(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.ENV_VAR, str(tmp_path))
    assert paths.data_dir() == tmp_path.resolve()


def test_data_dir_env_var_missing_folder_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.ENV_VAR, str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match=paths.ENV_VAR):
        paths.data_dir()


def test_data_dir_explicit_missing_folder_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        paths.data_dir(tmp_path / "absent")


def test_search_upward_finds_shared_data_next_to_repository(tmp_path):
    (tmp_path / "shared" / "data").mkdir(parents=True)
    deep = tmp_path / "repo" / "src" / "pkg"
    deep.mkdir(parents=True)
    assert paths._search_upward(deep) == (tmp_path / "shared" / "data").resolve()


@pytest.mark.parametrize("name", ["iris", "balloons", "abalone", "annealing", "statlog-heart"])
def test_uci121_shapes_and_labels_match_index(uci_root, name):
    root = uci_root
    row = uci121_index(root).set_index("name").loc[name]
    ds = load_uci121(name, root)
    assert ds.X.shape == (row["n_trainval"], row["n_features"])
    assert ds.X.dtype == np.float64 and np.isfinite(ds.X).all()
    assert ds.n_classes == row["n_classes"]
    assert ds.y.min() >= 0 and ds.y.max() < row["n_classes"]
    # the features are z-scored by the providers
    assert np.allclose(ds.X.mean(axis=0), 0, atol=1e-3)


def test_uci121_splits_are_consistent(uci_root):
    root = uci_root
    ds = load_uci121("iris", root)
    assert ds.train_idx.size == int(ds.meta["n_patrons_entrena"]) == 75
    assert ds.val_idx.size == int(ds.meta["n_patrons_valida"]) == 75
    assert np.intersect1d(ds.train_idx, ds.val_idx).size == 0
    assert np.union1d(ds.train_idx, ds.val_idx).size == ds.n
    assert len(ds.folds) == 4
    for tr, te in ds.folds:
        # each fold is a disjoint train/test cover of the rows (the 4 test parts may overlap)
        assert np.intersect1d(tr, te).size == 0
        assert np.union1d(tr, te).size == ds.n
        assert (tr.size, te.size) == (113, 37)


def test_uci121_separate_test_file_is_not_loaded(uci_root):
    root = uci_root
    idx = uci121_index(root)
    row = idx[idx["fich2"] != ""].sort_values("n_trainval").iloc[0]
    ds = load_uci121(row["name"], root)
    assert ds.n == row["n_trainval"]  # only fich1, the protocol's rows


def test_uci121_lists(uci_root):
    root = uci_root
    names = list_uci121(root)
    assert len(names) == 120 and "miniboone" not in names
    assert len(list_uci121(root, arora90=True)) == 90
    multi = list_uci121(root, min_classes=3)
    assert len(multi) == 67 and "iris" in multi and "adult" not in multi
    assert all(load_uci121(n, root).n_classes >= 3 for n in multi[:5])
    small = list_uci121(root, max_rows=100)
    idx = uci121_index(root).set_index("name")
    assert small and all(idx.loc[n, "n_trainval"] <= 100 for n in small)
    assert list(idx.loc[small, "n_trainval"]) == sorted(idx.loc[small, "n_trainval"])
    with pytest.raises(ValueError, match="max_rows"):
        list_uci121(root, max_rows=0)


def test_uci121_bad_names(uci_root):
    root = uci_root
    with pytest.raises(ValueError, match="unknown uci121 data set 'no-such-set'"):
        load_uci121("no-such-set", root)
    with pytest.raises(ValueError, match="not available"):
        load_uci121("miniboone", root)


def test_uci_regression_yacht_matches_index(uci_root):
    root = uci_root
    idx = pd.read_csv(root / "uci_regression" / "index.csv").set_index("name")
    ds = load_uci_regression("yacht", root)
    assert ds.X.shape == (idx.loc["yacht", "n_rows"], idx.loc["yacht", "n_features"])
    assert len(ds.splits) == idx.loc["yacht", "n_splits"] == 20
    for tr, te in ds.splits:
        assert (tr.size, te.size) == (idx.loc["yacht", "n_train"], idx.loc["yacht", "n_test"])
        assert np.intersect1d(tr, te).size == 0
    assert len(list_uci_regression(root)) == 9
    with pytest.raises(ValueError, match="unknown uci_regression data set"):
        load_uci_regression("boston", root)


def test_validation_split_is_seeded_disjoint_cover():
    idx = np.arange(100, 150)
    a_tr, a_val = validation_split(idx, 0.2, seed=3)
    b_tr, b_val = validation_split(idx, 0.2, seed=3)
    c_tr, c_val = validation_split(idx, 0.2, seed=4)
    assert a_val.size == 10 and a_tr.size == 40
    assert np.array_equal(a_val, b_val) and not np.array_equal(a_val, c_val)
    assert np.intersect1d(a_tr, a_val).size == 0
    assert np.array_equal(np.sort(np.concatenate([a_tr, a_val])), idx)
    with pytest.raises(ValueError, match="fraction"):
        validation_split(idx, 1.0)
    with pytest.raises(ValueError, match="indices"):
        validation_split(np.array([1]), 0.5)
