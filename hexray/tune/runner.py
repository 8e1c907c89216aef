"""Assemble and run the Tuner for a sweep, or continue an interrupted one from its experiment directory.

Everything a resume needs is written into the experiment directory before the first trial (`sweep.yaml` with
absolute paths, `sweep_base.yaml` = the validated base config), so `--resume DIR` does not depend on the cwd.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hexray.storage import StoragePath
from hexray.tune.driver import DEFAULT_BUILDER, INIT_CHECKPOINT_KEY, TrialSetup, run_trial
from hexray.tune.space import candidate_assignments, pbt_mutations, to_tune_space, trial_dirname, validate_space
from hexray.tune.spec import SweepError, SweepSpec, read_sweep_yaml, sweep_from_dict

SWEEP_FILE = "sweep.yaml"
BASE_FILE = "sweep_base.yaml"


@dataclass
class PreparedSweep:
    """A validated sweep: its spec, the base config mapping (fixed overrides applied) and where it writes."""

    spec: SweepSpec
    base: dict[str, Any]
    experiment_dir: StoragePath
    metric_every_epoch: bool = True  # False: some epochs' reports lack the metric (a kNN metric every N epochs)


def prepare_sweep(
    spec: SweepSpec, *, storage_path: str | None = None, name: str | None = None, init_key: str = INIT_CHECKPOINT_KEY
) -> PreparedSweep:
    """Validate everything that can be checked without Ray: base config, every searched key/value, the extras."""
    from hexray.config import apply_overrides, config_from_dict, default_config_path
    from hexray.config.yaml_io import read_yaml_mapping

    base_path = spec.base_config or default_config_path()
    base = read_yaml_mapping(base_path)
    validate_space(spec, base, apply_overrides=apply_overrides, config_from_dict=config_from_dict)
    if spec.search.algorithm == "optuna" and importlib.util.find_spec("optuna") is None:
        raise SweepError("search.algorithm: 'optuna' needs the optuna package: pip install 'hexray[optuna]'")
    if spec.scheduler.kind == "pbt":
        _check_init_key(base, init_key, apply_overrides, config_from_dict)
    _check_run_length(spec, base, apply_overrides, config_from_dict)
    every_epoch = _check_metric(spec, base, apply_overrides, config_from_dict)
    _check_data(spec, base, apply_overrides, config_from_dict)
    experiment_dir = StoragePath(storage_path or spec.storage_path) / (name or spec.name)  # local or s3://...
    return PreparedSweep(spec=spec, base=apply_overrides(base, spec.overrides), experiment_dir=experiment_dir,
                         metric_every_epoch=every_epoch)


def _check_run_length(spec: SweepSpec, base: Mapping[str, Any], apply_overrides: Callable,
                      config_from_dict: Callable) -> None:
    """Scheduler settings against the run length: a trial reports once per epoch (training_iteration = epoch),
    so ASHA's max_t beyond the shortest run's epochs never stops anything, and PBT never perturbs a trial that
    ends before its first interval."""
    assignments = [{}, *candidate_assignments(spec)]
    epochs = [config_from_dict(apply_overrides(base, {**spec.overrides, **a})).run.epochs for a in assignments]
    shortest = min(epochs)
    s = spec.scheduler
    if s.kind == "asha":
        if s.max_t > shortest:
            raise SweepError(f"scheduler.max_t: {s.max_t} exceeds run.epochs ({shortest}); trials report once per "
                             f"epoch, so set max_t <= {shortest}")
        if s.grace_period > s.max_t:
            raise SweepError(f"scheduler.grace_period: {s.grace_period} exceeds scheduler.max_t ({s.max_t})")
    if s.kind == "pbt" and s.perturbation_interval >= shortest:
        raise SweepError(f"scheduler.perturbation_interval: {s.perturbation_interval} >= run.epochs ({shortest}): "
                         "PBT would never exploit or explore; use a shorter interval or longer runs")


def _check_metric(spec: SweepSpec, base: Mapping[str, Any], apply_overrides: Callable,
                  config_from_dict: Callable) -> bool:
    """The sweep's `metric` must be one the trials report (Tune fails the trial, or ASHA/PBT silently compare
    nothing, otherwise): checked against each candidate config's reported names. A kNN or online-probe metric
    comes every `probe.knn_every_epochs` epochs: enough for FIFO (the last epoch always has it), not for ASHA and
    PBT, which compare trials after every epoch. True when every epoch's report carries the metric."""
    from hexray.train.metric_names import epoch_metric_names, measured_every, unknown_metric_message

    every_epoch = True
    for assignment in candidate_assignments(spec) or [{}]:  # each trial is one of these, or the base
        cfg = config_from_dict(apply_overrides(base, {**spec.overrides, **assignment}))
        which = f" (in trials with {', '.join(f'{k}={v!r}' for k, v in assignment.items())})" if assignment else ""
        message = unknown_metric_message(spec.metric, epoch_metric_names(cfg), "metric")
        if message:
            raise SweepError(message + which)
        every = measured_every(cfg, spec.metric)
        if every > 1 and spec.scheduler.kind in ("asha", "pbt"):
            raise SweepError(
                f"metric: {spec.metric!r} is measured every {every} epochs (probe.knn_every_epochs: {every}){which}, "
                f"but {spec.scheduler.kind} compares trials after every epoch: set probe.knn_every_epochs: 1 in "
                "the sweep's overrides, or choose a metric every epoch reports (e.g. loss)")
        every_epoch = every_epoch and every == 1
    return every_epoch


