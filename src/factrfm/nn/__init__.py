"""FACT and NFA diagnostics for PyTorch networks.

>>> from factrfm.nn import fact_diagnostics, mse_per_sample
>>> result = fact_diagnostics(model, (X, Y), mse_per_sample, optimizer=opt)
>>> result.to_dataframe()[["fact_pearson", "nfa_pearson"]]
"""

from factrfm.nn.diagnostics import FactDiagnostics, LayerDiagnostics, fact_diagnostics
from factrfm.nn.layers import LayerSpec, find_layers
from factrfm.nn.optim import FactAssumptionWarning, check_weight_decay, optimizer_weight_decay
from factrfm.nn.tracking import AgreementTracker
from factrfm.nn.training import (
    lbfgs_polish,
    mlp,
    mse_per_sample,
    regularised_grad_norm,
    regularised_loss,
)

__all__ = [
    "AgreementTracker",
    "FactAssumptionWarning",
    "FactDiagnostics",
    "LayerDiagnostics",
    "LayerSpec",
    "check_weight_decay",
    "fact_diagnostics",
    "find_layers",
    "lbfgs_polish",
    "mlp",
    "mse_per_sample",
    "optimizer_weight_decay",
    "regularised_grad_norm",
    "regularised_loss",
]
