"""`hexray eval RUN_DIR`: offline linear probes (100/10/1 % labels), kNN (k = 20, 200), the SEM τ_down sweep,
the hierarchy trajectory over checkpoints and plots; writes RUN_DIR/eval.json (or --out DIR/eval.json) and
prints a table."""

from __future__ import annotations

import argparse

from hexray.errors import InputError


def _floats(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from err
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number")
    return values


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("eval", help="offline probes, kNN, hierarchy metrics and plots of a trained run",
                              description=__doc__)
    p.add_argument("run_dir", help="a run directory (config.yaml, metrics.csv, checkpoint_*)")
    p.add_argument("--checkpoint", help="checkpoint dir (or its name inside RUN_DIR) to probe; default: the latest")
    p.add_argument("--fractions", type=_floats, default=[1.0, 0.1, 0.01],
                   help="label fractions for the linear probe, comma-separated")
    p.add_argument("--ks", type=lambda t: [int(v) for v in _floats(t)], default=[20, 200], help="kNN k values")
    p.add_argument("--probe-epochs", type=int, default=100, help="epochs of the offline linear probe")
    p.add_argument("--probe-lr", type=float, default=0.3, help="the linear probe's learning rate (SGD)")
    p.add_argument("--schedule", choices=("cosine", "step"), default="cosine", help="probe lr schedule")
    p.add_argument("--tau-down", type=_floats, default=None,
                   help="SEM runs: τ_down values swept for the probe on softmax(emb/τ_down)")
    p.add_argument("--max-train", type=int, default=5000,
                   help="cap on train images (probe/kNN memory); 0 = all")
    p.add_argument("--max-test", type=int, default=2000, help="cap on test images; 0 = all")
    traj = p.add_mutually_exclusive_group()
    traj.add_argument("--trajectory", dest="trajectory", action="store_true", default=True,
                      help="also trace hierarchy metrics over every checkpoint")
    traj.add_argument("--no-trajectory", dest="trajectory", action="store_false",
                      help="score the chosen checkpoint only (faster)")
    p.add_argument("--no-plots", dest="plots", action="store_false", help="write eval.json only, no PNG plots")
    p.add_argument("--device", default="cpu", help="torch device for feature extraction (cpu, cuda, cuda:1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the subsets and the probe's initialisation")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="write eval.json and plots/ here (a local path or a URI) and leave RUN_DIR as it is: an "
                        "eval.json in a sweep trial's run dir becomes the number `hexray report` scores it by")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from hexray.eval.offline import DEFAULT_TAU_DOWN, OfflineSettings, format_table
    from hexray.eval.run_eval import EvalOptions, evaluate_run

    for name in ("max_train", "max_test", "probe_epochs"):
        if getattr(args, name) < 0:
            raise InputError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    settings = OfflineSettings(
        fractions=tuple(args.fractions), ks=tuple(args.ks), probe_epochs=args.probe_epochs, probe_lr=args.probe_lr,
        probe_schedule=args.schedule, tau_down=tuple(args.tau_down or DEFAULT_TAU_DOWN), seed=args.seed,
    )
    options = EvalOptions(max_train=args.max_train or None, max_test=args.max_test or None,
                          trajectory=args.trajectory, device=args.device, plots=args.plots)
    result = evaluate_run(args.run_dir, checkpoint=args.checkpoint, settings=settings, options=options,
                          log=lambda msg: print(f"[eval] {msg}", flush=True), out=args.out)
    ident = result["run"]
    print(f"\n{ident['method']} {'+HEX' if ident['hex'] else '(base)'} on {ident['dataset']}, seed {ident['seed']}, "
          f"epoch {result['epoch']} — {result['num_train']} train / {result['num_test']} test images")
    print(format_table(result["metrics"], settings.fractions, settings.ks))
    if result["sem"]:
        sweep = ", ".join(f"τ={t}: {100 * v['probe/top1']:.1f}%" for t, v in result["sem"]["tau_down"].items())
        print(f"SEM τ_down sweep (test): {sweep}; chosen on held-out train: τ={result['sem']['best_tau_down']:g}")
    if result["loss_space"]:
        print(_loss_space_line(result["loss_space"]))
    if result["trajectory"]:
        last = result["trajectory"][-1]
        print(f"effective rank at epoch {last['epoch']}: global {last['rank/global']:.1f}, "
              f"within superclass {last.get('rank/superclass_mean', float('nan')):.1f}, "
              f"within class {last['rank/class_mean']:.1f}")
    print(f"wrote {result['out_dir']}/eval.json" + (f" and {len(result['plots'])} plots in "
                                                    f"{result['out_dir']}/plots" if result["plots"] else ""))
    return 0


def _loss_space_line(d: dict) -> str:
    parts = ", ".join(f"{name} {100 * d[f'denominator/share_{key}']:.1f}% ({d[f'denominator/count_{key}']:.0f})"
                      for key, name in (("class", "own class"), ("siblings", "sibling classes"),
                                        ("other", "other superclasses")))
    return (f"negatives' share of the loss denominator (projector, τ={d['temperature']:g}; mean count per anchor): "
            f"{parts}; a sibling weighs {d['denominator/siblings_vs_other']:.2f}× an unrelated negative")
