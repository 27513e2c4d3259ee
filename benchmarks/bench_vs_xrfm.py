"""Time one full fit of our FACT-RFM and NFA-RFM against ``xrfm``'s RFM on the CPU.

Same data, same number of iterations (T fits with M updates, then a final fit), same Laplace
kernel and bandwidth, same single ridge; both keep the iteration best on the same validation set.
xrfm's Laplace kernel measures distances after the map ``x -> x sqrtM`` with
``sqrtM = (AGOP / max)^agop_power``, so its metric is ``(AGOP / max)^(2 agop_power)``: its default
``agop_power=0.5`` is the same algorithm as our NFA-RFM with ``agop_power=1`` (checked: identical
validation accuracy), which is what this script compares. Prints seconds, validation accuracy
and the ratio ours / xrfm per size. xrfm's early stopping is switched off so that both run
every iteration.

    pip install xrfm   # benchmark-only dependency
    python benchmarks/bench_vs_xrfm.py --sizes 2000 5000 10000
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from factrfm import RFMClassifier


def make_data(n: int, d: int, n_val: int, seed: int):
    """A classification target that depends on three directions of a d-dimensional Gaussian."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n + n_val, d)).astype(np.float32)
    score = X[:, 0] * X[:, 1] + np.sin(2 * X[:, 2]) + 0.3 * rng.standard_normal(n + n_val)
    y = (score > 0).astype(np.int64)
    return X[:n], y[:n], X[n:], y[n:]


def fit_ours(rule, X, y, Xv, yv, iters, bandwidth, ridge):
    est = RFMClassifier(rule=rule, kernel="laplace", bandwidth=bandwidth, n_iter=iters,
                        ridge=ridge, agop_power=1.0, preprocessing="none", dtype="float32")
    t0 = time.perf_counter()
    est.fit(X, y, eval_set=(Xv, yv))
    seconds = time.perf_counter() - t0
    return seconds, float(est.score(Xv, yv))


def fit_xrfm(X, y, Xv, yv, iters, bandwidth, ridge):
    from xrfm import RFM

    onehot = np.eye(2, dtype=np.float32)
    model = RFM(kernel="laplace", iters=iters, bandwidth=bandwidth, exponent=1.0,
                agop_power=0.5, device="cpu", verbose=False, tuning_metric="accuracy")
    Xt, Yt = torch.from_numpy(X), torch.from_numpy(onehot[y])
    Xvt, Yvt = torch.from_numpy(Xv), torch.from_numpy(onehot[yv])
    t0 = time.perf_counter()
    model.fit((Xt, Yt), (Xvt, Yvt), reg=ridge, early_stop_rfm=False)
    seconds = time.perf_counter() - t0
    pred = model.predict(Xvt).argmax(1).cpu().numpy()
    return seconds, float(np.mean(pred == yv))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[2000, 5000, 10000])
    p.add_argument("--d", type=int, default=50)
    p.add_argument("--n-val", type=int, default=2000)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--bandwidth", type=float, default=10.0)
    p.add_argument("--ridge", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; d={args.d}, "
          f"iters={args.iters}, Laplace bandwidth={args.bandwidth}, ridge={args.ridge}")
    print(f"{'n':>6} {'method':<14} {'seconds':>8} {'val acc':>8} {'ours/xrfm':>10}")
    for n in args.sizes:
        X, y, Xv, yv = make_data(n, args.d, args.n_val, args.seed)
        common = (X, y, Xv, yv, args.iters, args.bandwidth, args.ridge)
        base_s, base_acc = fit_xrfm(*common)
        print(f"{n:>6} {'xrfm RFM':<14} {base_s:>8.2f} {base_acc:>8.4f} {'1.00':>10}", flush=True)
        for name, rule in [("NFA-RFM", "agop"), ("FACT-RFM", "fact")]:
            s, acc = fit_ours(rule, *common)
            print(f"{n:>6} {name:<14} {s:>8.2f} {acc:>8.4f} {s / base_s:>10.2f}", flush=True)


if __name__ == "__main__":
    main()
