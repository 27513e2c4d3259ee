"""The Recursive Feature Machine loop on tensors.

Iteration ``t = 0, 1, ..., n_iter``: fit kernel ridge with the metric ``M_t`` (``M_0 = I``),
score it, and (unless ``t = n_iter``) compute ``M_{t+1}`` with a feature rule
(:mod:`factrfm.features`), normalised. Iteration 0 is plain kernel ridge, a candidate like any
other. The kept iteration is the best on validation data (``select="validation"``) or the last
(``select="last"``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from factrfm.features import (
    NORMALIZATIONS,
    RULES,
    FeatureLearningError,
    feature_matrices,
    median_distance,
    normalize_metric,
    pair_differences,
    update_metric,
)
from factrfm.iterative import IterativeOptions, resolve_solver, solve_nystrom
from factrfm.kernels import Kernel, default_block_rows, row_blocks
from factrfm.operators import sample_rows, sampled_feature_matrices
from factrfm.solvers import RidgePath, solve_cholesky

__all__ = ["fit_rfm", "RFMResult", "IterationRecord", "predict_kernel"]

TASKS = ("regression", "classification")


@dataclass
class IterationRecord:
    """What one iteration measured. ``M`` is the metric *used* at this iteration."""

    iteration: int
    ridge: float
    metrics: dict[str, float]
    M: torch.Tensor | None = None
    fact: torch.Tensor | None = None
    agop: torch.Tensor | None = None
    #: ``(c, d, d)`` per-output FACT matrices, kept for the rule ``"fact-per-output"`` only.
    fact_outputs: torch.Tensor | None = None


@dataclass
class RFMResult:
    """The kept iteration's model and the whole history."""

    kernel: Kernel
    M: torch.Tensor
    alpha: torch.Tensor
    centres: torch.Tensor
    ridge: float
    iteration: int
    history: list[IterationRecord] = field(default_factory=list)

    def predict(self, X: torch.Tensor, block_entries: int | None = None) -> torch.Tensor:
        """Outputs ``(m, c)`` of the kept model at the rows of ``X``."""
        return predict_kernel(self.kernel, X, self.centres, self.alpha, self.M, block_entries)


def predict_kernel(
    kernel: Kernel,
    X: torch.Tensor,
    centres: torch.Tensor,
    alpha: torch.Tensor,
    M: torch.Tensor,
    block_entries: int | None = None,
) -> torch.Tensor:
    """``K_M(X, centres) @ alpha``, one block of rows at a time (memory: one block)."""
    X = X.to(centres.dtype)
    out = X.new_empty(X.shape[0], alpha.shape[1])
    rows = default_block_rows(centres.shape[0], budget=block_entries)
    Md = M.to(centres.dtype)
    for sl in row_blocks(X.shape[0], rows):
        out[sl] = kernel.matrix(X[sl], centres, Md) @ alpha
    return out


def _metrics(pred: torch.Tensor, Y: torch.Tensor, task: str, prefix: str) -> dict[str, float]:
    out = {f"{prefix}_mse": float(((pred - Y) ** 2).sum(1).mean())}
    if task == "classification":
        if Y.shape[1] == 1:
            correct = (pred[:, 0] > 0.5) == (Y[:, 0] > 0.5)
        else:
            correct = pred.argmax(1) == Y.argmax(1)
        out[f"{prefix}_accuracy"] = float(correct.double().mean())
    return out


def _score_key(metrics: dict[str, float], task: str, prefix: str) -> tuple[float, ...]:
    """Smaller is better: (-accuracy, mse) for classification, (mse,) for regression."""
    if task == "classification":
        return (-metrics[f"{prefix}_accuracy"], metrics[f"{prefix}_mse"])
    return (metrics[f"{prefix}_mse"],)


def _as_ridges(ridge: float | Sequence[float]) -> list[float]:
    ridges = [float(ridge)] if isinstance(ridge, (int, float)) else [float(r) for r in ridge]
    if not ridges:
        raise ValueError("ridge must be a number or a non-empty sequence of numbers")
    for r in ridges:
        if not math.isfinite(r) or r < 0:
            raise ValueError(f"every ridge must be a finite number >= 0, got {r!r}")
    return ridges


