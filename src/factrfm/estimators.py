"""scikit-learn estimators: :class:`RFMClassifier` and :class:`RFMRegressor`.

They validate and encode the input, standardise it, split a seeded validation set when one is
needed, call :func:`factrfm.rfm.fit_rfm` on tensors, and refit the kept model on every row.

Documented handling of awkward input
------------------------------------
* NaN, inf, strings, complex numbers, wrong shapes, fewer than 2 rows, a single class, and a
  different number of features at predict time raise ``ValueError`` (from scikit-learn's
  validation, whose messages name the problem).
* Columns constant in the training rows carry no information: they are set to 0 after
  preprocessing (at predict time too), so they add nothing to any distance and get zero
  feature importance.
* Duplicated rows give zero distances. The kernels define the gradient there as 0 (the symmetric
  sub-gradient of the Laplace kernel), and a singular kernel matrix is factored with a small
  jitter (a ``RuntimeWarning`` says how much).
* Labels at ``score`` time that were not seen in ``fit`` count as errors.
* If a feature update fails (a flat fitted function, a non-finite metric), the iterations stop
  with a ``RuntimeWarning`` and the best iteration so far is kept.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import QuantileTransformer, StandardScaler
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from factrfm.features import NORMALIZATIONS, RULES
from factrfm.iterative import IterativeOptions, resolve_solver, solve_nystrom
from factrfm.kernels import Kernel, make_kernel
from factrfm.rfm import fit_rfm, predict_kernel
from factrfm.solvers import solve_cholesky

__all__ = ["RFMClassifier", "RFMRegressor"]

PREPROCESSING = ("standard", "quantile", "none")
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _resolve_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype) and dtype in (torch.float32, torch.float64):
        return dtype
    if dtype in _DTYPES:
        return _DTYPES[dtype]
    raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")


class _RFMBase(BaseEstimator):
    """Shared fitting logic; subclasses define the target encoding and the task."""

    _task = "regression"

    def __init__(
        self,
        rule: str = "fact",
        kernel: str | Kernel = "laplace",
        bandwidth: float = 10.0,
        exponent: float = 1.0,
        n_iter: int = 5,
        ridge: float | Sequence[float] = (10.0, 1.0, 0.1, 0.01, 0.001),
        agop_power: float = 0.5,
        normalize: str = "max",
        diag: bool = False,
        centering: bool = False,
        iteration_selection: str = "validation",
        validation_fraction: float = 0.2,
        preprocessing: str = "standard",
        refit: bool = True,
        block_size: int | None = None,
        solver: str = "auto",
        n_centres: int = 4000,
        feature_sample: int | None = None,
        device: str | torch.device = "cpu",
        dtype: str = "float32",
        random_state=None,
        verbose: bool = False,
    ):
        self.rule = rule
        self.kernel = kernel
        self.bandwidth = bandwidth
        self.exponent = exponent
        self.n_iter = n_iter
        self.ridge = ridge
        self.agop_power = agop_power
        self.normalize = normalize
        self.diag = diag
        self.centering = centering
        self.iteration_selection = iteration_selection
        self.validation_fraction = validation_fraction
        self.preprocessing = preprocessing
        self.refit = refit
        self.block_size = block_size
        self.solver = solver
        self.n_centres = n_centres
        self.feature_sample = feature_sample
        self.device = device
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose

    # -- parameter checks ---------------------------------------------------------------
    def _check_params(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {self.rule!r}")
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {self.normalize!r}")
        if self.preprocessing not in PREPROCESSING:
            raise ValueError(
                f"preprocessing must be one of {PREPROCESSING}, got {self.preprocessing!r}"
            )
        if self.iteration_selection not in ("validation", "last"):
            raise ValueError(
                "iteration_selection must be 'validation' or 'last', "
                f"got {self.iteration_selection!r}"
            )
        if not isinstance(self.n_iter, numbers.Integral) or self.n_iter < 0:
            raise ValueError(f"n_iter must be a non-negative integer, got {self.n_iter!r}")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(
                f"validation_fraction must lie in (0, 1), got {self.validation_fraction!r}"
            )

    def _ridges(self) -> list[float]:
        if isinstance(self.ridge, numbers.Real):
            return [float(self.ridge)]
        return [float(r) for r in self.ridge]

    def _needs_validation(self) -> bool:
        selects_iteration = self.iteration_selection == "validation" and self.n_iter > 0
        return selects_iteration or len(self._ridges()) > 1

    # -- data plumbing ------------------------------------------------------------------
    def _make_preprocessor(self, n_rows: int, rng: np.random.RandomState):
        if self.preprocessing == "standard":
            return StandardScaler()
        if self.preprocessing == "quantile":
            return QuantileTransformer(
                output_distribution="normal",
                n_quantiles=max(2, min(1000, n_rows)),
                random_state=rng.randint(2**31 - 1),
            )
        return None

    def _to_tensor(self, A: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(A), dtype=self._torch_dtype, device=self.device)

    def _preprocess(self, X: np.ndarray) -> np.ndarray:
        """Fitted preprocessing; columns constant in the training rows become exactly 0."""
        if self.preprocessor_ is not None:
            X = self.preprocessor_.transform(X)
        if self.constant_features_.any():
            X = np.array(X, dtype=np.float64, copy=True)
            X[:, self.constant_features_] = 0.0
        return X

    def _transform(self, X: np.ndarray) -> torch.Tensor:
        return self._to_tensor(self._preprocess(X))

    def _split(self, X, Y, y_strat, rng):
        """Seeded train/validation split, stratified for classes when every class allows it."""
        n_val = max(1, int(round(self.validation_fraction * len(X))))
        stratify = None
        if y_strat is not None:
            _, counts = np.unique(y_strat, return_counts=True)
            if counts.min() >= 2 and n_val >= len(counts) and len(X) - n_val >= len(counts):
                stratify = y_strat
        return train_test_split(
            X, Y, test_size=n_val, stratify=stratify, random_state=rng.randint(2**31 - 1)
        )

    def _fit(self, X: np.ndarray, Y: np.ndarray, eval_set, y_strat=None):
        self._check_params()
        self._torch_dtype = _resolve_dtype(self.dtype)
        rng = check_random_state(self.random_state)
        self.kernel_ = make_kernel(self.kernel, self.bandwidth, self.exponent)
        ridges = self._ridges()

        internal_split = eval_set is None and self._needs_validation()
        if eval_set is not None:
            X_val, Y_val = eval_set
            X_tr, Y_tr = X, Y
        elif internal_split:
            X_tr, X_val, Y_tr, Y_val = self._split(X, Y, y_strat, rng)
        else:
            X_tr, Y_tr, X_val, Y_val = X, Y, None, None

        self.constant_features_ = np.ptp(X_tr, axis=0) == 0
        self.preprocessor_ = self._make_preprocessor(len(X_tr), rng)
        if self.preprocessor_ is not None:
            self.preprocessor_.fit(X_tr)
        Xt, Yt = self._transform(X_tr), self._to_tensor(Y_tr)
        Xv = self._transform(X_val) if X_val is not None else None
        Yv = self._to_tensor(Y_val) if Y_val is not None else None
        n_all = len(Xt) + (len(Xv) if internal_split and self.refit else 0)
        self.solver_ = resolve_solver(self.solver, n_all)
        iterative = IterativeOptions(n_centres=self.n_centres, seed=rng.randint(2**31 - 1),
                                     block_entries=self.block_size)

        callback = None
        if self.verbose:

            def callback(rec):
                print(f"[{type(self).__name__}] iteration {rec.iteration}: ridge={rec.ridge:g} "
                      + " ".join(f"{k}={v:.4g}" for k, v in rec.metrics.items()))

        result = fit_rfm(
            Xt, Yt, Xv, Yv,
            kernel=self.kernel_,
            rule=self.rule,
            n_iter=int(self.n_iter),
            ridge=ridges,
            agop_power=self.agop_power,
            normalize=self.normalize,
            diag=self.diag,
            centering=self.centering,
            task=self._task,
            select=self.iteration_selection,
            block_size=self.block_size,
            callback=callback,
            solver=self.solver_,
            iterative=iterative,
            feature_sample=self.feature_sample,
        )
        self.M_ = result.M
        self.ridge_ = float(result.ridge)
        self.best_iter_ = int(result.iteration)
        self.history_ = [
            {"iteration": r.iteration, "ridge": r.ridge, **r.metrics} for r in result.history
        ]
        val_outputs = result.predict(Xv, self.block_size) if Xv is not None else None
        if self.refit and internal_split:
            # Same metric, ridge and preprocessing; the coefficients now use every row.
            Xall = torch.cat([Xt, Xv])
            if self.solver_ == "iterative":
                sol = solve_nystrom(self.kernel_, Xall, torch.cat([Yt, Yv]),
                                    self.M_.to(Xall.dtype), self.ridge_, iterative)
                self.centres_, self.alpha_ = sol.centres, sol.coef
            else:
                K = self.kernel_.matrix(Xall, Xall, self.M_.to(Xall.dtype))
                alpha = solve_cholesky(K, torch.cat([Yt, Yv]), self.ridge_, overwrite=True).alpha
                self.centres_, self.alpha_ = Xall, alpha
        else:
            self.centres_, self.alpha_ = result.centres, result.alpha
        diag_m = torch.diagonal(self.M_).clamp(min=0).cpu().numpy()
        self.feature_importances_ = diag_m / diag_m.sum()
        return val_outputs, Yv

    def _outputs(self, X) -> np.ndarray:
        # Predictions are computed in float64 whatever the training dtype: they cost one
        # kernel row per point, and this makes every row's output independent of the batch
        # it comes in (float32 GEMMs round differently for different batch sizes).
        check_is_fitted(self, "alpha_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        X = torch.as_tensor(self._preprocess(X), dtype=torch.float64, device=self.centres_.device)
        out = predict_kernel(
            self.kernel_, X, self.centres_.double(), self.alpha_.double(), self.M_,
            self.block_size,
        )
        return out.cpu().numpy()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags


class RFMRegressor(RegressorMixin, _RFMBase):
    """Recursive Feature Machine regressor: kernel ridge regression with a learned metric ``M``.

    ``rule="fact"`` (FACT-RFM) updates ``M`` by the FACT matrix of the fitted kernel machine;
    ``"fact-geomean"``, ``"fact-inner"`` and ``"fact-per-output"`` (``M <- (sum_k F_k F_k^T)^{1/2}``
    over the outputs' FACT matrices, for several outputs or classes) are its variants and
    ``"agop"`` is NFA-RFM
    (``M <- AGOP^agop_power``). ``n_iter=0`` is plain kernel ridge.

    Parameters
    ----------
    rule : {"fact", "fact-geomean", "fact-inner", "fact-per-output", "agop"}, default="fact"
    kernel : {"laplace", "gaussian", "exponential", "quadratic"} or Kernel, default="laplace"
    bandwidth : float, default=10.0
        Kernel bandwidth ``L`` for radial kernels, in units of standardised features.
    exponent : float, default=1.0
        ``q`` of the ``"exponential"`` kernel ``exp(-(r / L)^q)``.
    n_iter : int, default=5
        Number of metric updates.
    ridge : float or sequence of float, default=(10, 1, 0.1, 0.01, 0.001)
        A sequence is searched on validation data at every iteration.
    agop_power : float, default=0.5
    normalize : {"max", "trace", "median", "none"}, default="max"
        How ``M`` is rescaled after each update (with a fixed bandwidth its scale acts as one):
        largest entry 1, trace ``d``, or the median pairwise distance of the training rows kept
        at its value for ``M = I`` (:func:`factrfm.features.normalize_metric`).
    diag : bool, default=False
        Learn a diagonal metric only.
    centering : bool, default=False
        Centre the gradients before forming the AGOP.
    iteration_selection : {"validation", "last"}, default="validation"
        Keep the iteration best on validation data, or the last one.
    validation_fraction : float, default=0.2
        Share of the rows held out (seeded by ``random_state``) when something is selected
        on validation data and no ``eval_set`` is given.
    preprocessing : {"standard", "quantile", "none"}, default="standard"
        Applied to ``X`` inside the estimator, fitted on the training rows.
    refit : bool, default=True
        After selection, recompute the coefficients on all rows (training and the internal
        validation split) with the kept metric and ridge. Not done with an ``eval_set``.
    block_size : int, optional
        Kernel entries held at once by the block-wise feature and prediction loops.
    solver : {"auto", "exact", "iterative"}, default="auto"
        ``"exact"``: Cholesky of the ``n x n`` kernel matrix. ``"iterative"``: Nyström kernel
        ridge on ``n_centres`` seeded centres by preconditioned CG with block-wise products
        (memory ``O(n_centres^2)`` plus one block; every ridge must be > 0). ``"auto"``: exact
        up to 20,000 rows (the rows of the final fit), iterative above.
    n_centres : int, default=4000
        Nyström centres of the iterative solver.
    feature_sample : int, optional
        Compute the feature matrices at a seeded random sample of this many training rows.
    device : str or torch.device, default="cpu"
    dtype : {"float32", "float64"}, default="float32"
    random_state : int, RandomState or None
    verbose : bool, default=False

    Targets are standardised per column inside the estimator.

    Attributes
    ----------
    M_ : torch.Tensor of shape (n_features, n_features), float64
        The learned metric (in the space of the preprocessed features).
    alpha_, centres_ : torch.Tensor
        Kernel coefficients and the centres they belong to.
    ridge_ : float
    best_iter_ : int
        The kept iteration (0 = no feature learning).
    history_ : list of dict
        Per iteration: ``iteration``, ``ridge``, ``train_mse``, ``val_mse``.
    feature_importances_ : ndarray of shape (n_features,)
        ``diag(M_)`` normalised to sum to 1.
    """

    _task = "regression"

    def fit(self, X, y, eval_set=None):
        """Fit on ``(X, y)``; ``eval_set=(X_val, y_val)`` replaces the internal validation split."""
        X, y = validate_data(
            self, X, y, multi_output=True, y_numeric=True, dtype=np.float64, ensure_min_samples=2
        )
        self._y_1d = y.ndim == 1
        Y = y.reshape(len(y), -1)
        self.y_mean_ = Y.mean(0)
        std = Y.std(0)
        self.y_scale_ = np.where(std > 0, std, 1.0)
        eval_enc = None
        if eval_set is not None:
            Xv, yv = eval_set
            Xv = validate_data(self, Xv, reset=False, dtype=np.float64)
            yv = np.asarray(yv, dtype=np.float64).reshape(len(Xv), -1)
            eval_enc = (Xv, (yv - self.y_mean_) / self.y_scale_)
        self._fit(X, (Y - self.y_mean_) / self.y_scale_, eval_enc)
        return self

    def predict(self, X):
        out = self._outputs(X) * self.y_scale_ + self.y_mean_
        return out[:, 0] if self._y_1d else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags


class RFMClassifier(ClassifierMixin, _RFMBase):
    """Recursive Feature Machine classifier: kernel ridge on one-hot targets with a learned
    metric ``M``; predicts the class of the largest output.

    Parameters are those of :class:`RFMRegressor`. For classes, the selection on validation
    data maximises accuracy (MSE breaks ties) and the internal split is stratified.

    ``predict_proba`` is ``softmax(outputs / T)``, with the temperature ``T`` chosen to minimise
    the log-loss on the validation data (on the training data when there is none, which makes
    the probabilities over-confident). Its argmax always equals ``predict``.

    Attributes
    ----------
    classes_ : ndarray
    temperature_ : float
    constant_features_ : ndarray of bool
        Columns constant in the training rows (ignored).
    (and those of :class:`RFMRegressor`; ``history_`` also has ``train_accuracy`` and
    ``val_accuracy``)
    """

    _task = "classification"

    def _encode(self, y) -> np.ndarray:
        idx = np.searchsorted(self.classes_, y)
        return np.eye(len(self.classes_))[idx]

    def fit(self, X, y, eval_set=None):
        """Fit on ``(X, y)``; ``eval_set=(X_val, y_val)`` replaces the internal validation split."""
        X, y = validate_data(self, X, y, dtype=np.float64, ensure_min_samples=2)
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise ValueError(
                "RFMClassifier needs samples of at least 2 classes, but the data contains only "
                f"one class: {self.classes_[0]!r}"
            )
        eval_enc = None
        if eval_set is not None:
            Xv, yv = eval_set
            Xv = validate_data(self, Xv, reset=False, dtype=np.float64)
            yv = np.asarray(yv)
            unseen = np.setdiff1d(yv, self.classes_)
            if len(unseen):
                raise ValueError(f"eval_set has labels not present in y: {unseen[:5]!r}")
            eval_enc = (Xv, self._encode(yv))
        val_out, Yv = self._fit(X, self._encode(y), eval_enc, y_strat=y)
        if val_out is not None:
            self.temperature_ = _fit_temperature(val_out.double().cpu().numpy(),
                                                 Yv.double().cpu().numpy())
        else:
            self.temperature_ = _fit_temperature(self._outputs(X), self._encode(y))
        return self

    def decision_function(self, X):
        """Kernel-machine outputs: ``(n, n_classes)``, or ``(n,)`` (class 1 minus class 0) for
        two classes."""
        out = self._outputs(X)
        return out[:, 1] - out[:, 0] if len(self.classes_) == 2 else out

    def predict(self, X):
        out = self._outputs(X)
        return self.classes_[out.argmax(1)]

    def predict_proba(self, X):
        out = self._outputs(X)
        out /= self.temperature_
        out -= out.max(1, keepdims=True)
        p = np.exp(out)
        return p / p.sum(1, keepdims=True)

    def predict_log_proba(self, X):
        return np.log(self.predict_proba(X))


def _fit_temperature(outputs: np.ndarray, onehot: np.ndarray) -> float:
    """The temperature in ``[1e-3, 1e2]`` minimising the mean log-loss of ``softmax(outputs/T)``
    (a grid on log T, then a golden-section refinement)."""

    def loss(log_t: float) -> float:
        z = outputs / np.exp(log_t)
        z = z - z.max(1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(1, keepdims=True))
        return float(-(onehot * logp).sum(1).mean())

    grid = np.linspace(np.log(1e-3), np.log(1e2), 41)
    i = int(np.argmin([loss(g) for g in grid]))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    phi = (np.sqrt(5) - 1) / 2
    for _ in range(30):
        a, b = hi - phi * (hi - lo), lo + phi * (hi - lo)
        if loss(a) < loss(b):
            hi = b
        else:
            lo = a
    return float(np.exp((lo + hi) / 2))
