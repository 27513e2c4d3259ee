"""Reading the weight decay λ from a PyTorch optimiser, and checking that FACT's premise holds.

FACT is a statement about stationary points of ``(1/n) Σ_i ℓ_i + (λ/2)‖θ‖²``: the L2 term must
be *coupled*, i.e. added to the gradient that the optimiser then processes. ``torch.optim.SGD``,
``Adam`` (with ``decoupled_weight_decay=False``), ``NAdam``, ``RAdam``, ``RMSprop``, ``Adagrad``,
``Adamax``, ``Adadelta`` and ``ASGD`` do this with their ``weight_decay`` argument: a fixed point of
their update is a stationary point of the regularised loss. ``AdamW`` (and Adam/NAdam/RAdam with
``decoupled_weight_decay=True``, ``Adafactor``, ``Muon``) shrink the weights outside the gradient,
so their fixed points are not stationary points of that objective and FACT is not expected to hold.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import torch

__all__ = ["FactAssumptionWarning", "optimizer_weight_decay", "check_weight_decay"]


class FactAssumptionWarning(UserWarning):
    """A premise of FACT (coupled L2 weight decay with λ > 0) does not hold for this run."""


# Optimisers whose ``weight_decay`` is coupled L2 unless ``decoupled_weight_decay`` is set.
_COUPLED = {"SGD", "Adam", "NAdam", "RAdam", "RMSprop", "Adagrad", "Adamax", "Adadelta", "ASGD"}
# Optimisers whose ``weight_decay`` is always decoupled (applied to the weights, not the gradient).
_DECOUPLED = {"AdamW", "Adafactor", "Muon"}
# Optimisers with no weight decay at all.
_NO_DECAY = {"LBFGS", "Rprop", "SparseAdam"}


def optimizer_weight_decay(
    optimizer: torch.optim.Optimizer, params: Iterable[torch.Tensor] | None = None
) -> dict[int, tuple[float, bool | None]]:
    """The weight decay that an optimiser applies to each parameter, and whether it is coupled.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
        The optimiser used for training.
    params : iterable of torch.Tensor, optional
        Restrict the answer to these parameters (default: every parameter the optimiser holds).

    Returns
    -------
    dict
        ``id(param) -> (λ, coupled)`` where ``coupled`` is True for coupled L2 decay, False for
        decoupled decay and None when the optimiser class is unknown.

    Raises
    ------
    TypeError
        If ``optimizer`` is not a ``torch.optim.Optimizer``.
    ValueError
        If one of ``params`` is not held by the optimiser.
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
        )
    name = type(optimizer).__name__
    out: dict[int, tuple[float, bool | None]] = {}
    for group in optimizer.param_groups:
        wd = float(group.get("weight_decay", 0.0) or 0.0)
        if name in _NO_DECAY:
            coupled: bool | None = True
        elif name in _DECOUPLED:
            coupled = False
        elif "decoupled_weight_decay" in group:
            coupled = not bool(group["decoupled_weight_decay"])
        elif name in _COUPLED:
            coupled = True
        else:
            coupled = None
        for p in group["params"]:
            out[id(p)] = (wd, coupled)
    if params is not None:
        wanted = list(params)
        missing = [i for i, p in enumerate(wanted) if id(p) not in out]
        if missing:
            raise ValueError(
                f"params: {len(missing)} parameter(s) are not held by the optimizer "
                f"({name}); pass the optimizer that trains them"
            )
        out = {id(p): out[id(p)] for p in wanted}
    return out


def check_weight_decay(lam: float, coupled: bool | None = True, where: str = "") -> list[str]:
    """Warn (``FactAssumptionWarning``) when λ and its coupling break FACT's premise.

    Parameters
    ----------
    lam : float
        Weight decay λ.
    coupled : bool or None
        Whether the decay is coupled L2 (True), decoupled (False) or unknown (None).
    where : str
        Name of the layer or optimiser, used in the message.

    Returns
    -------
    list of str
        The messages that were warned (empty when the premise holds).
    """
    label = f" for {where}" if where else ""
    msgs: list[str] = []
    if coupled is False:
        msgs.append(
            f"weight decay{label} is decoupled (AdamW-style): its fixed points are not stationary "
            "points of loss + (λ/2)‖θ‖², so FACT is not expected to hold; train with coupled L2 "
            "(SGD/Adam weight_decay) to test FACT"
        )
    elif coupled is None:
        msgs.append(
            f"cannot tell whether the optimizer's weight decay{label} is coupled L2; FACT assumes "
            "it is. Pass weight_decay= explicitly if you know λ"
        )
    if lam == 0.0:
        msgs.append(
            f"weight decay{label} is zero: FACT needs λ > 0. Reporting the unscaled matrix "
            "−Wᵀ∇_W L (correlation and cosine only; relative errors are undefined)"
        )
    for m in msgs:
        warnings.warn(m, FactAssumptionWarning, stacklevel=3)
    return msgs
