"""`hexray train [CONFIG.yaml] [--set key=value ...] [--resume RUN_DIR]`: pretrain on Ray.

No config → the embedded default (SimCLR + HEX on Fashion-MNIST, local Ray). `--resume RUN_DIR` continues a
stopped run from its latest checkpoint, with that run's saved config (plus any --set overrides).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="pretrain an SSL method (+HEX) with Ray Train",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", help="YAML config (default: the embedded default config)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key, e.g. --set run.epochs=10 (repeatable)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run from its latest checkpoint")
    parser.add_argument("--no-eval", action="store_true", help="skip the final kNN/probe table and its baselines")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from hexray.config import load_config

    if args.resume:
        if args.config:
            raise ValueError("give either CONFIG or --resume RUN_DIR (a resumed run uses its saved config.yaml)")
        config_path = Path(args.resume).expanduser() / "config.yaml"
        if not config_path.is_file():
            raise FileNotFoundError(f"--resume: {args.resume} is not a run directory (no config.yaml)")
        cfg = load_config(str(config_path), args.overrides)
    else:
        if args.config and not Path(args.config).is_file():
            raise FileNotFoundError(f"config file {args.config} does not exist")
        cfg = load_config(args.config, args.overrides)

    from hexray.train.launch import run_training

    result = run_training(cfg, resume_dir=args.resume, final_eval=not args.no_eval)
    print(f"summary: {Path(result.run_dir) / 'summary.json'}", file=sys.stderr)
    if not args.no_eval:
        ev = result.summary.get("evaluation", {})
        print(json.dumps({k: {m: round(v, 4) for m, v in r.items()} for k, r in ev.items()}), file=sys.stderr)
    return 0
