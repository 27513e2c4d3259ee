"""Figures for the FACT/NFA diagnostics (matplotlib, Agg backend when none is chosen)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib

if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "ps", "cairo"):
    matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plot_layer_agreement", "plot_agreement_dynamics"]

_METRICS = ("pearson", "cosine")


def _check_metric(metric: str) -> None:
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {_METRICS}, got {metric!r}")


def plot_layer_agreement(
    table: Sequence[dict[str, Any]], ax: Any = None, metric: str = "pearson"
) -> Any:
    """Bars per layer: agreement of WᵀW with FACT, (F Fᵀ)^{1/2} and AGOP^s (the NFA).

    Parameters
    ----------
    table : sequence of dict
        Rows of :meth:`FactDiagnostics.table`.
    ax : matplotlib Axes, optional
        Where to draw (a new figure when None).
    metric : {"pearson", "cosine"}

    Returns
    -------
    matplotlib Axes
    """
    _check_metric(metric)
    if ax is None:
        _, ax = plt.subplots(figsize=(1.2 + 0.9 * len(table), 3.2))
    names = [r["layer"] for r in table]
    x = np.arange(len(names))
    series = [("fact", "FACT"), ("fact_sym", "(F Fᵀ)^½"), ("nfa", "AGOP^s (NFA)")]
    w = 0.8 / len(series)
    for j, (key, label) in enumerate(series):
        ax.bar(x + (j - 1) * w, [r[f"{key}_{metric}"] for r in table], width=w, label=label)
    ax.set_xticks(x)
    ax.set_xticklabels(names)
    ax.set_ylabel(f"{metric} with WᵀW")
    ax.set_ylim(min(0.0, ax.get_ylim()[0]), 1.05)
    ax.legend(fontsize="small")
    return ax


def plot_agreement_dynamics(
    history: Sequence[dict[str, Any]],
    path: str | None = None,
    metric: str = "pearson",
    x: str = "epoch",
    marks: Sequence[tuple[float, str]] = (),
) -> Any:
    """Agreement with WᵀW against training time, one line per layer; FACT left, NFA right.

    Parameters
    ----------
    history : sequence of dict
        Rows with keys ``x``, ``layer``, ``fact_<metric>`` and ``nfa_<metric>``
        (as recorded by :class:`factrfm.nn.AgreementTracker`).
    path : str, optional
        Save the figure there (PNG/PDF by extension).
    metric : {"pearson", "cosine"}
    x : str
        The key for the horizontal axis.
    marks : sequence of (float, str)
        Vertical dashed lines with labels (e.g. the start of an L-BFGS phase).

    Returns
    -------
    matplotlib Figure
    """
    _check_metric(metric)
    if not history:
        raise ValueError("history is empty: record at least one point before plotting")
    layers = list(dict.fromkeys(r["layer"] for r in history))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, key, title in ((axes[0], "fact", "FACT: WᵀW vs −(1/λ)Wᵀ∇_W L"),
                           (axes[1], "nfa", "NFA: WᵀW vs AGOP^s")):
        for layer in layers:
            rows = [r for r in history if r["layer"] == layer]
            ax.plot([r[x] for r in rows], [r[f"{key}_{metric}"] for r in rows], label=layer)
        for xv, label in marks:
            ax.axvline(xv, color="grey", ls="--", lw=0.8)
            ax.text(xv, 0.02, " " + label, rotation=90, va="bottom", fontsize="small",
                    color="grey", transform=ax.get_xaxis_transform())
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel(x)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"{metric} with WᵀW")
    axes[1].legend(fontsize="small", loc="lower right")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=130)
    return fig
