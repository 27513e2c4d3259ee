"""The ``factrfm`` command line: one subcommand per job, each a thin wrapper.

Every subcommand lives in a module that defines ``add_arguments(parser)`` and ``run(args)``; the
module is imported only when its subcommand is chosen, so ``factrfm --help`` stays fast and a
subcommand's heavy dependencies are never loaded by another.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("factrfm.experiments.demo", "fit FACT-RFM, NFA-RFM and kernel ridge on bundled data"),
    "nn-check": ("factrfm.experiments.networks", "FACT vs NFA, per layer, of a trained MLP"),
    "bench": ("factrfm.experiments.tabular", "tabular benchmark: uci121 or uci-regression"),
    "grokking": ("factrfm.experiments.grokking", "grokking of modular arithmetic (FACT/NFA-RFM)"),
    "parity": ("factrfm.experiments.parity", "sparse parity: the sample-size phase transition"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="factrfm", description="FACT-RFM kernel machines and FACT diagnostics."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        sp.set_defaults(_module=module_name)
        # Arguments are added lazily in main() for the chosen command only.
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # First pass: find the subcommand without parsing its own options.
    if not argv or argv[0].startswith("-"):
        parser.parse_args(argv)  # prints help / error and exits
    name = argv[0]
    if name not in COMMANDS:
        parser.parse_args(argv)  # argparse reports the invalid choice
    module = importlib.import_module(COMMANDS[name][0])
    sp = argparse.ArgumentParser(prog=f"factrfm {name}", description=COMMANDS[name][1])
    module.add_arguments(sp)
    args = sp.parse_args(argv[1:])
    result = module.run(args)
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
