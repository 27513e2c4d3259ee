"""FACT and NFA diagnostics of a trained network, layer by layer (MATH.md section 1).

For every examined weight ``W`` (out × in, see :mod:`factrfm.nn.layers`) one streamed pass over the
data computes

- ``WᵀW`` and ``WWᵀ``;
- the forward FACT matrix ``F = −(1/(nλ)) Σ_i ∇_h ℓ_i h_iᵀ``, computed as
  ``−(1/λ) Wᵀ ∇_W L`` with ``L = (1/n) Σ_i ℓ_i`` the data loss (no weight decay). The two are
  equal whenever ``h`` reaches the loss only through ``W h`` (MLPs, CNNs without skip
  connections); the second form is the one the theorem's proof uses and it holds for any weight,
  shared or not. Its symmetrised form is ``(F Fᵀ)^{1/2}``;
- the backward FACT matrix ``−(1/λ) W (∇_W L)ᵀ = −(1/(nλ)) Σ_i (W h_i)(∇_{Wh} ℓ_i)ᵀ``, compared
  with ``WWᵀ``;
- the AGOP ``(1/n) Σ_i J_i J_iᵀ`` with ``J_i = Wᵀ ∂f(x_i)/∂(W h_i)`` (in × c), i.e. the Jacobian of
  the model output with respect to the layer input *through this layer*; for a convolution the sum
  runs over every (sample, position) pair and is still divided by the number of samples. Its power
  ``AGOP^s`` is the Neural Feature Ansatz's prediction for ``WᵀW`` (up to scale).

Agreement with ``WᵀW`` (or ``WWᵀ``) is reported as the Pearson correlation of the entries, the
cosine similarity and, for the FACT matrices (whose scale is fixed by λ), the relative Frobenius
error. At a stationary point of ``L + (λ/2)‖θ‖²`` the FACT errors vanish. Whether biases are decayed
does not matter for a weight's FACT: stationarity in ``W`` alone gives ``λW = −∇_W L``.

The per-sample loss. ``loss_fn(output, target)`` must return one loss per sample (shape
``(batch,)``), and the training objective must be their mean over the data set plus
``(λ/2)‖θ‖²``. ``nn.MSELoss()`` (reduction ``mean``) averages over samples *and* outputs: its
per-sample loss is ``((output - target)**2).mean(1)``, see
:func:`factrfm.nn.training.mse_per_sample`. A per-sample loss on another scale changes FACT by that
factor (correlations are unaffected, relative errors are not).

Memory grows with the layer sizes (an out × out and an in × in matrix per layer), not with the data.
The model is put in eval mode during the pass (so BatchNorm uses running statistics and samples stay
independent, which the AGOP's one-backward-per-output computation needs) and restored afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from factrfm.linalg import cosine, pearson, psd_power, relative_error, sqrt_aat
from factrfm.nn.layers import LayerSpec, find_layers
from factrfm.nn.optim import check_weight_decay, optimizer_weight_decay

__all__ = ["LayerDiagnostics", "FactDiagnostics", "fact_diagnostics", "iter_batches"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class LayerDiagnostics:
    """The matrices of one layer (float64, CPU) and their agreement scores.

    Attributes
    ----------
    name, kind : str
        Layer name and kind (``linear``, ``conv1d``, ``conv2d``, ``param``).
    weight_decay : float
        λ used for this layer.
    n_samples : int
        Number of samples in the pass.
    wtw, wwt : torch.Tensor
        ``WᵀW`` (in × in) and ``WWᵀ`` (out × out).
    fact, fact_sym, fact_back : torch.Tensor
        Forward FACT, ``(F Fᵀ)^{1/2}`` and backward FACT. When λ = 0 they are the unscaled
        ``−Wᵀ∇_W L`` etc.
    grad_reg_norm : float
        ``‖∇_W L + λW‖_F``: the layer's gradient of the regularised loss (zero at stationarity).
    agop, agop_pow : torch.Tensor or None
        AGOP and ``AGOP^s`` (None when not computed).
    agop_power : float
        The exponent ``s``.
    """

    name: str
    kind: str
    weight_decay: float
    n_samples: int
    wtw: torch.Tensor
    wwt: torch.Tensor
    fact: torch.Tensor
    fact_sym: torch.Tensor
    fact_back: torch.Tensor
    grad_reg_norm: float
    agop: torch.Tensor | None = None
    agop_pow: torch.Tensor | None = None
    agop_power: float = 0.5

    def scores(self) -> dict[str, Any]:
        """One table row: shape, stationarity and every agreement score of this layer."""
        lam = self.weight_decay
        w_norm = math.sqrt(float(torch.trace(self.wtw)))
        row: dict[str, Any] = {
            "layer": self.name,
            "kind": self.kind,
            "out": self.wwt.shape[0],
            "in": self.wtw.shape[0],
            "weight_decay": lam,
            "n_samples": self.n_samples,
            "grad_reg_norm": self.grad_reg_norm,
            # relative stationarity ‖∇_W L + λW‖ / ‖λW‖
            "stationarity": self.grad_reg_norm / (lam * w_norm) if lam > 0 and w_norm > 0
            else float("nan"),
        }
        pairs = [("fact", self.fact, self.wtw), ("fact_sym", self.fact_sym, self.wtw),
                 ("fact_back", self.fact_back, self.wwt)]
        for key, A, ref in pairs:
            row[f"{key}_pearson"] = pearson(A, ref)
            row[f"{key}_cosine"] = cosine(A, ref)
            row[f"{key}_relerr"] = relative_error(A, ref) if lam > 0 else float("nan")
        for key, A in (("agop", self.agop), ("nfa", self.agop_pow)):
            row[f"{key}_pearson"] = pearson(A, self.wtw) if A is not None else float("nan")
            row[f"{key}_cosine"] = cosine(A, self.wtw) if A is not None else float("nan")
        return row


@dataclass
class FactDiagnostics:
    """FACT/NFA diagnostics of every examined layer.

    ``result.table()`` gives one dict per layer (see :meth:`LayerDiagnostics.scores`; ``nfa_*``
    refers to ``AGOP^s`` and ``agop_*`` to the AGOP itself), ``result.to_dataframe()`` the same as
    a pandas DataFrame, ``result["fc1"]`` one layer's matrices, ``result.plot()`` a bar chart.
    """

    layers: list[LayerDiagnostics]
    warnings: list[str] = field(default_factory=list)

    def __getitem__(self, name: str) -> LayerDiagnostics:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer named {name!r}; have {[ly.name for ly in self.layers]}")

    def __len__(self) -> int:
        return len(self.layers)

    def table(self) -> list[dict[str, Any]]:
        """One row (dict) per layer, in network order."""
        return [layer.scores() for layer in self.layers]

    def to_dataframe(self) -> Any:
        """The table as a ``pandas.DataFrame`` indexed by layer name."""
        import pandas as pd

        return pd.DataFrame(self.table()).set_index("layer")

    def plot(self, ax: Any = None, metric: str = "pearson") -> Any:
        """Bar chart of FACT and NFA agreement per layer; returns the matplotlib Axes."""
        from factrfm.nn.plotting import plot_layer_agreement

        return plot_layer_agreement(self.table(), ax=ax, metric=metric)


def iter_batches(
    data: Any, batch_size: int | None = None
) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """Batches ``(x, y)`` from a data loader (any iterable of pairs) or a tuple ``(X, Y)``.

    A tuple of two tensors is cut into batches of ``batch_size`` rows (all rows when None).
    """
    pair = isinstance(data, tuple) and len(data) == 2
    if pair and all(isinstance(t, torch.Tensor) for t in data):
        X, Y = data
        if X.shape[0] != Y.shape[0]:
            raise ValueError(f"data: X has {X.shape[0]} rows but Y has {Y.shape[0]}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        bs = X.shape[0] if batch_size is None else batch_size
        return [(X[i:i + bs], Y[i:i + bs]) for i in range(0, X.shape[0], bs)]
    if isinstance(data, torch.Tensor) or not isinstance(data, Iterable):
        raise TypeError(
            "data must be a DataLoader (iterable of (x, y) batches) or a tuple (X, Y) of tensors, "
            f"got {type(data).__name__}"
        )
    return data


def _resolve_decay(
    specs: Sequence[LayerSpec],
    weight_decay: float | Mapping[str, float] | None,
    optimizer: torch.optim.Optimizer | None,
) -> tuple[dict[str, float], list[str]]:
    if (weight_decay is None) == (optimizer is None):
        raise ValueError(
            "pass exactly one of weight_decay= (the λ of the coupled L2 term) or optimizer= "
            "(λ is read from its param groups)"
        )
    lams: dict[str, float] = {}
    coupled: dict[str, bool | None] = {}
    if optimizer is not None:
        info = optimizer_weight_decay(optimizer, [s.param for s in specs])
        for s in specs:
            lams[s.name], coupled[s.name] = info[id(s.param)]
    elif isinstance(weight_decay, Mapping):
        missing = [s.name for s in specs if s.name not in weight_decay]
        if missing:
            raise ValueError(f"weight_decay has no value for layer(s) {missing}")
        for s in specs:
            lams[s.name], coupled[s.name] = float(weight_decay[s.name]), True
    else:
        for s in specs:
            lams[s.name], coupled[s.name] = float(weight_decay), True  # type: ignore[arg-type]
    for name, lam in lams.items():
        if not (math.isfinite(lam) and lam >= 0):
            raise ValueError(f"weight_decay for layer {name!r} must be finite and >= 0, got {lam}")
    # one warning per distinct problem, naming the layers it concerns
    groups: dict[tuple[bool, bool | None], list[str]] = {}
    for s in specs:
        key = (lams[s.name] == 0.0, coupled[s.name])
        if key != (False, True):
            groups.setdefault(key, []).append(s.name)
    msgs: list[str] = []
    for (zero, cpl), names in groups.items():
        where = f"layer(s) {', '.join(names)}"
        if optimizer is not None:
            where = f"{type(optimizer).__name__}, {where}"
        msgs += check_weight_decay(0.0 if zero else 1.0, cpl, where)
    return lams, msgs


def _zeros_like_matrix(n: int, device: torch.device) -> torch.Tensor:
    return torch.zeros(n, n, dtype=torch.float64, device=device)


def fact_diagnostics(
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
    progress: bool = False,
) -> FactDiagnostics:
    """FACT and NFA diagnostics for every weight matrix of a model.

    Parameters
    ----------
    model : nn.Module
        The trained network.
    data : DataLoader or tuple (X, Y)
        The training data (FACT is a statement about the training objective). Streamed once.
    loss_fn : callable
        Per-sample loss: ``loss_fn(output, target)`` returns shape ``(batch,)``. The training
        objective must be the mean of these over the data plus ``(λ/2)‖θ‖²``.
    weight_decay : float or mapping, optional
        λ (or ``{layer name: λ}``). Exactly one of ``weight_decay`` and ``optimizer``.
    optimizer : torch.optim.Optimizer, optional
        Read λ from its param groups; warns (:class:`FactAssumptionWarning`) when the decay is
        decoupled (AdamW), unknown, or zero.
    layers : sequence of str, optional
        Module or parameter names (see :func:`factrfm.nn.layers.find_layers`); default every
        Linear/Conv1d/Conv2d.
    agop : bool
        Also compute the AGOP (one extra backward pass per model output per batch).
    agop_power : float
        The NFA exponent ``s`` of ``AGOP^s``.
    batch_size : int, optional
        Batch size when ``data`` is a tuple of tensors (default: one batch).
    device : torch.device or str, optional
        Device to move batches to (default: the model's).
    progress : bool
        Show a tqdm bar over batches.

    Returns
    -------
    FactDiagnostics
    """
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    if not agop_power > 0:
        raise ValueError(f"agop_power must be positive, got {agop_power}")
    specs = find_layers(model, layers)
    lams, msgs = _resolve_decay(specs, weight_decay, optimizer)
    batches = iter_batches(data, batch_size)
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)

    params = [s.param for s in specs]
    grad_sum = [torch.zeros(s.param.shape, dtype=torch.float64, device=device) for s in specs]
    agop_specs = [s for s in specs if s.module is not None] if agop else []
    zz_sum = {s.name: _zeros_like_matrix(s.param.shape[0], device) for s in agop_specs}
    captured: dict[str, list[torch.Tensor]] = {}

    def make_hook(name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _inp: Any, out: torch.Tensor) -> None:
            captured.setdefault(name, []).append(out)

        return hook

    handles = [s.module.register_forward_hook(make_hook(s.name)) for s in agop_specs]
    was_training = model.training
    model.eval()
    n = 0
    try:
        it = batches
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(batches, desc="FACT diagnostics", leave=False)
        for batch in it:
            if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
                raise TypeError("data must yield (x, y) pairs")
            x, y = batch[0].to(device), batch[1].to(device)
            captured.clear()
            with torch.enable_grad():
                out = model(x)
                losses = loss_fn(out, y)
                b = x.shape[0]
                if not isinstance(losses, torch.Tensor) or losses.shape != (b,):
                    shape = tuple(losses.shape) if isinstance(losses, torch.Tensor) else losses
                    raise ValueError(
                        f"loss_fn must return one loss per sample, shape ({b},), got {shape}; use "
                        "reduction='none' and reduce over output dimensions yourself (for "
                        "nn.MSELoss() training use factrfm.nn.mse_per_sample)"
                    )
                if not torch.isfinite(losses).all():
                    raise ValueError("loss_fn returned non-finite losses; the model diverged?")
                grads = torch.autograd.grad(
                    losses.sum(), params, retain_graph=bool(agop_specs), allow_unused=True
                )
                for acc, g in zip(grad_sum, grads, strict=True):
                    if g is not None:
                        acc += g.to(torch.float64)
                if agop_specs:
                    _accumulate_agop(out, agop_specs, captured, zz_sum)
            n += b
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
        captured.clear()
    if n == 0:
        raise ValueError("data is empty")

    results = []
    for s, gsum in zip(specs, grad_sum, strict=True):
        lam = lams[s.name]
        W = s.matrix().to(device)
        G = s.as_matrix(gsum) / n  # ∇_W L, mean data loss
        scale = 1.0 / lam if lam > 0 else 1.0
        fact = -scale * (W.T @ G)
        fact_back = -scale * (W @ G.T)
        A = Ap = None
        if s.name in zz_sum:
            A = W.T @ (zz_sum[s.name] / n) @ W
            Ap = psd_power(A, agop_power)
        results.append(LayerDiagnostics(
            name=s.name, kind=s.kind, weight_decay=lam, n_samples=n,
            wtw=(W.T @ W).cpu(), wwt=(W @ W.T).cpu(),
            fact=fact.cpu(), fact_sym=sqrt_aat(fact).cpu(), fact_back=fact_back.cpu(),
            grad_reg_norm=float(torch.linalg.matrix_norm(G + lam * W)),
            agop=None if A is None else A.cpu(), agop_pow=None if Ap is None else Ap.cpu(),
            agop_power=agop_power,
        ))
    return FactDiagnostics(results, msgs)


def _accumulate_agop(
    out: torch.Tensor,
    specs: Sequence[LayerSpec],
    captured: Mapping[str, list[torch.Tensor]],
    zz_sum: dict[str, torch.Tensor],
) -> None:
    """Add Σ_rows g gᵀ (g = ∂f_k/∂(W h) for each output k) to ``zz_sum`` for every layer."""
    flat = out.reshape(out.shape[0], -1)
    c = flat.shape[1]
    outs: list[torch.Tensor] = []
    owners: list[LayerSpec] = []
    for s in specs:
        for z in captured.get(s.name, []):
            if z.requires_grad:
                outs.append(z)
                owners.append(s)
    if not outs:
        return
    for k in range(c):
        gz = torch.autograd.grad(flat[:, k].sum(), outs, retain_graph=k < c - 1, allow_unused=True)
        for s, g in zip(owners, gz, strict=True):
            if g is not None:
                rows = s.output_rows(g).to(torch.float64)
                zz_sum[s.name] += rows.T @ rows