def _solve_ridges(K, Y, K_val, Y_val, ridges, method, task):
    """Kernel ridge for every ridge in the grid; return the best on validation data as
    ``(alpha, ridge, K @ alpha, jitters)``, ``jitters`` the diagonal jitters the Cholesky solves
    needed (one per solve; see :func:`~factrfm.solvers.solve_cholesky`). A single ridge needs
    no validation data. ``K`` may be overwritten."""
    if len(ridges) == 1:
        # K is not needed afterwards: factor it in place; (K + s I) alpha = Y gives K alpha.
        sol = solve_cholesky(K, Y, ridges[0], overwrite=True, warn=False)
        return sol.alpha, ridges[0], Y - sol.shift * sol.alpha, [sol.jitter]
    if method == "eigh":
        path = RidgePath(K, Y)
        KV = path.project(K_val)
        keys = [
            _score_key(_metrics(path.predict(KV, r), Y_val, task, "val"), task, "val")
            for r in ridges
        ]
        best = min(range(len(ridges)), key=keys.__getitem__)
        return path.coefficients(ridges[best]), ridges[best], path.fitted(ridges[best]), []
    best, jitters = None, []
    for r in ridges:
        sol = solve_cholesky(K, Y, r, warn=False)
        jitters.append(sol.jitter)
        key = _score_key(_metrics(K_val @ sol.alpha, Y_val, task, "val"), task, "val")
        if best is None or key < best[0]:
            best = (key, sol.alpha, r)
    _, alpha, r = best
    return alpha, r, K @ alpha, jitters


def _solve_ridges_nystrom(kernel, X, Y, X_val, Y_val, M, ridges, task, options, centre_idx,
                          block_size):
    """Nyström kernel ridge (:func:`factrfm.iterative.solve_nystrom`) for every ridge; return
    the best on validation data as ``(coef, ridge, train_pred, centres)``."""
    best = None
    for r in ridges:
        sol = solve_nystrom(kernel, X, Y, M, r, options, centre_idx)
        if len(ridges) == 1:
            best = (None, sol, r)
            break
        val_pred = predict_kernel(kernel, X_val, sol.centres, sol.coef, M, block_size)
        key = _score_key(_metrics(val_pred, Y_val, task, "val"), task, "val")
        if best is None or key < best[0]:
            best = (key, sol, r)
    _, sol, r = best
    train_pred = predict_kernel(kernel, X, sol.centres, sol.coef, M, block_size)
    return sol.coef, r, train_pred, sol.centres


def _warn_jitters(jitters: list[float], n: int) -> None:
    """One warning per fit for the solves that needed a jitter, not one per solve."""
    used = [j for j in jitters if j > 0]
    if used:
        warnings.warn(
            f"K + ridge*I was not numerically positive definite (n={n}) in {len(used)} of "
            f"{len(jitters)} solves (duplicated rows or a tiny ridge); solved with a diagonal "
            f"jitter of at most {max(used):.3g}",
            RuntimeWarning,
            stacklevel=3,
        )


