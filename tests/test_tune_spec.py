"""Sweep YAML parsing, the Tune search space it maps to, and validation against the training config (no trials)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import yaml

from hexray.tune.runner import load_prepared, prepare_sweep, write_sweep_files
from hexray.tune.space import (
    TRIAL_DIRNAME_CHARS,
    candidate_assignments,
    flatten_trial_config,
    to_tune_space,
    trial_count,
    trial_dirname,
)
from hexray.tune.spec import SweepError, load_sweep, sweep_from_dict

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"


def _spec(**raw):
    raw.setdefault("space", {"hex.beta": {"uniform": [0.5, 1.5]}})
    return sweep_from_dict(raw)


def _write(tmp_path: Path, raw: dict, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def test_defaults_and_distributions():
    spec = _spec(space={
        "hex.beta": {"uniform": [0.0, 2.0]},
        "optim.lr": {"loguniform": [1e-3, 1.0]},
        "hex.epoch_step": {"randint": [1, 5]},
        "method.name": {"choice": ["simclr", "byol"]},
        "hex.variant": {"grid": ["decomposed", "released"]},
    })
    assert (spec.metric, spec.mode, spec.num_samples, spec.max_concurrent_trials) == ("probe/online_top1", "max", 1, 1)
    assert spec.scheduler.kind == "fifo" and spec.search.algorithm == "random"
    assert [p.kind for p in spec.space.values()] == ["uniform", "loguniform", "randint", "choice", "grid"]
    space = to_tune_space(spec)
    from ray.tune.search.sample import Categorical, Float, Integer

    assert isinstance(space["hex.beta"], Float) and isinstance(space["optim.lr"], Float)
    assert isinstance(space["hex.epoch_step"], Integer)
    assert isinstance(space["method.name"], Categorical)
    assert space["hex.variant"] == {"grid_search": ["decomposed", "released"]}


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ({"space": {"hex.beta": {"normal": [0, 1]}}}, "space.hex.beta: unknown distribution 'normal'"),
        ({"space": {"hex.beta": {"uniform": [2, 1]}}}, "space.hex.beta.uniform: high must be > low"),
        ({"space": {"optim.lr": {"loguniform": [0, 1]}}}, "space.optim.lr.loguniform: bounds must be > 0"),
        ({"space": {"hex.epoch_step": {"randint": [1.5, 3]}}}, "space.hex.epoch_step.randint"),
        ({"space": {"hex.beta": {"choice": []}}}, "space.hex.beta.choice: expected a non-empty list"),
        ({"space": {"hex..beta": {"choice": [1]}}}, "space.hex..beta: expected a dotted config key"),
        ({"space": {"hex.beta": {"choice": [1]}}, "mode": "best"}, "mode: expected one of max, min"),
        ({"space": {"hex.beta": {"choice": [1]}}, "num_samples": 0}, "num_samples: must be >= 1"),
        ({"space": {"hex.beta": {"choice": [1]}}, "schedular": "asha"}, "schedular: unknown key"),
        ({"space": {"hex.beta": {"choice": [1]}}, "scheduler": {"kind": "hyperband"}}, "scheduler.kind"),
        ({"space": {"hex.beta": {"choice": [1]}}, "scheduler": {"kind": "fifo", "max_t": 3}},
         "scheduler.max_t: unknown key for scheduler.kind 'fifo'"),
        ({"space": {"hex.beta": {"choice": [1]}}, "scheduler": {"kind": "pbt"}}, "scheduler.hyperparam_mutations"),
        ({"space": {"hex.beta": {"uniform": [0, 1]}}, "search": {"algorithm": "grid"}},
         "space.hex.beta: search.algorithm 'grid' needs discrete values"),
        ({"space": {"hex.threshold": {"choice": [{"value": "step", "space": {"hex.start": {"uniform": [0.5, 0.9]}}}]}},
          "search": {"algorithm": "optuna"}}, "space.hex.threshold: search.algorithm 'optuna'"),
        ({"space": {"hex.beta": {"choice": [1]}}, "overrides": {"hex.beta": 2}}, "overrides.hex.beta: also searched"),
        ({"space": {"hex.beta": {"choice": [1]}}, "trial": {"driver_resources": {"CPU": -1}}},
         "trial.driver_resources.CPU"),
        ({"space": {"hex.threshold": {"grid": [{"value": "step", "space": {"hex.start": {"choice": [0.5]}}}]}}},
         "space.hex.threshold.grid: conditional sub-spaces are only allowed in `choice`"),
    ],
)
def test_bad_sweeps_name_the_key(raw, named):
    with pytest.raises(SweepError, match=None) as err:
        sweep_from_dict(raw)
    assert named in str(err.value)


def test_conditional_choice_maps_to_nested_space_and_flattens_back():
    spec = _spec(space={"hex.threshold": {"choice": [
        {"value": "adaptive", "space": {"hex.quantile": {"uniform": [0.9, 0.99]}}},
        {"value": "step", "space": {"hex.start": {"choice": [0.8, 0.9]}, "hex.epoch_step": {"randint": [1, 3]}}},
        "superclass",
    ]}})
    assert spec.searched_keys() == ["hex.threshold", "hex.quantile", "hex.start", "hex.epoch_step"]
    options = to_tune_space(spec)["hex.threshold"].categories
    assert options[0]["_value"] == "adaptive" and "hex.quantile" in options[0]
    assert options[2] == {"_value": "superclass"}
    trial = {"hex.threshold": {"_value": "step", "hex.start": 0.9, "hex.epoch_step": 2}, "optim.lr": 0.1}
    assert flatten_trial_config(trial) == {"hex.threshold": "step", "hex.start": 0.9, "hex.epoch_step": 2,
                                           "optim.lr": 0.1}


def test_grid_algorithm_enumerates_conditional_options():
    spec = _spec(search={"algorithm": "grid"}, space={
        "hex.threshold": {"choice": [{"value": "step", "space": {"hex.start": {"choice": [0.8, 0.9]}}}, "adaptive"]},
        "hex.enabled": {"choice": [True, False]},
    })
    space = to_tune_space(spec)
    assert space["hex.threshold"]["grid_search"] == [
        {"_value": "step", "hex.start": 0.8}, {"_value": "step", "hex.start": 0.9}, "adaptive"]
    assert space["hex.enabled"] == {"grid_search": [True, False]}


def test_candidates_cover_every_branch_and_range_end():
    spec = _spec(space={
        "hex.threshold": {"choice": [{"value": "step", "space": {"hex.epoch_step": {"randint": [2, 5]}}}, "adaptive"]},
    })
    assert candidate_assignments(spec) == [
        {"hex.threshold": "step"},
        {"hex.threshold": "step", "hex.epoch_step": 2},
        {"hex.threshold": "step", "hex.epoch_step": 4},
        {"hex.threshold": "adaptive"},
    ]


def test_unknown_config_key_fails_before_any_trial(tmp_path):
    spec = load_sweep(_write(tmp_path, {"space": {"hex.betaa": {"choice": [0.5, 1.0]}}}))
    with pytest.raises(SweepError, match=r"space\.hex\.betaa: value 0.5 does not fit the training config.*hex\.betaa"):
        prepare_sweep(spec, storage_path=str(tmp_path))


def test_impossible_value_of_a_conditional_key_is_named(tmp_path):
    raw = {"space": {"hex.threshold": {"choice": [
        {"value": "adaptive", "space": {"hex.quantile": {"uniform": [0.9, 1.5]}}}]}}}
    with pytest.raises(SweepError, match=r"space\.hex\.quantile: value 1.5 .*hex\.quantile"):
        prepare_sweep(load_sweep(_write(tmp_path, raw)), storage_path=str(tmp_path))


def test_bad_override_and_missing_base_config(tmp_path):
    with pytest.raises(SweepError, match=r"overrides: .*optim\.lrr"):
        prepare_sweep(_spec(overrides={"optim.lrr": 0.1}), storage_path=str(tmp_path))
    with pytest.raises(SweepError, match=r"s\.yaml: base_config: file not found: .*nope\.yaml"):
        load_sweep(_write(tmp_path, {"base_config": "nope.yaml", "space": {"hex.beta": {"choice": [1.0]}}}))


def test_base_config_is_relative_to_the_sweep_file(tmp_path):
    (tmp_path / "cfgs").mkdir()
    base = {"hex": {"beta": 0.25, "warmup_epochs": 0}, "run": {"epochs": 2}}
    (tmp_path / "cfgs" / "base.yaml").write_text(yaml.safe_dump(base))
    sub = tmp_path / "sweeps"
    sub.mkdir()
    spec = load_sweep(_write(sub, {"base_config": "../cfgs/base.yaml", "space": {"hex.alpha": {"choice": [0.1]}}}))
    prepared = prepare_sweep(spec, storage_path=str(tmp_path / "out"))
    assert prepared.base["hex"]["beta"] == 0.25
    assert str(prepared.experiment_dir) == str((tmp_path / "out" / "s").resolve())


def test_optuna_missing_is_a_clear_error(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "optuna" else real(name, *a))
    spec = _spec(search={"algorithm": "optuna"})
    with pytest.raises(SweepError, match=r"search\.algorithm: 'optuna' needs the optuna package"):
        prepare_sweep(spec, storage_path=str(tmp_path))


def test_pbt_needs_the_init_checkpoint_key(tmp_path):
    spec = _spec(scheduler={"kind": "pbt", "hyperparam_mutations": {"hex.beta": {"uniform": [0.5, 1.5]}}})
    with pytest.raises(SweepError, match=r"scheduler\.kind: 'pbt' needs the training config key no\.such"):
        prepare_sweep(spec, storage_path=str(tmp_path), init_key="no.such")
    prepared = prepare_sweep(spec, storage_path=str(tmp_path), init_key="data.options.init_from")
    assert "hex.beta" in to_tune_space(prepared.spec)


def test_scaling_section_becomes_overrides_and_sweep_files_round_trip(tmp_path):
    spec = load_sweep(_write(tmp_path, {"scaling": {"num_workers": 2, "cpus_per_worker": 0.25},
                                        "overrides": {"data.batch_size": 64},
                                        "space": {"hex.beta": {"choice": [0.5]}}}))
    assert spec.overrides == {"data.batch_size": 64, "scaling.num_workers": 2, "scaling.cpus_per_worker": 0.25}
    prepared = prepare_sweep(spec, storage_path=str(tmp_path / "out"))
    write_sweep_files(prepared)
    again = load_prepared(prepared.experiment_dir)
    assert again.base == prepared.base and again.experiment_dir == prepared.experiment_dir
    assert again.spec.searched_keys() == ["hex.beta"]


@pytest.mark.parametrize("name", sorted(p.stem for p in SWEEPS.glob("*.yaml")))
def test_shipped_sweeps_validate(name, tmp_path):
    if name == "evidence-imagenet":  # every key and value checks out; then ImageNet itself is missing here
        with pytest.raises(SweepError, match="the trials' data: data.path: /datasets/imagenet is not a directory"):
            prepare_sweep(load_sweep(SWEEPS / f"{name}.yaml"), storage_path=str(tmp_path))
        return
    prepared = prepare_sweep(load_sweep(SWEEPS / f"{name}.yaml"), storage_path=str(tmp_path))
    assert prepared.spec.searched_keys()


@pytest.mark.parametrize("name", sorted(p.stem for p in SWEEPS.glob("*.yaml")))
def test_trial_count_is_what_tune_would_generate(name):
    from ray.tune.search.variant_generator import generate_variants

    spec = load_sweep(SWEEPS / f"{name}.yaml")
    grid_points = len(list(generate_variants({"config": to_tune_space(spec)})))
    assert trial_count(spec) == spec.num_samples * grid_points


def test_sweep_check_prints_the_resolved_space_and_the_trial_count(tmp_path, capsys):
    from hexray.cli import main

    path = tmp_path / "s.yaml"
    path.write_text("base_config: null\nspace:\n  optim.lr: {loguniform: [1e-4, 1e-2]}\n  run.seed: {grid: [0, 1]}\n"
                    "  method.name: {choice: [simclr, {value: byol, space: {hex.alpha: {choice: [0.1, 0.3]}}}]}\n"
                    "num_samples: 3\n")
    assert main(["sweep", str(path), "--check", "--storage-path", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "#   optim.lr: loguniform(0.0001, 0.01)" in out
    assert "#   method.name: choice ['simclr', 'byol']" in out and "#       hex.alpha: choice [0.1, 0.3]" in out
    assert "#     when method.name = 'byol':" in out
    assert "# 6 trial(s): 3 sample(s) per grid point" in out  # two seeds, three draws each


def test_only_epoch_end_reports_reach_tune():
    from hexray.tune.driver import is_epoch_end

    assert is_epoch_end([{"epoch_end": 1, "loss": 1.0}]) and is_epoch_end([{"loss": 1.0}])
    assert not is_epoch_end([{"epoch_end": 0, "loss": 1.0}]) and not is_epoch_end([])


def test_tune_gets_reports_without_infinite_values():
    """ε = +∞ (an empty H(i): base, DCL) made Tune's TensorBoard logger warn "NaN or Inf found in input tensor" at
    every epoch of a sweep; a NaN still reaches Tune."""
    from hexray.tune.driver import CheckpointForwardCallback, tune_result

    report = {"epoch": 3, "loss": 1.5, "hex/epsilon": float("inf"), "hex/h_size": 0.0, "low": float("-inf"),
              "broken": float("nan")}
    result = tune_result(report)
    assert set(result) == {"epoch", "loss", "hex/h_size", "broken"} and result["loss"] == 1.5
    assert math.isnan(result["broken"]) and math.isinf(report["hex/epsilon"])  # the run's own report is untouched

    class Reports(list):
        put = list.append

    reports = Reports()
    CheckpointForwardCallback(reports).after_report(None, [report], None)
    (forwarded, checkpoint), = reports
    assert set(forwarded) == set(result) and checkpoint is None


def test_pbt_choice_mutations_stay_on_the_listed_values():
    from hexray.tune.space import pbt_mutations

    spec = _spec(scheduler={"kind": "pbt", "hyperparam_mutations": {
        "hex.beta": {"choice": [0.5, 1.0]}, "optim.lr": {"loguniform": [0.01, 1.0]}}})
    mutations = pbt_mutations(spec)
    assert mutations["hex.beta"] == [0.5, 1.0] and hasattr(mutations["optim.lr"], "sample")


@pytest.mark.parametrize(("scheduler", "epochs", "message"), [
    ({"kind": "asha", "max_t": 10}, 3, r"scheduler.max_t: 10 exceeds run.epochs \(3\)"),
    ({"kind": "asha", "max_t": 3, "grace_period": 4}, 3, r"scheduler.grace_period: 4 exceeds scheduler.max_t"),
    ({"kind": "pbt", "perturbation_interval": 3, "hyperparam_mutations": {"hex.beta": {"uniform": [0, 1]}}}, 3,
     r"perturbation_interval: 3 >= run.epochs \(3\)"),
])
def test_scheduler_settings_are_checked_against_the_run_length(scheduler, epochs, message):
    spec = _spec(scheduler=scheduler, overrides={"run.epochs": epochs})
    with pytest.raises(SweepError, match=message):
        prepare_sweep(spec, storage_path="/tmp/unused")
    searched = _spec(scheduler={"kind": "asha", "max_t": 3}, space={"run.epochs": {"choice": [2, 3]}})
    with pytest.raises(SweepError, match=r"max_t: 3 exceeds run.epochs \(2\)"):  # the shortest searched run
        prepare_sweep(searched, storage_path="/tmp/unused")


def test_trial_drivers_default_to_the_head_nodes_custom_resource():
    from hexray.train.launch import LOCAL_DRIVER_RESOURCE
    from hexray.tune.spec import DRIVER_RESOURCE

    assert _spec().trial.driver_resources == {DRIVER_RESOURCE: 0.01} and LOCAL_DRIVER_RESOURCE == DRIVER_RESOURCE
    for name in ("aws-gpu.yaml", "gcp-gpu.yaml", "onprem.yaml"):  # every launcher's head declares it, only it
        cluster = yaml.safe_load((SWEEPS.parent / "cluster" / name).read_text())
        types = cluster.get("available_node_types", {})
        head = types.get(cluster.get("head_node_type"), {}).get("resources", {})
        assert DRIVER_RESOURCE in head or any(DRIVER_RESOURCE in c for c in cluster["head_start_ray_commands"]), name
        assert not any(DRIVER_RESOURCE in c for c in cluster["worker_start_ray_commands"]), name
        assert all(DRIVER_RESOURCE not in t.get("resources", {}) for n, t in types.items() if n != "head"), name
    kuberay = yaml.safe_load((SWEEPS.parent / "cluster" / "kuberay.yaml").read_text())["spec"]
    assert DRIVER_RESOURCE in kuberay["headGroupSpec"]["rayStartParams"]["resources"]


def test_sweep_numbers_read_as_yaml_1_2_like_run_configs(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("space:\n  optim.lr:\n    loguniform: [1e-4, 1e-2]\noverrides:\n  optim.weight_decay: 1e-5\n")
    spec = load_sweep(path)
    assert (spec.space["optim.lr"].low, spec.space["optim.lr"].high) == (1e-4, 1e-2)
    assert spec.overrides["optim.weight_decay"] == 1e-5 and isinstance(spec.overrides["optim.weight_decay"], float)
    prepare_sweep(spec, storage_path=str(tmp_path))


@pytest.mark.parametrize("metric, hint", [("knn/top_1", "did you mean 'knn/top1'"),
                                          ("los", "did you mean 'loss'"),
                                          ("loss/infonce", "(in trials with hex.enabled=True)")])
def test_a_metric_the_runs_do_not_report_is_named_with_a_suggestion(metric, hint, tmp_path):
    spec = _spec(metric=metric, space={"hex.enabled": {"choice": [True, False]}})
    with pytest.raises(SweepError, match=r"^metric: .*is not a metric these runs report") as err:
        prepare_sweep(spec, storage_path=str(tmp_path))
    assert hint in str(err.value) and "knn/top1" in str(err.value)


def test_every_reported_name_is_accepted(tmp_path):
    for metric in ("loss", "knn/superclass", "hex/h_size", "probe/online_top1", "images_per_s"):
        prepare_sweep(_spec(metric=metric), storage_path=str(tmp_path))


def test_a_knn_metric_measured_every_few_epochs_suits_fifo_but_not_asha_or_pbt(tmp_path):
    sparse = {"run.epochs": 6, "probe.knn_every_epochs": 3}
    prepared = prepare_sweep(_spec(metric="knn/top1", overrides=sparse), storage_path=str(tmp_path))
    assert not prepared.metric_every_epoch  # Tune's check that every report has it is switched off for this one
    assert prepare_sweep(_spec(metric="loss", overrides=sparse), storage_path=str(tmp_path)).metric_every_epoch
    for scheduler in ({"kind": "asha", "max_t": 6},
                      {"kind": "pbt", "perturbation_interval": 2, "hyperparam_mutations": {"hex.beta": {"uniform":
                                                                                             [0.5, 1.5]}}}):
        spec = _spec(metric="probe/online_top1", overrides=sparse, scheduler=scheduler)
        with pytest.raises(SweepError, match=r"measured every 3 epochs \(probe.knn_every_epochs: 3\) .*, but "
                                             rf"{scheduler['kind']} compares trials after every epoch"):
            prepare_sweep(spec, storage_path=str(tmp_path), init_key="data.options.init_from")


@pytest.mark.parametrize("overrides, message", [
    ({"data.dataset": "fashion_mnist"}, "did you mean 'fashion-mnist'"),
    ({"data.dataset": "folder", "data.path": "/nonexistent/images"}, "data.path: /nonexistent/images is not a"),
    ({"data.root": "/nonexistent/shards"}, "data.root: /nonexistent/shards holds no manifest.json"),
    ({"data.eval_split": "valid"}, "data.eval_split: split 'valid' is not in dataset 'synthetic-hierarchy'"),
])
def test_the_trials_data_is_checked_before_ray(overrides, message, tmp_path):
    spec = _spec(overrides={"data.dataset": "synthetic-hierarchy", "data.image_size": 16,
                            "data.options": {"images_per_class": 4}, **overrides})
    with pytest.raises(SweepError, match=re.escape(message)):
        prepare_sweep(spec, storage_path=str(tmp_path))


ARMS = [{"name": "base", "hex.threshold": "none", "hex.variant": "decomposed", "hex.beta": 0},
        {"name": "oracle w_h=0", "hex.threshold": "superclass", "hex.variant": "decomposed", "hex.local_weight": 0}]


def test_arms_run_with_every_point_of_the_space_and_label_their_trials(tmp_path):
    from ray.tune.search.variant_generator import generate_variants

    spec = sweep_from_dict({"space": {"run.seed": {"grid": [0, 1, 2]}}, "arms": ARMS, "trial": {"final_eval": True}})
    assert [a.name for a in spec.arms] == ["base", "oracle w_h=0"] and spec.trial.final_eval
    assert trial_count(spec) == 6
    trials = [flatten_trial_config(v["config"]) for _, v in generate_variants({"config": to_tune_space(spec)})]
    assert len(trials) == 6
    assert {(t["run.arm"], t["run.seed"]) for t in trials} == {(a, s) for a in ("base", "oracle w_h=0")
                                                               for s in (0, 1, 2)}
    oracle = next(t for t in trials if t["run.arm"] == "oracle w_h=0")
    assert oracle["hex.threshold"] == "superclass" and oracle["hex.local_weight"] == 0
    base = {"run.arm": "base", "hex.threshold": "none", "hex.variant": "decomposed", "hex.beta": 0}
    assert base in candidate_assignments(spec)  # what `prepare_sweep` checks before any trial
    prepare_sweep(spec, storage_path=str(tmp_path))  # every arm's keys fit the training config


@pytest.mark.parametrize("raw, named", [
    ({"arms": [{"name": "a"}, {"name": "a"}]}, r"arms\[1\].name: .a. names two arms of one method"),
    ({"arms": [{"hex.beta": 1}]}, r"arms\[0\].name: expected a non-empty string"),
    ({"arms": [{"name": "a", "hex..beta": 1}]}, r"arms\[0\] \(a\).hex..beta: expected a dotted config key"),
    ({"arms": [{"name": "a", "hex.beta": 1}], "space": {"hex.beta": {"grid": [0, 1]}}}, r"arms \(a\).hex.beta: also"),
    ({"arms": [{"name": "a", "run.arm": "b"}]}, r"arms\[0\] \(a\).run.arm: set by the arm's name"),
    ({"arms": {"a": {}}}, "arms: expected a list"),
    ({"trial": {"final_eval": "yes"}}, "trial.final_eval: expected true or false"),
])
def test_bad_arms_name_the_arm_and_key(raw, named):
    with pytest.raises(SweepError, match=named):
        sweep_from_dict({"space": {"run.seed": {"grid": [0]}}, **raw})


METHOD_ARMS = [{"name": "base", "method.name": "byol", "hex.enabled": False},
               {"name": "+ HEX", "method.name": "byol", "hex.threshold": "adaptive"},
               {"name": "base", "method.name": "simclr"}]


def test_method_overrides_set_a_methods_recipe_in_each_of_its_arms_only(tmp_path):
    recipe = {"optim.lr": 1.0, "method.proj_output_dim": 256}
    raw = {"space": {"run.seed": {"grid": [0]}}, "arms": METHOD_ARMS, "method_overrides": {"byol": recipe},
           "quick": {"arms": ["simclr: base"]}}
    spec = sweep_from_dict(raw)
    assert {a.label: a.overrides.get("optim.lr") for a in spec.arms} == {
        "byol: base": 1.0, "byol: + HEX": 1.0, "simclr: base": None}
    assert spec.arms[1].overrides == {"method.name": "byol", "hex.threshold": "adaptive", **recipe}
    assert "method_overrides" not in spec.raw  # what a run dir stores (and --resume reads) is the expanded arms
    prepare_sweep(spec, storage_path=str(tmp_path))  # the recipe's keys fit the training config
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert load_sweep(path, arms=["byol: base"]).arms[0].overrides["method.proj_output_dim"] == 256
    assert [a.label for a in load_sweep(path, quick=True).arms] == ["simclr: base"]


@pytest.mark.parametrize("per_method, named", [
    ({"byl": {"optim.lr": 1.0}}, r"method_overrides.byl: no arm sets method.name: byl \(arms' methods: byol, simclr"),
    ({"byol": {"hex.enabled": True}}, r"arms\[0\] \(base\).hex.enabled: also set by method_overrides.byol"),
    ({"byol": {"method.name": "simclr"}}, r"method_overrides.byol.method.name: picks the arms"),
    ({"byol": {"optim..lr": 1.0}}, r"method_overrides.byol.optim..lr: expected a dotted config key"),
    ({"byol": [1.0]}, r"method_overrides.byol: expected a mapping"),
])
def test_bad_method_overrides_name_the_method_and_key(per_method, named):
    with pytest.raises(SweepError, match=named):
        sweep_from_dict({"space": {"run.seed": {"grid": [0]}}, "arms": METHOD_ARMS, "method_overrides": per_method})
    with pytest.raises(SweepError, match="method_overrides: sets keys for the arms of a method; this sweep lists no"):
        sweep_from_dict({"space": {"run.seed": {"grid": [0]}}, "method_overrides": {"byol": {"optim.lr": 1.0}}})


def test_an_arm_value_that_does_not_fit_the_config_names_the_arm(tmp_path):
    spec = sweep_from_dict({"space": {"run.seed": {"grid": [0]}},
                            "arms": [{"name": "ok"}, {"name": "bad", "hex.threshold": "sometimes"}]})
    with pytest.raises(SweepError, match=r"arms \(bad\).hex.threshold: value 'sometimes'"):
        prepare_sweep(spec, storage_path=str(tmp_path))


def test_the_final_table_report_never_reaches_tune():
    from hexray.tune.driver import is_epoch_end

    assert not is_epoch_end([{"epoch": 3, "final_eval": 1, "final/pretrained/knn/top1@20": 0.8}])


def test_quick_subset_keeps_the_named_arms_and_its_own_overrides(tmp_path):
    from hexray.tune.spec import with_quick

    spec = load_sweep(SWEEPS / "evidence-fashion-mnist.yaml", quick=True)
    assert spec.name == "evidence-fashion-mnist-quick"
    assert [a.label for a in spec.arms] == ["simclr: base", "simclr: oracle w_h=0", "simclr: oracle w_h=3"]
    assert spec.overrides["run.epochs"] == 3 and spec.overrides["hex.temperature"] == 0.1
    assert trial_count(spec) == 6
    full = load_sweep(SWEEPS / "evidence-fashion-mnist.yaml")
    assert trial_count(full) == 45 and {a.label for a in full.arms} >= {"byol: base", "barlow: + 0.1 HEX"}
    raw = {"space": {"run.seed": {"grid": [0]}}, "arms": [{"name": "a"}], "quick": {"arms": ["b"]}}
    with pytest.raises(SweepError, match=r"quick.arms: 'b' is not an arm of this sweep"):
        sweep_from_dict(raw)
    with pytest.raises(SweepError, match="quick.epochs"):
        sweep_from_dict({**raw, "quick": {"epochs": 3}})
    with pytest.raises(SweepError, match="defines no quick subset"):
        with_quick({"space": {"run.seed": {"grid": [0]}}})


def test_arms_option_runs_a_subset_such_as_the_controls_first():
    spec = load_sweep(SWEEPS / "evidence-fashion-mnist.yaml", arms=["simclr: base", "oracle w_h=0", "oracle w_h=3"])
    assert [a.label for a in spec.arms] == ["simclr: base", "simclr: oracle w_h=0", "simclr: oracle w_h=3"]
    assert trial_count(spec) == 9
    assert {a.label for a in load_sweep(SWEEPS / "evidence-fashion-mnist.yaml", arms=["base"]).arms} == {
        "simclr: base", "byol: base", "barlow: base"}  # a bare name picks that arm of every method
    byol = load_sweep(SWEEPS / "evidence-fashion-mnist.yaml", arms=["byol: + 0.1 HEX"]).arms[0].overrides
    assert byol["optim.lr"] == 1.0 and byol["method.pred_hidden_dim"] == 2048  # its method_overrides recipe
    with pytest.raises(SweepError, match="--arms: 'simclr: nope' is not an arm"):
        load_sweep(SWEEPS / "evidence-fashion-mnist.yaml", arms=["simclr: nope"])


def test_trial_directories_are_named_by_arm_and_value_not_by_every_key_of_the_arm():
    spec = load_sweep(SWEEPS / "evidence-fashion-mnist.yaml")
    arm = to_tune_space(spec)["run.arm"]["grid_search"][1]  # oracle w_h=0: a dict of five keys
    name = trial_dirname("3ac29_00001", {"run.seed": 2, "run.arm": arm})
    assert name == "3ac29_00001_seed=2_arm=oracle-w_h=0"
    assert "method" not in name and "local_weight" not in name
    assert trial_dirname("a_1", {"hex.temperature": 0.0712345, "data.dataset": "s3://x/y z"}) == \
        "a_1_temperature=0.07123_dataset=s3-x-y-z"
    long = trial_dirname("a_2", {f"k.key{i}": "v" * 30 for i in range(9)})
    assert len(long) == TRIAL_DIRNAME_CHARS and long.startswith("a_2_key0=")
