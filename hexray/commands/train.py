"""`hexray train [CONFIG.yaml] [--set key=value ...] [--resume RUN_DIR]`: pretrain on Ray.

No config → the embedded default (SimCLR + HEX on Fashion-MNIST, local Ray). CONFIG is a YAML file or a shipped
preset's name (imagenet-simclr-hex, imagenet-simclr, fashion-mnist-long). `--resume RUN_DIR` (a local path or a
URI such as s3://bucket/runs/NAME) continues a stopped run from its latest checkpoint, with that run's saved
config (plus any --set overrides). `--check` validates the config and prints the resolved tree without starting
anything.
"""

from __future__ import annotations

import argparse
import json
import sys

from hexray.errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="pretrain an SSL method (+HEX) with Ray Train",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?",
                        help="YAML config or preset name (None: the embedded default config)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key, e.g. --set run.epochs=10 (repeatable)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run from its latest checkpoint")
    parser.add_argument("--no-eval", action="store_true", help="skip the final kNN/probe table and its baselines")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show Ray's own console output (start-up, workers' logs, Ray Data); otherwise it goes to "
                             "<run dir>/hexray.log")
    parser.add_argument("--json", action="store_true",
                        help="end with summary.json's content on stdout (after the table)")
    parser.add_argument("--check", action="store_true",
                        help="validate the config and what the run would read (dataset, path, splits), print the "
                             "resolved tree and exit (starts no Ray, writes nothing)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from hexray.config import load_config, resolve_config_path

    if args.resume:
        if args.config:
            raise InputError("give either CONFIG or --resume RUN_DIR (a resumed run uses its saved config.yaml)")
        from hexray import storage

        config_path = storage.join(storage.normalize(args.resume), "config.yaml")  # local or s3://.../RUN
        if not storage.is_file(config_path):
            raise FileNotFoundError(f"--resume: {args.resume} is not a run directory (no config.yaml)")
        cfg = load_config(config_path, args.overrides)
    else:
        cfg = load_config(resolve_config_path(args.config) if args.config else None, args.overrides)
    if args.check:
        return _check(cfg)

    from hexray.train.launch import run_training

    result = run_training(cfg, resume_dir=args.resume, final_eval=not args.no_eval, verbose=args.verbose)
    run_dir, summary = result.run_dir.rstrip("/"), result.summary
    _stop_ray_quietly(result.run_dir, verbose=args.verbose)
    print(f"\nsummary: {run_dir}/summary.json  (log: {run_dir}/hexray.log)")
    if summary.get("plot"):
        print(f"training curves: {summary['plot']}")
    if "tensorboard" in cfg.run.loggers:
        print(f"TensorBoard: tensorboard --logdir {run_dir}")
    if summary.get("evaluation"):
        from hexray.train.final_eval import format_table

        print("\n" + format_table(summary["evaluation"]))
    if args.json:
        print(json.dumps(summary, indent=1))
    sys.stdout.flush()
    return 0


def _stop_ray_quietly(run_dir: str, *, verbose: bool) -> None:
    """Disconnect from Ray before the closing lines: what Ray still forwards at shutdown (the raylet's worker-pool
    warning arrived after the final table) goes to the run's log like the rest of its chatter."""
    import ray

    from hexray.train.launch import started_ray
    from hexray.train.quiet import quiet_console

    if started_ray():
        with quiet_console(run_dir, verbose=verbose):
            ray.shutdown()


def _check(cfg) -> int:  # noqa: ANN001
    """Print the resolved config, then check what a run would read (dataset, paths, splits); nothing starts and no
    shards are written."""
    from hexray.config import config_to_dict
    from hexray.config.yaml_io import dump_yaml
    from hexray.data.registry import check_splits, dataset_splits

    print(dump_yaml(config_to_dict(cfg)), end="")
    d = cfg.data
    splits = dataset_splits(d)
    eval_split = check_splits(d, splits)
    print(f"# data: {d.root or d.dataset} has splits {', '.join(splits)}; trains on {d.train_split!r}, "
          f"scores on {eval_split!r}")
    from hexray.train.launch import check_views

    check_views(cfg)
    if cfg.run.worker_hooks:
        from hexray.train.worker_hooks import load_worker_hooks, shippable

        shippable(load_worker_hooks(cfg.run.worker_hooks))
        print(f"# worker hooks load: {', '.join(cfg.run.worker_hooks)}")
    steps = f"{d.batch_size} x {cfg.optim.accumulate_steps}" if cfg.optim.accumulate_steps > 1 else str(d.batch_size)
    print(f"# config OK: {cfg.method.name} on {d.label}, {cfg.run.epochs} epochs, "
          f"{steps} images per optimizer step, "
          f"HEX {'on (' + cfg.hex.variant + ', ' + cfg.hex.threshold + ')' if cfg.hex.enabled else 'off'}")
    return 0
