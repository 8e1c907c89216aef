"""`hexray report RUN_DIRS... --out DIR`: a Markdown comparison (method × base/HEX, mean ± std over seeds) with
plots, for any set of run dirs or a sweep's experiment dir (searched for run dirs)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("report", help="Markdown comparison of runs (base vs HEX, mean ± std over seeds)",
                              description=__doc__)
    p.add_argument("paths", nargs="+", help="run directories and/or directories holding runs (a sweep's dir)")
    p.add_argument("--out", required=True,
                   help="a directory (report.md and plots/ inside) or a .md file (plots in <folder>/<stem>/plots/; "
                        "a file holding the `hexray report: begin/end` marks keeps its text outside them)")
    p.add_argument("--title", default="hexray report", help="the report's heading")
    p.add_argument("--compare", action="append", default=[], metavar="'ARM vs CONTROL'",
                   help="also difference these two sweep arms by seed (repeatable), e.g. 'HEX released vs DCL' "
                        "(HEX against its control without H(i)); 'METHOD: ARM vs CONTROL' for one method only")
    p.add_argument("--no-plots", dest="plots", action="store_false", help="write report.md only, no PNG plots")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from hexray.eval.report import write_report

    path = write_report(args.paths, args.out, title=args.title, plots=args.plots, compare=args.compare)
    print(path.read_text().split("## Runs")[0].rstrip())
    print(f"\nwrote {path}")
    return 0
