"""scikit-learn contract, documented handling of bad input, and accuracy floors on real data."""

import io
import pickle
import warnings

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_wine
from sklearn.model_selection import train_test_split
from sklearn.utils.estimator_checks import parametrize_with_checks

from factrfm import RFMClassifier, RFMRegressor

# Every scikit-learn check runs; none is skipped (the array-API check skips itself unless
# SCIPY_ARRAY_API is set, which is scikit-learn's own condition).


@parametrize_with_checks([RFMClassifier(n_iter=2), RFMRegressor(n_iter=2)])
def test_sklearn_compatible(estimator, check):
    check(estimator)


def _split(loader, **kw):
    X, y = loader(return_X_y=True, **kw)
    return train_test_split(X, y, random_state=0)


@pytest.mark.parametrize(
    "loader, floor",
    [(load_breast_cancer, 0.95), (load_wine, 0.95), (load_digits, 0.97)],
)
@pytest.mark.parametrize("rule", ["fact", "fact-geomean", "fact-per-output", "agop"])
def test_default_accuracy_on_raw_bundled_data(loader, floor, rule):
    Xtr, Xte, ytr, yte = _split(loader)
    clf = RFMClassifier(rule=rule, random_state=0).fit(Xtr, ytr)
    assert clf.score(Xte, yte) >= floor


def test_regressor_beats_the_mean_on_diabetes():
    Xtr, Xte, ytr, yte = _split(load_diabetes)
    reg = RFMRegressor(random_state=0).fit(Xtr, ytr)
    assert reg.score(Xte, yte) >= 0.3


def test_predict_proba_sums_to_one_and_agrees_with_predict():
    Xtr, Xte, ytr, yte = _split(load_wine)
    clf = RFMClassifier(random_state=0).fit(Xtr, ytr)
    P = clf.predict_proba(Xte)
    assert P.shape == (len(Xte), 3)
    np.testing.assert_allclose(P.sum(1), 1.0)
    np.testing.assert_array_equal(clf.classes_[P.argmax(1)], clf.predict(Xte))
    assert clf.temperature_ > 0


def test_binary_decision_function_sign_gives_the_class():
    Xtr, Xte, ytr, _ = _split(load_breast_cancer)
    clf = RFMClassifier(random_state=0).fit(Xtr, ytr)
    dec = clf.decision_function(Xte)
    assert dec.shape == (len(Xte),)
    np.testing.assert_array_equal(clf.classes_[(dec > 0).astype(int)], clf.predict(Xte))


def test_string_labels_round_trip():
    X, y = load_wine(return_X_y=True)
    names = np.array(["barolo", "grignolino", "barbera"])[y]
    clf = RFMClassifier(n_iter=1, random_state=0).fit(X, names)
    assert set(clf.predict(X)) <= set(names)
    assert clf.score(X, names) > 0.9


def test_multi_output_regression_matches_separate_targets_shape():
    rng = np.random.RandomState(0)
    X = rng.randn(200, 6)
    Y = np.c_[X[:, 0] ** 2, np.sin(X[:, 1]), X[:, 2] * X[:, 3]]
    reg = RFMRegressor(random_state=0).fit(X, Y)
    assert reg.predict(X).shape == (200, 3)
    assert reg.score(X, Y) > 0.5


def test_pandas_input_equals_numpy_input():
    data = load_wine(as_frame=True)
    X, y = data.data, data.target
    a = RFMClassifier(n_iter=2, random_state=0).fit(X, y)
    b = RFMClassifier(n_iter=2, random_state=0).fit(X.to_numpy(), y.to_numpy())
    np.testing.assert_allclose(a.predict_proba(X), b.predict_proba(X.to_numpy()))
    assert list(a.feature_names_in_) == list(X.columns)


