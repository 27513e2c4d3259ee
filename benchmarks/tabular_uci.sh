#!/usr/bin/env bash
# The tabular benchmark of issue 4, run by hand (never in CI). Resumable: rerun the same line
# after a kill and only the unfinished (data set, method) jobs run again.
#
#   benchmarks/tabular_uci.sh small     # the 90 Arora et al. sets (<= 5,000 rows, no test file)
#   benchmarks/tabular_uci.sh all       # all 120 sets (the largest need the scaling work)
#   benchmarks/tabular_uci.sh regression
#
# Workers x threads should not exceed the cores (2 here): 1 worker x 2 threads by default.
# Add  --scheduler tcp://HOST:8786  to run the jobs on an existing Dask cluster instead.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=src
case "${1:-small}" in
  small)      python -m factrfm bench uci121 --datasets arora90 --workers 1 --threads 2 ;;
  all)        python -m factrfm bench uci121 --datasets all --workers 1 --threads 2 ;;
  regression) python -m factrfm bench uci-regression --max-rows 12000 \
                --methods fact-rfm nfa-rfm-s1 nfa-rfm-s0.5 laplace xgboost --workers 1 --threads 2 ;;
  *) echo "usage: $0 small|all|regression" >&2; exit 2 ;;
esac
