"""``factrfm bench``: the tabular benchmark (uci121 classification, uci_regression).

Protocol (uci121, after Fernández-Delgado et al. / Arora et al. / RFM): hyper-parameters are
chosen on the ``conxuntos`` train/validation split; the reported score is the mean test accuracy
over the four ``conxuntos_kfold`` folds with those hyper-parameters. uci_regression: for each of
the fixed train/test splits, hyper-parameters are chosen on a seeded 20 % validation part of the
training part, the model is refitted on the whole training part and its test RMSE recorded; the
report gives mean ± std over splits. No choice of any kind looks at a test part.

Examples
--------
    factrfm bench uci121 --max-rows 5000 --workers 2
    factrfm bench uci121 --datasets arora90
    factrfm bench uci-regression --max-rows 2000 --methods fact-rfm nfa-rfm-s1 xgboost
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from factrfm.experiments.methods import DEFAULT_METHODS, METHOD_GROUPS, METHODS, expand_methods
from factrfm.experiments.runner import SUITES, JobSpec, ResultsStore, run_jobs

__all__ = ["add_arguments", "run", "resolve_datasets", "make_specs"]

#: Data-set groups of ``--datasets`` for uci121 besides ``all``.
UCI121_GROUPS = ("arora90", "multiclass")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``bench`` options to ``parser``."""
    parser.add_argument("suite", choices=sorted(SUITES), help="which benchmark to run")
    parser.add_argument(
        "--data-dir",
        default=None,
        help="shared data folder (holding uci121/); default: FACTRFM_DATA_DIR or "
        "../shared/data next to the repository",
    )
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=None,
        help="data set names, or a group: 'all' (default); uci121 also 'arora90' (the 90 sets "
        "with at most 5,000 rows and no separate test file) and 'multiclass' (3 or more "
        "classes)",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        default=None,
        choices=sorted(METHODS) + sorted(METHOD_GROUPS),
        metavar="METHOD",
        help=f"methods (default: {', '.join(DEFAULT_METHODS)}; also: "
        f"{', '.join(sorted(set(METHODS) - set(DEFAULT_METHODS)))}), or a group: "
        + "; ".join(f"'{g}' ({', '.join(ms)})" for g, ms in METHOD_GROUPS.items()),
    )
    parser.add_argument(
        "--max-rows", type=int, default=None, help="skip data sets with more rows than this"
    )
    parser.add_argument(
        "--splits",
        type=int,
        default=None,
        help="uci-regression: use only the first N fixed splits (default all)",
    )
    parser.add_argument("--out", default=None, help="output folder (default results/bench/<suite>)")
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="local worker processes, one job each (default: one per core; 1 runs the jobs in "
        "this process). Small jobs do not scale across threads, so one single-threaded job per "
        "core uses a machine best",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads per job (default: cores // workers, at least 1)",
    )
    parser.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="run the jobs on an existing Dask scheduler, e.g. tcp://host:8786",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--no-figures", action="store_true", help="write numbers only")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="write the report from the existing records, run nothing",
    )


def resolve_datasets(
    suite: str, names: list[str] | None, root: str, max_rows: int | None
) -> list[str]:
    """The data sets of a run: named ones or a group, filtered by ``max_rows``, smallest first.

    Raises
    ------
    ValueError
        If a name is not a data set of the suite, or ``max_rows`` is not positive.
    """
    from factrfm.datasets import uci

    if suite == "uci121":
        available = uci.list_uci121(root, max_rows=max_rows)
    else:
        available = uci.list_uci_regression(root, max_rows=max_rows)
    if not names or names == ["all"]:
        return available
    if len(names) == 1 and names[0] in UCI121_GROUPS:
        if suite != "uci121":
            raise ValueError(f"datasets: the group {names[0]!r} exists only for uci121")
        if names[0] == "arora90":
            return uci.list_uci121(root, max_rows=max_rows, arora90=True)
        return uci.list_uci121(root, max_rows=max_rows, min_classes=3)
    known = set(uci.list_uci121(root) if suite == "uci121" else uci.list_uci_regression(root))
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"datasets: unknown {suite} data sets {unknown}")
    keep = set(names)
    return [n for n in available if n in keep]


def make_specs(
    suite: str,
    datasets: list[str],
    methods: list[str],
    root: str,
    threads: int,
    n_splits: int | None = None,
) -> list[JobSpec]:
    """One job per (data set, method), data sets outermost (all methods of a set finish close
    together, so partial runs give comparable rows)."""
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"methods: unknown method {m!r}; known: {', '.join(METHODS)}")
    return [
        JobSpec(suite, d, m, root, threads, n_splits if suite == "uci-regression" else None)
        for d in datasets
        for m in methods
    ]


def run(args: argparse.Namespace) -> int:
    """Run (or resume) the benchmark, then write its report; returns 0, or 1 if a job failed."""
    from factrfm.datasets.paths import data_dir
    from factrfm.experiments.report import write_report

    root = str(data_dir(args.data_dir))
    out = Path(args.out or Path("results") / "bench" / args.suite)
    if args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    if args.splits is not None and args.splits < 1:
        raise ValueError(f"--splits must be at least 1, got {args.splits}")
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.workers)
    if threads < 1:
        raise ValueError(f"--threads must be at least 1, got {threads}")
    methods = expand_methods(args.methods or list(DEFAULT_METHODS))
    datasets = resolve_datasets(args.suite, args.datasets, root, args.max_rows)
    if not datasets:
        raise ValueError("datasets: no data set left after --datasets / --max-rows")
    _check_config(out, args.suite, args.splits)
    failed = 0
    if not args.report_only:
        specs = make_specs(args.suite, datasets, methods, root, threads, args.splits)
        summary = run_jobs(
            specs,
            out,
            workers=args.workers,
            scheduler=args.scheduler,
            progress=not args.no_progress,
        )
        failed = summary["failed"]
        print(
            f"{summary['done']} jobs done, {summary['skipped']} already recorded, "
            f"{failed} failed (see {out / 'errors.jsonl'}), {summary['wall_seconds']:.0f} s"
        )
    wanted = set(datasets)
    records = [
        r
        for r in ResultsStore(out / "results.jsonl").load()
        if r["dataset"] in wanted and r["method"] in methods
    ]
    if records:
        rep = write_report(
            records, out / "report", args.suite, methods=methods, figures=not args.no_figures
        )
        print((out / "report" / "summary.md").read_text())
        print(f"report: {out / 'report'} ({rep['n_records']} records)")
    return 1 if failed else 0


def _check_config(out: Path, suite: str, n_splits: int | None) -> None:
    """Refuse to mix records of different protocols in one output folder."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    path = out / "config.json"
    config = {"suite": suite, "n_splits": n_splits if suite == "uci-regression" else None}
    if path.exists():
        old = json.loads(path.read_text())
        if old != config:
            raise ValueError(
                f"out: {str(out)!r} holds records of another protocol {old}; this run is {config}. "
                "Use another --out."
            )
    else:
        path.write_text(json.dumps(config))
