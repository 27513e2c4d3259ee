"""Reference networks and training loops for FACT experiments: an MLP, the per-sample MSE, and a
full-batch L-BFGS polish that drives the gradient of the regularised loss to (near) zero."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["mlp", "mse_per_sample", "regularised_loss", "regularised_grad_norm", "lbfgs_polish"]


def mlp(
    d_in: int,
    width: int,
    depth: int,
    d_out: int,
    activation: type[nn.Module] = nn.ReLU,
    bias: bool = True,
) -> nn.Sequential:
    """A fully connected network with ``depth`` hidden layers of ``width`` units.

    Layers are named ``fc0 … fc{depth}`` (``fc{depth}`` is the readout) and ``act0 …``.

    Parameters
    ----------
    d_in, width, depth, d_out : int
        Input size, hidden width, number of hidden layers (>= 0), output size.
    activation : type of nn.Module
        Activation class (default ReLU).
    bias : bool
        Whether the linear layers have biases.

    Returns
    -------
    nn.Sequential
    """
    for name, v, lo in (("d_in", d_in, 1), ("width", width, 1), ("depth", depth, 0),
                        ("d_out", d_out, 1)):
        if not isinstance(v, int) or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    mods: OrderedDict[str, nn.Module] = OrderedDict()
    prev = d_in
    for i in range(depth):
        mods[f"fc{i}"] = nn.Linear(prev, width, bias=bias)
        mods[f"act{i}"] = activation()
        prev = width
    mods[f"fc{depth}"] = nn.Linear(prev, d_out, bias=bias)
    return nn.Sequential(OrderedDict(mods))


def mse_per_sample(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample squared error averaged over outputs: its mean over samples is ``nn.MSELoss()``.

    Parameters
    ----------
    output, target : torch.Tensor
        Shape ``(batch, ...)``, equal shapes.

    Returns
    -------
    torch.Tensor
        Shape ``(batch,)``.
    """
    if output.shape != target.shape:
        raise ValueError(
            f"output has shape {tuple(output.shape)} but target has {tuple(target.shape)}"
        )
    return (output - target).pow(2).reshape(output.shape[0], -1).mean(1)


LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def regularised_loss(
    model: nn.Module, X: torch.Tensor, Y: torch.Tensor, loss_fn: LossFn, weight_decay: float
) -> torch.Tensor:
    """``(1/n) Σ_i ℓ_i + (λ/2) ‖θ‖²`` over every parameter θ of the model (biases included)."""
    data = loss_fn(model(X), Y).mean()
    reg = sum(p.pow(2).sum() for p in model.parameters() if p.requires_grad)
    return data + 0.5 * weight_decay * reg


def regularised_grad_norm(
    model: nn.Module, X: torch.Tensor, Y: torch.Tensor, loss_fn: LossFn, weight_decay: float
) -> float:
    """Euclidean norm of the full-batch gradient of :func:`regularised_loss`."""
    return _loss_and_grad_norm(model, X, Y, loss_fn, weight_decay)[1]


def _loss_and_grad_norm(
    model: nn.Module, X: torch.Tensor, Y: torch.Tensor, loss_fn: LossFn, weight_decay: float
) -> tuple[float, float]:
    params = [p for p in model.parameters() if p.requires_grad]
    loss = regularised_loss(model, X, Y, loss_fn, weight_decay)
    grads = torch.autograd.grad(loss, params)
    return float(loss.detach()), float(torch.sqrt(sum(g.pow(2).sum() for g in grads)))


def lbfgs_polish(
    model: nn.Module,
    X: torch.Tensor,
    Y: torch.Tensor,
    loss_fn: LossFn,
    weight_decay: float,
    *,
    tol: float = 1e-9,
    max_iter: int = 2000,
    chunk: int = 50,
    history_size: int = 50,
    callback: Callable[[int, float], bool | None] | None = None,
) -> tuple[float, int]:
    """Full-batch L-BFGS (strong Wolfe line search) on the regularised loss until its gradient
    norm is below ``tol``.

    Parameters
    ----------
    model : nn.Module
        Trained in place (use float64 for tight tolerances).
    X, Y : torch.Tensor
        The whole training set.
    loss_fn : callable
        Per-sample loss, shape ``(batch,)``.
    weight_decay : float
        λ of the coupled L2 term.
    tol : float
        Stop when ``‖∇(L + λ/2 ‖θ‖²)‖ < tol``.
    max_iter : int
        Maximum number of L-BFGS iterations in total.
    chunk : int
        Iterations per ``optimizer.step`` call; ``callback(iterations_done, grad_norm)`` runs after
        each chunk and may return True to stop.
    history_size : int
        L-BFGS memory.

    Returns
    -------
    (grad_norm, iterations) : tuple of float and int
    """
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.LBFGS(
        params, lr=1.0, max_iter=chunk, history_size=history_size,
        tolerance_grad=tol / 10, tolerance_change=0.0, line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = regularised_loss(model, X, Y, loss_fn, weight_decay)
        loss.backward()
        return loss

    done = 0
    best, gnorm = _loss_and_grad_norm(model, X, Y, loss_fn, weight_decay)
    stalled = 0
    while done < max_iter and gnorm >= tol:
        opt.param_groups[0]["max_iter"] = min(chunk, max_iter - done)
        opt.step(closure)
        done = int(opt.state[params[0]].get("n_iter", done + chunk))
        loss, gnorm = _loss_and_grad_norm(model, X, Y, loss_fn, weight_decay)
        if callback is not None and callback(done, gnorm):
            break
        stalled = stalled + 1 if loss >= best else 0
        best = min(best, loss)
        if stalled >= 3:  # the loss stopped decreasing: the round-off floor is reached
            break
    return gnorm, done
