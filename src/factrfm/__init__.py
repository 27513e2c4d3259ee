"""factrfm: FACT-RFM and NFA-RFM kernel machines, and FACT/NFA diagnostics for PyTorch networks."""

from factrfm.estimators import RFMClassifier, RFMRegressor
from factrfm.kernels import (
    ExponentialKernel,
    GaussianKernel,
    Kernel,
    LaplaceKernel,
    PolynomialKernel,
)
from factrfm.partition import PartitionedRFMClassifier, PartitionedRFMRegressor
from factrfm.rfm import RFMResult, fit_rfm

__version__ = "0.1.0"

__all__ = [
    "RFMClassifier",
    "RFMRegressor",
    "PartitionedRFMClassifier",
    "PartitionedRFMRegressor",
    "fit_rfm",
    "RFMResult",
    "Kernel",
    "LaplaceKernel",
    "GaussianKernel",
    "ExponentialKernel",
    "PolynomialKernel",
]
