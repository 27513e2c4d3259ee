"""Partitioned FACT-RFM: routing, leaves, parallel fitting, accuracy."""

import numpy as np
import pytest

from factrfm.partition import PartitionedRFMClassifier, PartitionedRFMRegressor

LEAF = dict(n_iter=2, ridge=1e-3)


def _classes(n=1200, d=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = (X[:, 0] * X[:, 1] + 0.5 * X[:, 2] > 0).astype(int)
    return X, y


def test_routing_is_deterministic_and_covers_every_point():
    X, y = _classes()
    a = PartitionedRFMClassifier(max_leaf_size=300, leaf_params=LEAF, split_sample=200,
                                 random_state=0).fit(X, y)
    b = PartitionedRFMClassifier(max_leaf_size=300, leaf_params=LEAF, split_sample=200,
                                 random_state=0).fit(X, y)
    leaf = a.apply(X)
    # every training row goes back to the leaf it was fitted in: counts match the leaf sizes
    assert np.array_equal(np.bincount(leaf, minlength=len(a.leaves_)), a.leaf_sizes_)
    assert a.leaf_sizes_.sum() == len(X) and a.leaf_sizes_.max() <= 300
    assert len(a.leaves_) == 4  # 1200 -> 600 -> 300 (median splits)
    Xnew = np.random.default_rng(1).standard_normal((500, 5)) * 3
    new_leaf = a.apply(Xnew)
    assert new_leaf.min() >= 0 and new_leaf.max() < len(a.leaves_)
    assert np.array_equal(a.apply(Xnew), new_leaf)  # same answer twice
    assert np.array_equal(b.apply(Xnew), new_leaf)  # same seed, same tree
    assert np.array_equal(a.predict(Xnew), b.predict(Xnew))
    # a row's prediction does not depend on the batch it comes in
    assert np.array_equal(a.predict(Xnew[:7]), a.predict(Xnew)[:7])


def test_partitioned_classifier_is_accurate_and_its_probabilities_agree():
    X, y = _classes(n=1600)
    model = PartitionedRFMClassifier(max_leaf_size=400, leaf_params=LEAF, random_state=0)
    model.fit(X[:1200], y[:1200])
    assert model.score(X[1200:], y[1200:]) >= 0.85
    proba = model.predict_proba(X[1200:])
    np.testing.assert_allclose(proba.sum(1), 1.0)
    assert np.array_equal(model.classes_[proba.argmax(1)], model.predict(X[1200:]))


def test_a_leaf_with_one_class_predicts_it():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((800, 3))
    # the right half (x0 > 0) is all class 2; the left half has classes 0 and 1
    y = np.where(X[:, 0] > 0, 2, (X[:, 1] > 0).astype(int))
    model = PartitionedRFMClassifier(max_leaf_size=400, leaf_params=LEAF, random_state=0)
    model.fit(X, y)
    assert len(model.leaves_) == 2
    right = np.array([[3.0, 0.0, 0.0], [2.0, -1.0, 1.0]])
    assert list(model.predict(right)) == [2, 2]
    proba = model.predict_proba(right)
    assert proba.shape == (2, 3) and (proba[:, 2] > 0.9).all()
    assert model.score(X, y) >= 0.9


def test_partitioned_regressor_fits_a_smooth_target():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((1300, 4))
    Y = np.stack([np.sin(X[:, 0]) + X[:, 1], X[:, 2] ** 2], 1)
    model = PartitionedRFMRegressor(max_leaf_size=500, leaf_params=LEAF, random_state=0)
    model.fit(X[:1000], Y[:1000])
    assert model.predict(X[1000:]).shape == (300, 2)
    assert model.score(X[1000:], Y[1000:]) >= 0.8


@pytest.mark.slow
def test_leaves_fitted_in_local_processes_or_on_dask_equal_the_sequential_fit():
    distributed = pytest.importorskip("dask.distributed")
    X, y = _classes(n=800)
    # float64 leaves: float32 GEMMs round differently with 1 thread (workers) and 2 (here)
    kw = dict(max_leaf_size=400, leaf_params=dict(LEAF, dtype="float64"), random_state=0)
    seq = PartitionedRFMClassifier(**kw).fit(X, y).predict_proba(X)
    par = PartitionedRFMClassifier(n_jobs=2, **kw).fit(X, y).predict_proba(X)
    np.testing.assert_allclose(par, seq, rtol=1e-6, atol=1e-8)
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=1,
                            dashboard_address=None) as client:
        dask = PartitionedRFMClassifier(client=client, **kw).fit(X, y).predict_proba(X)
    np.testing.assert_allclose(dask, seq, rtol=1e-6, atol=1e-8)


def test_bad_parameters_are_named():
    X, y = _classes(n=50)
    with pytest.raises(ValueError, match="max_leaf_size must be an integer >= 10"):
        PartitionedRFMClassifier(max_leaf_size=3).fit(X, y)
    with pytest.raises(ValueError, match="n_jobs must be a non-zero integer"):
        PartitionedRFMClassifier(n_jobs=0).fit(X, y)
    with pytest.raises(TypeError, match="leaf_params must be a dict"):
        PartitionedRFMClassifier(leaf_params=[1]).fit(X, y)
    with pytest.raises(ValueError, match="at least 2 classes"):
        PartitionedRFMClassifier().fit(X, np.zeros(50))
