"""Which weight matrices of a model are examined, and how each one is viewed as a matrix.

A *layer* here is one weight used linearly, ``z = W h``:

- ``nn.Linear``: ``W`` is ``weight`` (out × in); ``h`` is the input row (every leading index of a
  3-D input, e.g. a token, counts as one ``h``).
- ``nn.Conv1d`` / ``nn.Conv2d`` (``groups=1``): ``W`` is ``weight`` reshaped to out × (in·k);
  ``h`` is one unfolded input patch, and every spatial position counts as one ``h``.
- any other parameter the user names (ndim ≥ 2): ``W`` is the parameter reshaped to
  ``shape[0]`` × rest. FACT is still computed (it needs only ``W`` and ``∇_W L``), but the AGOP is
  not, because the layer's input is unknown (grouped convolutions are treated the same way).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["LayerSpec", "find_layers"]

_MODULE_KINDS: dict[type, str] = {nn.Linear: "linear", nn.Conv1d: "conv1d", nn.Conv2d: "conv2d"}


@dataclass(frozen=True)
class LayerSpec:
    """One examined weight: its name, the parameter, and the module whose output is ``W h``.

    ``module`` is None for a user-named parameter without a known module (FACT only, no AGOP).
    """

    name: str
    param: torch.Tensor
    module: nn.Module | None
    kind: str

    def matrix(self) -> torch.Tensor:
        """The weight as an out × in matrix, detached, in float64."""
        p = self.param.detach().to(torch.float64)
        return p.reshape(p.shape[0], -1)

    def as_matrix(self, t: torch.Tensor) -> torch.Tensor:
        """Reshape a tensor shaped like the parameter (its gradient) to out × in."""
        return t.reshape(t.shape[0], -1)

    def output_rows(self, z: torch.Tensor) -> torch.Tensor:
        """Module output (or its gradient) as rows ``(number of h, out)``: one row per ``h``."""
        if self.kind == "linear":
            return z.reshape(-1, z.shape[-1])
        if self.kind in ("conv1d", "conv2d"):
            # (B, out, *spatial) -> (B * positions, out)
            return z.movedim(1, -1).reshape(-1, z.shape[1])
        raise ValueError(f"layer {self.name!r} of kind {self.kind!r} has no known output layout")


def _module_kind(module: nn.Module) -> str | None:
    for cls, kind in _MODULE_KINDS.items():
        if type(module) is cls or isinstance(module, cls):
            if kind.startswith("conv") and getattr(module, "groups", 1) != 1:
                return None
            return kind
    return None


def find_layers(model: nn.Module, layers: Sequence[str] | None = None) -> list[LayerSpec]:
    """Resolve the layers to examine.

    Parameters
    ----------
    model : nn.Module
        The network.
    layers : sequence of str, optional
        Module names (as in ``model.named_modules()``) of Linear/Conv layers, or parameter names
        (as in ``model.named_parameters()``). Default: every ``nn.Linear``, ``nn.Conv1d`` and
        ``nn.Conv2d`` (with ``groups=1``) whose weight requires grad, in registration order.

    Returns
    -------
    list of LayerSpec

    Raises
    ------
    TypeError
        If ``model`` is not an ``nn.Module``.
    ValueError
        If a name is unknown, names a parameter that is not a matrix, or nothing is found.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    # weight parameter -> (module name, module, kind) for supported modules
    owner = {}
    for mname, m in modules.items():
        kind = _module_kind(m)
        if kind is not None and isinstance(getattr(m, "weight", None), torch.Tensor):
            owner[id(m.weight)] = (mname, m, kind)

    specs: list[LayerSpec] = []
    if layers is None:
        for mname, m in modules.items():
            kind = _module_kind(m)
            if kind is not None and m.weight.requires_grad:
                specs.append(LayerSpec(mname, m.weight, m, kind))
        if not specs:
            raise ValueError(
                "model has no nn.Linear/nn.Conv1d/nn.Conv2d layer; name the weight parameters to "
                "examine with layers=[...]"
            )
        return specs

    if isinstance(layers, str):
        raise TypeError("layers must be a sequence of names, not a single string")
    for name in layers:
        if name in modules and _module_kind(modules[name]) is not None:
            m = modules[name]
            specs.append(LayerSpec(name, m.weight, m, _module_kind(m)))
        elif name in params:
            p = params[name]
            if p.ndim < 2:
                raise ValueError(
                    f"layers: parameter {name!r} has shape {tuple(p.shape)}; FACT needs a weight "
                    "matrix (ndim >= 2)"
                )
            if id(p) in owner:
                _, m, kind = owner[id(p)]
                specs.append(LayerSpec(name, p, m, kind))
            else:
                specs.append(LayerSpec(name, p, None, "param"))
        elif name in modules:
            raise ValueError(
                f"layers: module {name!r} is a {type(modules[name]).__name__}, not a supported "
                "Linear/Conv1d/Conv2d(groups=1); name its weight parameter instead"
            )
        else:
            raise ValueError(f"layers: {name!r} is neither a module nor a parameter of the model")
    if not specs:
        raise ValueError("layers is empty")
    seen = set()
    for s in specs:
        if id(s.param) in seen:
            raise ValueError(f"layers: weight {s.name!r} is named twice")
        seen.add(id(s.param))
        if not s.param.requires_grad:
            raise ValueError(f"layers: weight {s.name!r} does not require grad")
    return specs
