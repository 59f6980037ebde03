"""``side4video ablation``: every variant of an ablation file trained side by side on ONE frozen-backbone pass per
batch, tested, and reported (see ``side4video/ablation/`` for the file format and what is measured)::

    side4video ablation --config configs/toy/ablation.yaml [--out DIR] [--opts KEY=VALUE ...] [--only NAME ...]
                        [--report PATH | --no-report] [--no-check]
"""
from __future__ import annotations

import argparse
from typing import Sequence

from ..ablation import load_ablation, run_ablation
from ..ablation.report import command_line
from .common import run_command


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="side4video ablation", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="the ablation YAML (base config + variants)")
    parser.add_argument("--out", default=None, help="output folder (default: the ablation YAML's 'output', else "
                                                    "exp/ablation/<name>)")
    parser.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE",
                        help="overrides of the base config, for every variant (a variant's own keys still win; "
                             "solver.epochs here wins over the file's budget.epochs)")
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME", help="run only these variants")
    parser.add_argument("--report", default=None, help="also write the report here (default: the YAML's 'report')")
    parser.add_argument("--no-report", action="store_true", help="write the report only into the output folder")
    parser.add_argument("--no-check", action="store_true", help="skip timing.check (the real separate-run "
                                                                "measurement)")
    args = parser.parse_args(argv)
    command = command_line(argv)

    def body() -> int:
        spec = load_ablation(args.config, args.opts, args.only)
        report = None if args.no_report else (args.report or spec.report)
        results = run_ablation(spec, args.out, report=report, check=not args.no_check, command=command)
        print(f"done: {results['num_variants']} variants -> {results['output']}/ablation.md")
        return 0

    return run_command(body)


if __name__ == "__main__":
    raise SystemExit(main())