def _check_data(spec: SweepSpec, base: Mapping[str, Any], apply_overrides: Callable,
                config_from_dict: Callable) -> None:
    """Every dataset the trials read exists here, with the splits they train and score on (before Ray starts)."""
    from hexray.data.registry import check_splits, dataset_splits

    seen: set[str] = set()
    for assignment in candidate_assignments(spec) or [{}]:  # each trial is one of these, or the base
        data = config_from_dict(apply_overrides(base, {**spec.overrides, **assignment})).data
        if repr(data) in seen:
            continue
        seen.add(repr(data))
        try:
            check_splits(data, dataset_splits(data))
        except (ValueError, FileNotFoundError) as err:
            raise SweepError(f"the trials' data: {err}") from err


def check_driver_resources(spec: SweepSpec) -> None:
    """The cluster must declare the custom resources trial drivers ask for, or every trial waits forever."""
    import ray

    available = ray.cluster_resources()
    missing = [k for k in spec.trial.driver_resources if k not in ("CPU", "GPU", "memory") and k not in available]
    if missing:
        raise SweepError(
            f"trial.driver_resources asks for {missing}, which no node of this Ray cluster declares: start the "
            f"head/CPU node with `ray start ... --resources='{{\"{missing[0]}\": 100}}'` (cluster/*.yaml do), or "
            f"set trial.driver_resources: {{CPU: 0.01}}")


def _check_init_key(
    base: Mapping[str, Any], init_key: str, apply_overrides: Callable, config_from_dict: Callable
) -> None:
    """PBT restarts trials from other trials' checkpoints through `init_key`: the config must accept it."""
    try:
        config_from_dict(apply_overrides(base, {init_key: "/nonexistent/checkpoint"}))
    except ValueError as err:
        raise SweepError(
            f"scheduler.kind: 'pbt' needs the training config key {init_key} (a checkpoint to start from): {err}"
        ) from err


def build_tuner(prepared: PreparedSweep, *, builder: str | Callable[..., Any] = DEFAULT_BUILDER,
                init_key: str = INIT_CHECKPOINT_KEY, verbose: int = 1) -> Any:
    """The `tune.Tuner` of a sweep: driver trainable with a tiny resource, param space, scheduler, search alg."""
    from ray import tune

    spec = prepared.spec
    return tune.Tuner(
        trainable(prepared, builder, init_key),
        param_space=to_tune_space(spec),
        tune_config=tune.TuneConfig(
            metric=spec.metric,
            mode=spec.mode,
            num_samples=spec.num_samples,
            # Tune applies max_concurrent_trials only to Searchers; the variant generator limits itself.
            max_concurrent_trials=spec.max_concurrent_trials if spec.search.algorithm == "optuna" else None,
            scheduler=_scheduler(spec),
            search_alg=_search_alg(spec),
            trial_dirname_creator=_trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=prepared.experiment_dir.name,
            storage_path=str(prepared.experiment_dir.parent),
            failure_config=tune.FailureConfig(max_failures=spec.trial.max_failures),
            # No cap on Tune's copies of PBT's forwarded checkpoints: an exploit restores the donor's checkpoint of
            # its perturbation time, which a cap deletes while the weak trial restarts (seen with 2). Each trial's
            # own training run keeps `checkpoint.keep` (Ray Train's CheckpointConfig in build_trainer).
            verbose=verbose,
        ),
    )


@contextlib.contextmanager
def _epochs_without_metric_allowed(prepared: PreparedSweep) -> Iterator[None]:
    """Tune fails a trial whose report lacks the metric, and a kNN metric measured every N epochs is missing from
    the other epochs' reports by design; `_check_metric` has already checked its name and that the scheduler is
    FIFO, so Tune's own check is off while such a sweep runs (Tune reads the variable at each result), and only
    then: a later sweep in the same process keeps it."""
    if prepared.metric_every_epoch:
        yield
        return
    key = "TUNE_DISABLE_STRICT_METRIC_CHECKING"
    saved = os.environ.get(key)
    os.environ[key] = "1"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = saved


