#!/usr/bin/env bash
# The tabular benchmark of issue 4, run by hand (never in CI). Resumable: rerun the same line
# after a kill and only the unfinished (data set, method) jobs run again.
#
#   benchmarks/tabular_uci.sh small       # the 90 Arora et al. sets (<= 5,000 rows, no test file)
#   benchmarks/tabular_uci.sh all         # all 120 sets; above 4,000 training rows the RFM
#                                         # methods search on a sample and fit partitioned models
#   benchmarks/tabular_uci.sh regression  # the 9 regression sets, FACT-RFM / NFA-RFM / XGBoost
#
# Two single-threaded workers use the 2 cores of the reference machine best (small jobs do not
# scale across threads). Add  --scheduler tcp://HOST:8786  to run the jobs on a Dask cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=src
run="python -m factrfm bench"
case "${1:-small}" in
  small)      $run uci121 --datasets arora90 --workers 2 --threads 1 --out results/bench/uci121_arora90 ;;
  all)        $run uci121 --datasets all --workers 2 --threads 1 --out results/bench/uci121_all ;;
  regression) $run uci-regression --methods fact-rfm nfa-rfm-s1 xgboost --workers 2 --threads 1 \
                --out results/bench/uci_regression ;;
  *) echo "usage: $0 small|all|regression" >&2; exit 2 ;;
esac