@pytest.mark.parametrize("dump", ["pickle", "joblib"])
def test_pickle_round_trip_gives_identical_predictions(dump):
    Xtr, Xte, ytr, _ = _split(load_wine)
    clf = RFMClassifier(random_state=0).fit(Xtr, ytr)
    if dump == "pickle":
        clone = pickle.loads(pickle.dumps(clf))
    else:
        buf = io.BytesIO()
        joblib.dump(clf, buf)
        buf.seek(0)
        clone = joblib.load(buf)
    np.testing.assert_array_equal(clone.predict_proba(Xte), clf.predict_proba(Xte))


def test_random_state_fixes_the_validation_split():
    Xtr, Xte, ytr, _ = _split(load_breast_cancer)
    a = RFMClassifier(random_state=1).fit(Xtr, ytr)
    b = RFMClassifier(random_state=1).fit(Xtr, ytr)
    c = RFMClassifier(random_state=2).fit(Xtr, ytr)
    np.testing.assert_array_equal(a.decision_function(Xte), b.decision_function(Xte))
    assert a.history_ == b.history_
    assert a.history_ != c.history_


def test_feature_importances_find_the_relevant_features():
    rng = np.random.RandomState(0)
    X = rng.randn(600, 10) * rng.uniform(0.1, 100, size=10)  # wildly different scales
    y = (X[:, 3] / X[:, 3].std() + X[:, 7] / X[:, 7].std() > 0).astype(int)
    clf = RFMClassifier(random_state=0).fit(X, y)
    assert clf.best_iter_ > 0
    assert set(np.argsort(clf.feature_importances_)[-2:]) == {3, 7}
    np.testing.assert_allclose(clf.feature_importances_.sum(), 1.0)


def test_history_and_fitted_attributes():
    Xtr, _, ytr, _ = _split(load_wine)
    clf = RFMClassifier(n_iter=3, random_state=0).fit(Xtr, ytr)
    assert [h["iteration"] for h in clf.history_] == [0, 1, 2, 3]
    assert {"ridge", "train_mse", "val_mse", "train_accuracy", "val_accuracy"} <= set(
        clf.history_[0]
    )
    assert clf.M_.shape == (13, 13) and clf.M_.dtype == torch.float64
    assert clf.ridge_ in (10.0, 1.0, 0.1, 0.01, 0.001)


def test_eval_set_replaces_the_internal_split_and_no_refit():
    X, y = load_wine(return_X_y=True)
    Xtr, Xval, ytr, yval = train_test_split(X, y, random_state=0)
    clf = RFMClassifier(n_iter=2, random_state=0).fit(Xtr, ytr, eval_set=(Xval, yval))
    assert clf.centres_.shape[0] == len(Xtr)
    assert clf.history_[clf.best_iter_]["val_accuracy"] == max(
        h["val_accuracy"] for h in clf.history_
    )


def test_no_selection_uses_every_row_for_training():
    X, y = load_wine(return_X_y=True)
    clf = RFMClassifier(n_iter=2, ridge=0.1, iteration_selection="last").fit(X, y)
    assert clf.centres_.shape[0] == len(X)
    assert clf.best_iter_ == 2


def test_n_iter_zero_is_plain_kernel_ridge():
    from factrfm.kernels import LaplaceKernel

    X, y = load_diabetes(return_X_y=True)
    reg = RFMRegressor(n_iter=0, ridge=1.0, preprocessing="none", dtype="float64").fit(X, y)
    K = LaplaceKernel(10.0).matrix(*(torch.as_tensor(X),) * 2, torch.eye(X.shape[1]).double())
    t = (y - y.mean()) / y.std()
    alpha = torch.linalg.solve(K + torch.eye(len(X)).double(), torch.as_tensor(t))
    np.testing.assert_allclose(reg.predict(X), (K @ alpha).numpy() * y.std() + y.mean(), rtol=1e-8)
    assert torch.equal(reg.M_, torch.eye(X.shape[1]).double())


# -- bad input, one by one ------------------------------------------------------------------

