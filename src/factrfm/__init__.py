"""factrfm: FACT-RFM and NFA-RFM kernel machines, and FACT/NFA diagnostics for PyTorch networks."""

__version__ = "0.1.0"
