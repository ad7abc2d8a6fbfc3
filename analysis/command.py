"""`gumbel-study report`: the subcommand analysis plugs into the CLI.

study/cli.py never imports analysis; it finds this module through the entry point

    [project.entry-points."gumbel_study.commands"]
    report = "analysis.command:add_command"

and calls `add_command(subparsers)`, which registers `report RUN [RUN ...] [--out DIR]` with
`func(args) -> int` as its handler. Importing this module is cheap (argparse only): pandas,
matplotlib and pyarrow load when the command runs, not on every `gumbel-study` call.

Exit codes: 0 with the report written; 2 with one line `gumbel-study: error: RUN_DIR='x': <cause>`
(or `--out=None: ...`) for a RUN that does not exist, holds no trial, or cannot be reached.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_command", "main", "report_command"]

EXIT_BAD_INPUT = 2

_DESCRIPTION = """\
Figures (PNG + PDF), tables (CSV), data (parquet) and a self-contained index.html from one or
more run directories: a Tune experiment (`gumbel-study run`) or a `gumbel-study train` output,
as local paths or cloud URIs (s3://, gs://, ...). Several runs (a grid and its follow-up) are
read as one study, told apart by a `run` column. Nothing is trained."""


def _fail(message: str) -> int:
    print(f"gumbel-study: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def report_command(args: argparse.Namespace) -> int:
    """The handler: check every RUN, write the report, print where it is."""
    from analysis.record import RunDirError

    runs = list(args.run_dirs)
    if len(runs) > 1 and not args.out:
        return _fail(f"--out=None: {len(runs)} runs make one report; say where it goes with --out DIR")
    try:
        for run in runs:
            if "://" in run:
                from study.config import ConfigError
                from study.preflight import check_storage

                try:
                    check_storage(run, "RUN_DIR", must_exist=True)  # reachable, and there
                except ConfigError as err:
                    return _fail(str(err))
        from analysis.report import write_report

        out = write_report(runs, args.out)
    except RunDirError as err:
        return _fail(str(err))
    print(f"report: {out / 'index.html'}")
    return 0


def add_command(subparsers: argparse._SubParsersAction) -> None:
    """Register `report RUN [RUN ...] [--out DIR]` on the CLI's subparsers."""
    p = subparsers.add_parser(
        "report", help="figures, tables and index.html from one or more run directories", description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN", help="a run directory or URI (several: one report of them all)")
    p.add_argument(
        "--out", metavar="DIR",
        help="where the report goes (default for one run: RUN/report, or ./report-NAME for a URI; required with several runs)",
    )
    p.set_defaults(func=report_command)


def main(argv: list[str] | None = None) -> int:
    """`python -m analysis.command RUN [RUN ...] [--out DIR]`: the subcommand without study's CLI."""
    parser = argparse.ArgumentParser(prog="gumbel-study")
    add_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