def _xy(n=40, d=4, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.randn(n, d)
    return X, (X[:, 0] > 0).astype(int)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_X_is_rejected(bad):
    X, y = _xy()
    X[3, 1] = bad
    with pytest.raises(ValueError, match="NaN|infinity"):
        RFMClassifier().fit(X, y)


def test_nan_in_y_is_rejected():
    X, _ = _xy()
    y = np.ones(len(X))
    y[0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        RFMRegressor().fit(X, y)


def test_string_columns_are_rejected():
    X = pd.DataFrame({"a": np.arange(10.0), "b": list("abcdefghij")})
    with pytest.raises(ValueError, match="could not convert|string"):
        RFMClassifier().fit(X, np.arange(10) % 2)


def test_wrong_shapes_are_rejected():
    X, y = _xy()
    with pytest.raises(ValueError, match="2D array"):
        RFMClassifier().fit(X[:, 0], y)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        RFMClassifier().fit(X, y[:-1])
    clf = RFMClassifier(n_iter=1).fit(X, y)
    with pytest.raises(ValueError, match="4 features"):
        clf.predict(X[:, :3])


def test_single_class_is_rejected():
    X, _ = _xy()
    with pytest.raises(ValueError, match="only one class"):
        RFMClassifier().fit(X, np.zeros(len(X)))


def test_one_row_is_rejected():
    X, y = _xy()
    with pytest.raises(ValueError, match="1 sample"):
        RFMRegressor().fit(X[:1], y[:1])


def test_constant_columns_get_no_importance():
    X, y = _xy(n=120, d=5)
    X[:, 2] = 7.0
    clf = RFMClassifier(random_state=0).fit(X, y)
    assert clf.feature_importances_[2] == pytest.approx(0.0, abs=1e-12)
    assert np.isfinite(clf.predict_proba(X)).all()


@pytest.mark.parametrize("rule", ["fact", "fact-geomean", "agop"])
def test_duplicated_rows_give_finite_predictions(rule):
    X, y = _xy(n=60)
    X, y = np.r_[X, X, X[:10]], np.r_[y, y, y[:10]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        clf = RFMClassifier(rule=rule, ridge=0.0, random_state=0).fit(X, y)
    assert np.isfinite(clf.decision_function(X)).all()
    assert torch.isfinite(clf.M_).all()
    assert clf.score(X, y) > 0.9


def test_unseen_labels_at_score_time_count_as_errors():
    X, y = _xy()
    clf = RFMClassifier(n_iter=1, random_state=0).fit(X, y)
    y_new = y.copy()
    y_new[:5] = 7
    expected = np.mean(clf.predict(X) == y_new)
    assert clf.score(X, y_new) == pytest.approx(expected)
    with pytest.raises(ValueError, match="not present in y"):
        clf.fit(X, y, eval_set=(X, y_new))


@pytest.mark.parametrize(
    "param, value, match",
    [
        ("rule", "nfa", "rule must be one of"),
        ("normalize", "mean", "normalize must be one of"),
        ("preprocessing", "minmax", "preprocessing must be one of"),
        ("n_iter", -1, "n_iter must be"),
        ("validation_fraction", 1.5, "validation_fraction"),
        ("bandwidth", 0.0, "bandwidth must be"),
        ("exponent", 3.0, "exponent must lie"),
        ("kernel", "rbf", "unknown kernel"),
        ("dtype", "float16", "dtype must be"),
        ("ridge", -1.0, "ridge must be"),
    ],
)
def test_bad_parameters_name_the_problem(param, value, match):
    X, y = _xy()
    kw = {param: value}
    if param == "exponent":
        kw["kernel"] = "exponential"
    with pytest.raises(ValueError, match=match):
        RFMClassifier(**kw).fit(X, y)


def test_median_normalization_learns_the_relevant_coordinates():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((500, 6))
    y = (X[:, 0] * X[:, 3] > 0).astype(int)
    clf = RFMClassifier(normalize="median", n_iter=4, random_state=0).fit(X[:400], y[:400])
    assert clf.score(X[400:], y[400:]) > 0.85
    assert set(np.argsort(np.diag(clf.M_))[-2:]) == {0, 3}