def trainable(prepared: PreparedSweep, builder: str | Callable[..., Any] = DEFAULT_BUILDER,
              init_key: str = INIT_CHECKPOINT_KEY) -> Any:
    """The driver function bound to this sweep's setup, with its tiny resource request (what Tune runs)."""
    from ray import tune

    setup = TrialSetup(
        base=prepared.base,
        experiment_dir=str(prepared.experiment_dir),
        forward_checkpoints=prepared.spec.scheduler.kind == "pbt",
        builder=builder,
        init_key=init_key,
        final_eval=prepared.spec.trial.final_eval,
    )
    return tune.with_resources(tune.with_parameters(run_trial, setup=setup), prepared.spec.trial.driver_resources)


def _trial_dirname(trial: Any) -> str:
    """Tune's `trial_dirname_creator` (a module function: the Tuner is pickled for --resume)."""
    return trial_dirname(trial.trial_id, trial.config)


def _scheduler(spec: SweepSpec) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining

    s = spec.scheduler
    if s.kind == "asha":
        return ASHAScheduler(
            time_attr="training_iteration", max_t=s.max_t, grace_period=s.grace_period,
            reduction_factor=s.reduction_factor,
        )
    if s.kind == "pbt":
        return PopulationBasedTraining(
            time_attr="training_iteration", perturbation_interval=s.perturbation_interval,
            hyperparam_mutations=pbt_mutations(spec), quantile_fraction=s.quantile_fraction,
            resample_probability=s.resample_probability, synch=s.synch,
        )
    return FIFOScheduler()


def _search_alg(spec: SweepSpec) -> Any:
    if spec.search.algorithm == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(seed=spec.search.seed)
    from ray.tune.search import BasicVariantGenerator

    return BasicVariantGenerator(random_state=spec.search.seed, max_concurrent=spec.max_concurrent_trials)


def write_sweep_files(prepared: PreparedSweep) -> None:
    """Store the sweep (paths made absolute) and the base config in the experiment dir, for `--resume`."""
    prepared.experiment_dir.mkdir()
    raw = dict(prepared.spec.raw)
    raw["name"] = prepared.experiment_dir.name
    raw["storage_path"] = str(prepared.experiment_dir.parent)
    raw["base_config"] = str(prepared.experiment_dir / BASE_FILE)
    raw.pop("overrides", None)
    raw.pop("scaling", None)  # both already applied to the stored base config
    (prepared.experiment_dir / BASE_FILE).write_text(yaml.safe_dump(prepared.base, sort_keys=False))
    (prepared.experiment_dir / SWEEP_FILE).write_text(yaml.safe_dump(raw, sort_keys=False))


def load_prepared(experiment_dir: str | Path, *, init_key: str = INIT_CHECKPOINT_KEY) -> PreparedSweep:
    """The PreparedSweep stored in an experiment dir (local or a URI) by `write_sweep_files`."""
    experiment_dir = StoragePath(experiment_dir)
    sweep_file = experiment_dir / SWEEP_FILE
    if not sweep_file.is_file():
        raise FileNotFoundError(f"not a hexray sweep directory (no {SWEEP_FILE}): {experiment_dir}")
    spec = sweep_from_dict(read_sweep_yaml(sweep_file.read_text(), str(sweep_file)), source=sweep_file)
    return prepare_sweep(spec, storage_path=str(experiment_dir.parent), name=experiment_dir.name, init_key=init_key)


def run_sweep(prepared: PreparedSweep, *, builder: str | Callable[..., Any] = DEFAULT_BUILDER,
              init_key: str = INIT_CHECKPOINT_KEY, verbose: int = 1) -> Any:
    """Run every trial; returns Tune's ResultGrid (failed trials included, with their errors)."""
    check_driver_resources(prepared.spec)
    write_sweep_files(prepared)
    tuner = build_tuner(prepared, builder=builder, init_key=init_key, verbose=verbose)
    with _epochs_without_metric_allowed(prepared):
        return tuner.fit()


def resume_sweep(prepared: PreparedSweep, *, restart_errored: bool = False,
                 builder: str | Callable[..., Any] = DEFAULT_BUILDER, init_key: str = INIT_CHECKPOINT_KEY) -> Any:
    """Continue an interrupted sweep: finished trials are kept, unfinished ones resume (from their last
    checkpoint when they have one); failed trials stay failed unless `restart_errored`."""
    from ray import tune

    check_driver_resources(prepared.spec)
    if not tune.Tuner.can_restore(str(prepared.experiment_dir)):
        raise FileNotFoundError(f"no Tune experiment state to resume in {prepared.experiment_dir}")
    tuner = tune.Tuner.restore(
        str(prepared.experiment_dir),
        trainable=trainable(prepared, builder, init_key),
        resume_unfinished=True,
        resume_errored=False,
        restart_errored=restart_errored,
    )
    with _epochs_without_metric_allowed(prepared):
        return tuner.fit()
