#!/usr/bin/env bash
# The tabular benchmark of issue 4, run by hand (never in CI). Resumable: rerun the same line
# after a kill and only the unfinished (data set, method) jobs run again.
#
#   benchmarks/tabular_uci.sh small       # the 90 Arora et al. sets (<= 5,000 rows, no test file)
#   benchmarks/tabular_uci.sh all         # all 120 sets; above 4,000 training rows the RFM
#                                         # methods search on a sample and fit partitioned models
#   benchmarks/tabular_uci.sh regression  # the 9 regression sets, FACT-RFM / NFA-RFM / XGBoost
#   benchmarks/tabular_uci.sh ablation    # M's normalisation and the bandwidth grid, 90 sets
#   benchmarks/tabular_uci.sh per-output  # FACT per output on the 67 multi-class sets
#   benchmarks/tabular_uci.sh keep        # copy the records to benchmarks/records/
#
# Then  python benchmarks/uci_analysis.py results/bench/uci121_all [results/bench/ablation_arora90]
# prints the measurements behind the closing note's explanations.
#
# Two single-threaded workers use the 2 cores of the reference machine best (small jobs do not
# scale across threads). Add  --scheduler tcp://HOST:8786  to run the jobs on a Dask cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=src
run="python -m factrfm bench"
case "${1:-small}" in
  small)      $run uci121 --datasets arora90 --workers 2 --threads 1 --out results/bench/uci121_arora90 ;;
  all)        # The kernel methods first (the FACT / NFA comparison), then the baselines, whose
              # fits on the largest sets cost the most; all records go to one file.
              for methods in kernel baselines; do
                $run uci121 --datasets all --methods $methods --workers 2 --threads 1 \
                  --out results/bench/uci121_all
              done ;;
  regression) # The five sets of <= 1,599 rows on all 20 splits; the four larger ones on their first
              # 5 splits (all 20 of kin8nm, power and naval cost ~1.5 h per RFM method here).
              $run uci-regression --methods fact-rfm nfa-rfm-s1 xgboost --workers 2 --threads 1 \
                --datasets yacht bostonHousing energy concrete wine-quality-red \
                --out results/bench/uci_regression
              $run uci-regression --methods fact-rfm nfa-rfm-s1 xgboost --workers 2 --threads 1 \
                --datasets kin8nm power-plant naval-propulsion-plant protein-tertiary-structure \
                --splits 5 --out results/bench/uci_regression_large5 ;;
  ablation)   # The normalisation and bandwidth-grid ablations of FACT-RFM and NFA-RFM (s = 1).
              $run uci121 --datasets arora90 --methods fact-rfm-median nfa-rfm-s1-median \
                fact-rfm-wide nfa-rfm-s1-wide --workers 2 --threads 1 \
                --out results/bench/ablation_arora90
              # The Laplace kernel at the single bandwidth L = 10 of the original RFM code.
              $run uci121 --datasets all --methods laplace-l10 --workers 2 --threads 1 \
                --out results/bench/laplace_l10_all ;;
  per-output) # FACT-RFM with M <- (sum_k F_k F_k^T)^{1/2} over the classes' FACT matrices, where
              # FACT-RFM trails NFA-RFM (compare with uci121_all: benchmarks/uci_analysis.py).
              $run uci121 --datasets multiclass --methods fact-rfm-per-output --workers 2 \
                --threads 1 --out results/bench/per_output_mc ;;
  keep)       # Copy every run's records to benchmarks/records/ (committed: the closing notes'
              # figures are recomputed from them, and a run resumes from a copy put back with
              #   gunzip -c benchmarks/records/NAME.jsonl.gz > results/bench/NAME/results.jsonl).
              mkdir -p benchmarks/records
              for f in results/bench/*/results.jsonl; do
                name=$(basename "$(dirname "$f")")
                gzip -9nc "$f" > "benchmarks/records/$name.jsonl.gz"
              done ;;
  *) echo "usage: $0 small|all|regression|ablation|per-output|keep" >&2; exit 2 ;;
esac
