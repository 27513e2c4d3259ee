"""Record FACT and NFA agreement over training (for the dynamics figure)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from factrfm.nn.diagnostics import FactDiagnostics, LossFn, fact_diagnostics

__all__ = ["AgreementTracker"]


class AgreementTracker:
    """Call once per epoch (or any step) to record the per-layer agreement table.

    Parameters
    ----------
    model, data, loss_fn, weight_decay, optimizer, layers, agop, agop_power, batch_size, device
        As in :func:`factrfm.nn.fact_diagnostics`. The optimiser check warns once, at the first
        record, not at every epoch.
    every : int
        Record only when ``step % every == 0`` (and whenever ``force=True``).

    Examples
    --------
    >>> tracker = AgreementTracker(model, (X, Y), mse_per_sample, optimizer=opt, every=5)
    >>> for epoch in range(100):
    ...     train_one_epoch()
    ...     tracker(epoch)
    >>> tracker.to_dataframe(); tracker.plot("dynamics.png")
    """

    def __init__(
        self,
        model: nn.Module,
        data: Any,
        loss_fn: LossFn,
        *,
        weight_decay: float | Mapping[str, float] | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        layers: Sequence[str] | None = None,
        agop: bool = True,
        agop_power: float = 0.5,
        batch_size: int | None = None,
        device: torch.device | str | None = None,
        every: int = 1,
    ) -> None:
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive integer, got {every!r}")
        self.model = model
        self.data = data
        self.loss_fn = loss_fn
        self.kwargs = dict(weight_decay=weight_decay, optimizer=optimizer, layers=layers,
                           agop=agop, agop_power=agop_power, batch_size=batch_size, device=device)
        self.every = every
        self.history: list[dict[str, Any]] = []
        self.warnings: list[str] = []
        self._warned = False

    def __call__(self, step: int, force: bool = False, **extra: Any) -> FactDiagnostics | None:
        """Record the table at ``step`` (extra keyword values are stored in every row).

        Returns the diagnostics when recorded, else None.
        """
        if not force and step % self.every != 0:
            return None
        with warnings.catch_warnings():
            if self._warned:
                warnings.simplefilter("ignore")
            result = fact_diagnostics(self.model, self.data, self.loss_fn, **self.kwargs)
        if not self._warned:
            self.warnings = list(result.warnings)
            self._warned = True
        for row in result.table():
            self.history.append({"epoch": step, **extra, **row})
        return result

    def to_dataframe(self) -> Any:
        """The recorded rows as a pandas DataFrame (one row per step and layer)."""
        import pandas as pd

        return pd.DataFrame(self.history)

    def plot(self, path: str | None = None, metric: str = "pearson") -> Any:
        """Agreement against epoch, FACT and NFA side by side; returns the Figure."""
        from factrfm.nn.plotting import plot_agreement_dynamics

        return plot_agreement_dynamics(self.history, path=path, metric=metric)
