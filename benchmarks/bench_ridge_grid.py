"""Choosing the ridge from a grid: one Cholesky per ridge against one ``eigh`` for the whole grid.

Prints the seconds of each way for a grid of 5 ridges, and the size of grid at which the single
eigendecomposition would break even. This is what sets ``fit_rfm(..., ridge_solver="cholesky")``
as the default on CPUs.

    python benchmarks/bench_ridge_grid.py --sizes 1000 2000 4000
"""

from __future__ import annotations

import argparse
import time

import torch

from factrfm.kernels import LaplaceKernel
from factrfm.solvers import RidgePath, solve_cholesky


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 4000])
    p.add_argument("--d", type=int, default=20)
    p.add_argument("--ridges", type=float, nargs="+", default=[10, 1, 0.1, 0.01, 0.001])
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    args = p.parse_args()
    dtype = getattr(torch, args.dtype)
    g = torch.Generator().manual_seed(0)
    print(f"{'n':>6} {'cholesky x' + str(len(args.ridges)):>14} {'eigh + grid':>12} "
          f"{'eigh/chol':>10} {'break-even grid':>16}")
    for n in args.sizes:
        X = torch.randn(n, args.d, generator=g, dtype=dtype)
        Y = torch.randn(n, 2, generator=g, dtype=dtype)
        K = LaplaceKernel(10.0).matrix(X, X, torch.eye(args.d, dtype=dtype))
        t0 = time.perf_counter()
        for r in args.ridges:
            solve_cholesky(K, Y, r)
        chol = time.perf_counter() - t0
        t0 = time.perf_counter()
        path = RidgePath(K, Y)
        for r in args.ridges:
            path.coefficients(r)
        eig = time.perf_counter() - t0
        per_chol = chol / len(args.ridges)
        print(f"{n:>6} {chol:>14.3f} {eig:>12.3f} {eig / chol:>10.1f} {eig / per_chol:>16.0f}")


if __name__ == "__main__":
    main()
