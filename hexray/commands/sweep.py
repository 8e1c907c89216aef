"""`hexray sweep SWEEP.yaml` runs a Ray Tune search over the training config; `--resume DIR` continues one.

The whole sweep (YAML, base config, every searched key and value) is validated before Ray starts. Results land in
the experiment directory: `sweep_results.csv/.parquet`, `best_config.yaml` (runs with `hexray train`), PNG plots.
"""

from __future__ import annotations

import argparse
import os


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sweep",
        help="search HEX / method settings with Ray Tune",
        description="Run a Ray Tune sweep described by a sweep YAML (see sweeps/), or resume one.",
    )
    parser.add_argument("sweep_file", nargs="?", help="sweep YAML, e.g. sweeps/smoke.yaml")
    parser.add_argument("--resume", metavar="EXPERIMENT_DIR", help="continue an interrupted sweep")
    parser.add_argument("--retry-failed", action="store_true", help="with --resume: run failed trials again")
    parser.add_argument("--report", metavar="EXPERIMENT_DIR", help="only rewrite table, best config and plots")
    parser.add_argument("--storage-path", help="override the sweep's storage_path")
    parser.add_argument("--name", help="override the sweep's name (the experiment directory's name)")
    parser.add_argument("--num-cpus", type=float, help="logical CPUs for a local Ray (None: max(4, cores))")
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2, 3),
                        help="Tune's progress output level (default 1: the trial table now and then, each result)")
    parser.add_argument("--ray-logs", action="store_true",
                        help="show Ray's own console output (start-up, trial workers' logs, the raylet's warnings); "
                             "otherwise it goes to EXPERIMENT_DIR/hexray.log")
    parser.add_argument("--quick", action="store_true",
                        help="run the sweep file's `quick:` subset (fewer arms/epochs/images; a `-quick` experiment)")
    parser.add_argument("--arms", metavar="A,B,...",
                        help="run only these arms of the file (names or 'method: name', comma-separated; e.g. the "
                             "controls first, with --name for their own experiment)")
    parser.add_argument("--check", action="store_true",
                        help="validate the sweep (base config, every searched value, scheduler vs run length) and "
                             "print what would run; starts no Ray")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")  # before anything imports ray.train
    from hexray.errors import UserError
    from hexray.tune import runner

    chosen = [x for x in (args.sweep_file, args.resume, args.report) if x]
    if len(chosen) != 1:
        raise UserError("give exactly one of SWEEP_FILE, --resume EXPERIMENT_DIR or --report EXPERIMENT_DIR")
    if (args.quick or args.arms) and not args.sweep_file:
        raise UserError("--quick and --arms apply to a SWEEP_FILE (a resumed sweep keeps what it was started with)")
    if args.sweep_file:
        from hexray.tune.spec import load_sweep

        arms = [a.strip() for a in args.arms.split(",") if a.strip()] if args.arms else None
        prepared = runner.prepare_sweep(load_sweep(args.sweep_file, quick=args.quick, arms=arms),
                                        storage_path=args.storage_path, name=args.name)
    else:
        prepared = runner.load_prepared(args.resume or args.report)
    if args.check:
        print(_describe(prepared))
        return 0
    from hexray import storage
    from hexray.train.launch import ray_logs_from_env
    from hexray.train.quiet import quiet_console

    storage.make_dirs(str(prepared.experiment_dir))  # its log file opens in it (an unwritable path fails here)
    with quiet_console(str(prepared.experiment_dir), verbose=args.ray_logs or ray_logs_from_env()) as log:
        started = _ensure_ray(args.num_cpus)
        print(f"watch the trials: tensorboard --logdir {prepared.experiment_dir}  (Ray's output: {log})",
              flush=True)
        if args.report:
            from ray import tune

            results = tune.Tuner.restore(str(prepared.experiment_dir),
                                         trainable=runner.trainable(prepared)).get_results()
        elif args.resume:
            results = runner.resume_sweep(prepared, restart_errored=args.retry_failed)
        else:
            results = runner.run_sweep(prepared, verbose=args.verbose)
        summary = write_outputs(results, prepared)
        if started:  # what Ray still forwards at shutdown goes to the log too
            import ray

            ray.shutdown()
    print(summary)
    return 0


def _describe(prepared) -> str:  # noqa: ANN001 - a runner.PreparedSweep
    """What a checked sweep would run, in a few lines."""
    from hexray.tune.space import describe_space, trial_count

    spec = prepared.spec
    s = spec.scheduler
    sched = {"asha": f"asha (max_t {s.max_t}, grace {s.grace_period})",
             "pbt": f"pbt (every {s.perturbation_interval} epochs)"}.get(s.kind, s.kind)
    space = describe_space(spec.space, "#   ")
    mutations = describe_space(spec.scheduler.hyperparam_mutations, "#   ")
    arms = [f"#   {a.label}: " + (", ".join(f"{k}={v!r}" for k, v in a.overrides.items()) or "(the base config)")
            for a in spec.arms]
    return "\n".join([
        f"# sweep {spec.name!r} OK: searches {', '.join(spec.searched_keys())}; metric {spec.metric} ({spec.mode})",
        *(["# arms (each with every point of the space):", *arms] if arms else []),
        "# space:", *space, *(["# PBT perturbs:", *mutations] if mutations else []),
        f"# {trial_count(spec)} trial(s): {spec.num_samples} sample(s) per grid point, "
        f"{spec.max_concurrent_trials} at a time, scheduler {sched}, search {spec.search.algorithm}",
        f"# results: {prepared.experiment_dir}; trial drivers ask for {spec.trial.driver_resources}",
    ])


def write_outputs(results, prepared) -> str:
    """Table, best config, plots; returns the terminal summary."""
    from hexray.tune.plots import write_plots
    from hexray.tune.results import report_results, summarize

    spec = prepared.spec
    report = report_results(results, spec, prepared.base, prepared.experiment_dir)
    plots = write_plots(report.table, report.curves, spec.searched_keys(), spec.metric, prepared.experiment_dir)
    return (summarize(report, spec) + "\nplots: " + ", ".join(p.name for p in plots)
            + f"\nTensorBoard (every trial's curves): tensorboard --logdir {prepared.experiment_dir}")


def _ensure_ray(num_cpus: float | None) -> bool:
    """Attach to RAY_ADDRESS if set, else start a local Ray with more logical than physical CPUs on small machines
    (Ray Data's listing task needs a whole free CPU next to the fractional trainers). True when this call connected
    (so the sweep disconnects at its end; a caller's own Ray stays up)."""
    import ray

    if ray.is_initialized():
        return False
    from hexray.train.launch import start_local_ray

    if os.environ.get("RAY_ADDRESS"):
        ray.init()
    else:
        start_local_ray(num_cpus or max(4, os.cpu_count() or 1))
    return True