def fit_rfm(
    X: torch.Tensor,
    Y: torch.Tensor,
    X_val: torch.Tensor | None = None,
    Y_val: torch.Tensor | None = None,
    *,
    kernel: Kernel,
    rule: str = "fact",
    n_iter: int = 5,
    ridge: float | Sequence[float] = 1e-3,
    agop_power: float = 0.5,
    normalize: str = "max",
    diag: bool = False,
    centering: bool = False,
    task: str = "regression",
    select: str = "validation",
    keep_matrices: bool = False,
    keep_feature_matrices: bool = False,
    block_size: int | None = None,
    callback: Callable[[IterationRecord], None] | None = None,
    M0: torch.Tensor | None = None,
    ridge_solver: str = "cholesky",
    solver: str = "exact",
    iterative: IterativeOptions | None = None,
    feature_sample: int | None = None,
) -> RFMResult:
    """Fit a Recursive Feature Machine.

    Parameters
    ----------
    X, Y : tensors of shape ``(n, d)`` and ``(n, c)``
        Training inputs and targets (one-hot rows for classes). Their dtype and device are the
        working dtype and device.
    X_val, Y_val : optional tensors
        Validation data: used to choose the ridge (when ``ridge`` is a sequence) and the kept
        iteration (``select="validation"``), and recorded in the history otherwise.
    kernel : :class:`~factrfm.kernels.Kernel`
    rule : ``"fact"``, ``"fact-geomean"``, ``"fact-inner"``, ``"fact-per-output"`` or ``"agop"``
        (:func:`factrfm.features.update_metric`).
    n_iter : number of metric updates; ``0`` is plain kernel ridge.
    ridge : a number, or a sequence chosen among per iteration on validation data (all of them
        from one eigendecomposition of ``K``).
    agop_power : the power ``s`` in ``M <- AGOP^s`` (rule ``"agop"`` only).
    normalize : ``"max"``, ``"trace"``, ``"median"`` or ``"none"``, applied after every update.
        ``"median"`` keeps the median pairwise distance (over a seeded sample of 4,096 pairs of
        training rows) equal to its value under ``M0``, so the bandwidth keeps its meaning.
    diag : keep ``M`` diagonal.
    centering : subtract the mean gradient before forming the AGOP.
    task : ``"classification"`` adds accuracy (argmax of the outputs; a single output column is
        thresholded at 0.5) to the metrics and makes it the selection criterion (MSE breaks ties).
    select : ``"validation"`` or ``"last"``.
    keep_matrices, keep_feature_matrices : store ``M_t`` / the FACT matrix and AGOP of each
        iteration in the history.
    block_size : entries held at once by the block-wise feature and prediction loops.
    callback : called with each :class:`IterationRecord` as soon as it is complete.
    M0 : the starting metric (default the identity).
    ridge_solver : how a ridge grid is searched: ``"cholesky"`` factors ``K + ridge I`` once per
        ridge; ``"eigh"`` takes one eigendecomposition of ``K`` for the whole grid. On CPUs the
        Cholesky factorisation is so much cheaper than ``eigh`` (about 100x at n = 5,000, see
        ``benchmarks/bench_ridge_grid.py``) that it wins for any grid of fewer than ~50 ridges.
    solver : ``"exact"`` (an ``n x n`` kernel matrix and Cholesky), ``"iterative"`` (Nyström
        kernel ridge on ``iterative.n_centres`` seeded centres, solved by preconditioned CG with
        block-wise products: :func:`factrfm.iterative.solve_nystrom`; needs every ridge > 0) or
        ``"auto"`` (exact up to :data:`factrfm.iterative.AUTO_EXACT_MAX_ROWS` rows).
    iterative : :class:`~factrfm.iterative.IterativeOptions` of the iterative solver.
    feature_sample : compute the feature matrices at a seeded random sample of this many of the
        rows that carry coefficients (training rows for ``"exact"``, Nyström centres for
        ``"iterative"``), all centres kept in ``f``
        (:func:`factrfm.operators.sampled_feature_matrices`). The iterative solver's feature
        step uses the centres and their coefficients ``beta`` in the FACT formula
        ``F = mean_j G_j beta_j c_j^T``; it equals the exact step when every row is a centre.

    If an update fails (the fitted function is flat or the metric is not finite), the loop stops
    with a ``RuntimeWarning`` and the best iteration so far is kept.
    """
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose one of {RULES}")
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"unknown normalize {normalize!r}; choose one of {NORMALIZATIONS}")
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")
    if select not in ("validation", "last"):
        raise ValueError(f"select must be 'validation' or 'last', got {select!r}")
    if int(n_iter) != n_iter or n_iter < 0:
        raise ValueError(f"n_iter must be a non-negative integer, got {n_iter!r}")
    if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
        raise ValueError(
            f"X must be (n, d) and Y (n, c) with the same n; got {tuple(X.shape)}, {tuple(Y.shape)}"
        )
    ridges = _as_ridges(ridge)
    if ridge_solver not in ("cholesky", "eigh"):
        raise ValueError(f"ridge_solver must be 'cholesky' or 'eigh', got {ridge_solver!r}")
    has_val = X_val is not None and Y_val is not None
    if (X_val is None) != (Y_val is None):
        raise ValueError("give both X_val and Y_val, or neither")
    if not has_val and (len(ridges) > 1 or (select == "validation" and n_iter > 0)):
        raise ValueError(
            "choosing the ridge or the iteration needs validation data: pass X_val and Y_val, "
            "or a single ridge with select='last'"
        )
    if has_val:
        X_val = X_val.to(X.dtype)
        Y_val = Y_val.to(X.dtype)
        if X_val.shape[1] != X.shape[1] or Y_val.shape[1] != Y.shape[1]:
            raise ValueError("X_val and Y_val must have the same columns as X and Y")
    Y = Y.to(X.dtype)
    d = X.shape[1]
    solver = resolve_solver(solver, X.shape[0])
    opts = iterative if iterative is not None else IterativeOptions()
    gen = torch.Generator().manual_seed(opts.seed)
    centre_idx = sample_rows(X.shape[0], opts.n_centres, gen) if solver == "iterative" else None
    # The feature step runs on the rows that carry coefficients: all training rows (exact) or
    # the Nyström centres (iterative), or a seeded sample of them of size feature_sample.
    n_feat = X.shape[0] if centre_idx is None else len(centre_idx)
    feat_rows = None if feature_sample is None else sample_rows(n_feat, feature_sample, gen)
    if solver == "iterative" and min(ridges) <= 0:
        raise ValueError("solver='iterative' needs every ridge > 0")
    M = torch.eye(d, dtype=torch.float64, device=X.device) if M0 is None else M0.double()
    scale: dict = {}
    if normalize == "median" and n_iter > 0:
        scale["pairs"] = pair_differences(X, generator=gen)
        scale["target"] = median_distance(M, scale["pairs"])
        if not scale["target"] > 0:
            raise ValueError(
                "normalize='median': the median distance between training rows is 0 (most "
                "sampled pairs of rows are identical); use normalize='max' or 'trace'"
            )

    history: list[IterationRecord] = []
    jitters: list[float] = []  # one per Cholesky solve, reported once at the end
    best: tuple | None = None  # (key, iteration, M, alpha, ridge, centres)
    for t in range(int(n_iter) + 1):
        Md = M.to(X.dtype)
        last = t == n_iter
        want_features = not last or keep_feature_matrices
        if solver == "iterative":
            alpha, chosen, train_pred, centres = _solve_ridges_nystrom(
                kernel, X, Y, X_val, Y_val, Md, ridges, task, opts, centre_idx, block_size)
            W, K_val = None, None
        else:
            # One pass gives K and, when a feature step follows, its gradient coefficients W.
            if want_features and feat_rows is None:
                K, W = kernel.gradient_weights(X, X, Md)
            else:
                K, W = kernel.matrix(X, X, Md), None
            K_val = kernel.matrix(X_val, X, Md) if has_val else None
            alpha, chosen, train_pred, solve_jitters = _solve_ridges(
                K, Y, K_val, Y_val, ridges, ridge_solver, task)
            jitters += solve_jitters
            del K
            centres = X
        metrics = _metrics(train_pred, Y, task, "train")
        if has_val:
            val_pred = (K_val @ alpha if K_val is not None
                        else predict_kernel(kernel, X_val, centres, alpha, Md, block_size))
            metrics.update(_metrics(val_pred, Y_val, task, "val"))
        del K_val
        if not torch.isfinite(alpha).all():
            raise FloatingPointError(f"non-finite kernel coefficients at iteration {t}")

        record = IterationRecord(t, chosen, metrics, M.clone() if keep_matrices else None)
        key = _score_key(metrics, task, "val") if (has_val and select == "validation") else (-t,)
        if best is None or key < best[0]:
            best = (key, t, M, alpha, chosen, centres)

        if want_features:
            need_fact = (rule != "agop" and not last) or keep_feature_matrices
            need_agop = (rule == "agop" and not last) or keep_feature_matrices
            per_output = rule == "fact-per-output" and (not last or keep_feature_matrices)
            if solver == "exact" and feat_rows is None:
                mats = feature_matrices(
                    kernel,
                    X,
                    alpha,
                    M,
                    fact=need_fact,
                    agop=need_agop,
                    centering=centering,
                    block_entries=block_size,
                    weights=W,
                    per_output=per_output,
                )
            else:
                # FACT in its coefficient form F = mean_i G_i alpha_i x_i^T over the rows that
                # carry coefficients (MATH.md §3): the training rows for the exact solve, the
                # centres (with their Nyström coefficients) for the iterative one; all of them
                # or a seeded sample. With every row a centre both are the exact FACT step.
                pts, weights = centres, alpha
                if feat_rows is not None:
                    pts, weights = centres[feat_rows], alpha[feat_rows]
                mats = sampled_feature_matrices(
                    kernel, pts, centres, alpha, M, weights, fact=need_fact, agop=need_agop,
                    centering=centering, block_entries=block_size, per_output=per_output)
            del W
            if keep_feature_matrices:
                record.fact, record.agop = mats.fact, mats.agop
                record.fact_outputs = mats.fact_outputs
        history.append(record)
        if callback is not None:
            callback(record)
        if last:
            break
        try:
            M = normalize_metric(
                update_metric(rule, M, mats, agop_power=agop_power, diag=diag), normalize,
                **scale,
            )
        except FeatureLearningError as err:
            warnings.warn(
                f"feature learning stopped after iteration {t}: {err}; keeping the best "
                "iteration so far",
                RuntimeWarning,
                stacklevel=2,
            )
            break

    _warn_jitters(jitters, X.shape[0])
    _, it, M_best, alpha_best, ridge_best, centres_best = best
    return RFMResult(kernel, M_best, alpha_best, centres_best, ridge_best, it, history)
