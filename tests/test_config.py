"""hexray.config: YAML ⇄ typed dataclass tree, overrides, and errors that name the key path. Pure Python, no Ray."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from hexray.config import (
    ConfigError,
    TrainConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    default_config_path,
    load_config,
    save_config,
)
from hexray.config.binding import build_dataclass, describe_type


def _error(data: dict) -> str:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    return str(info.value)


def test_embedded_default_loads_as_the_documented_run():
    cfg = load_config()
    assert default_config_path().is_file()
    assert (cfg.method.name, cfg.backbone.name, cfg.backbone.in_channels) == ("simclr", "convnet", 1)
    assert cfg.hex.enabled and cfg.hex.threshold == "adaptive"
    assert cfg.hex.warmup_epochs < cfg.run.epochs, "HEX must switch on within the default run"
    assert (cfg.data.dataset, cfg.data.image_size) == ("fashion-mnist", 28)
    assert cfg.scaling.num_workers == 1 and not cfg.scaling.use_gpu
    assert cfg.fast.compile == "off"  # a bare `off` in YAML stays the string the Literal expects
    assert isinstance(cfg.optim.lr, float) and isinstance(cfg.optim.warmup_epochs, float)


def test_empty_mapping_gives_dataclass_defaults():
    assert config_from_dict({}) == TrainConfig()


def test_yaml_round_trip(tmp_path):
    cfg = load_config(None, ["hex.local_weight=0.5", "scaling.resources_per_worker={custom: 0.5}", "run.name=x"])
    path = save_config(cfg, tmp_path / "sub" / "config.yaml")
    again = load_config(path)
    assert again == cfg
    assert config_to_dict(again) == config_to_dict(cfg)
    assert list(config_to_dict(cfg)) == [
        "method", "backbone", "model", "sem", "hex", "data", "optim", "scaling", "checkpoint", "probe", "eval", "fast",
        "run",
    ]


def test_unknown_key_names_path_and_suggests():
    msg = _error({"hex": {"locl_weight": 0.5}})
    assert "hex.locl_weight: unknown key" in msg
    assert "did you mean 'local_weight'" in msg
    assert "global_weight" in msg  # the allowed keys are listed


def test_unknown_section_is_an_error_with_suggestion():
    msg = _error({"optimizer": {"lr": 0.1}})
    assert "optimizer: unknown key" in msg and "did you mean 'optim'" in msg


def test_wrong_type_names_path_and_expected_type():
    assert "optim.lr: expected number, got string 'fast'" in _error({"optim": {"lr": "fast"}})
    assert "run.epochs: expected integer, got bool True" in _error({"run": {"epochs": True}})
    assert "scaling.use_gpu: expected bool" in _error({"scaling": {"use_gpu": "yes"}})
    assert "data.limit_train: expected integer or null" in _error({"data": {"limit_train": 1.5}})
    assert "scaling.resources_per_worker.GPU: expected number" in _error(
        {"scaling": {"resources_per_worker": {"GPU": "one"}}}
    )
    assert "method: expected mapping" in _error({"method": "simclr"})


def test_int_is_accepted_for_float_and_converted():
    cfg = config_from_dict({"optim": {"lr": 1, "grad_clip": 3}})
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float) and isinstance(cfg.optim.grad_clip, float)


def test_literal_lists_allowed_values():
    msg = _error({"optim": {"name": "adam"}})
    assert "optim.name: must be one of 'lars', 'sgd', 'adamw'; got 'adam'" in msg
    assert "fast.amp: must be one of 'auto', 'bf16', 'fp16', 'off'" in _error({"fast": {"amp": "fp32"}})


def test_impossible_values_name_the_key_and_range():
    assert "optim.lr must be > 0, got -0.1" in _error({"optim": {"lr": -0.1}})
    assert "optim.momentum must be in [0, 1)" in _error({"optim": {"momentum": 1.5}})
    assert "hex.quantile must be in (0, 1)" in _error({"hex": {"quantile": 2.0}})
    assert "hex.threshold must be one of" in _error({"hex": {"threshold": "median"}})
    assert "backbone.name must be one of" in _error({"backbone": {"name": "vit"}})
    assert "method.name must be one of barlow, byol, dino, moco" in _error({"method": {"name": "simclrr"}})
    assert "did you mean 'simclr'" in _error({"method": {"name": "simclrr"}})
    assert "data.path is required" in _error({"data": {"dataset": "imagenet"}})


def test_errors_of_several_sections_are_reported_together():
    with pytest.raises(ConfigError) as info:
        config_from_dict({"hex": {"bogus": 1}, "run": {"epochs": "ten"}, "data": {"recipe": "moco"}})
    assert len(info.value.errors) == 3
    assert [e.split(":")[0] for e in info.value.errors] == ["hex.bogus", "run.epochs", "data.recipe"]


def test_cross_section_checks():
    msg = _error({"data": {"batch_size": 100}, "scaling": {"num_workers": 3}})
    assert "data.batch_size (100) must be divisible by scaling.num_workers (3)" in msg
    assert "probe.knn_every_epochs" in _error({"probe": {"knn_every_epochs": 0}, "checkpoint": {"metric": "knn/top1"}})
    config_from_dict({"probe": {"knn_every_epochs": 0}, "checkpoint": {"metric": "loss", "mode": "min"}})


def test_hex_that_never_switches_on_warns():
    with pytest.warns(UserWarning, match="hex.warmup_epochs"):
        config_from_dict({"hex": {"warmup_epochs": 5}, "run": {"epochs": 5}})


def test_overrides_are_yaml_typed():
    cfg = load_config(
        None,
        [
            "hex.local_weight=0.5",
            "scaling.use_gpu=true",
            "scaling.num_workers=2",
            "optim.lr=1e-3",  # YAML 1.1 would read this as a string
            "data.limit_train=null",
            "run.name=my-run",
            "fast.channels_last=on",  # YAML 1.1 would read this as a bool
        ],
    )
    assert cfg.hex.local_weight == 0.5
    assert cfg.scaling.use_gpu is True and cfg.scaling.num_workers == 2
    assert cfg.optim.lr == pytest.approx(1e-3)
    assert cfg.data.limit_train is None and cfg.run.name == "my-run" and cfg.fast.channels_last == "on"


def test_mapping_overrides_keep_python_values_and_do_not_mutate_input():
    base = {"hex": {"beta": 1.0}}
    out = apply_overrides(base, {"hex.beta": 2.0, "probe.knn_k": 5})
    assert out == {"hex": {"beta": 2.0}, "probe": {"knn_k": 5}}
    assert base == {"hex": {"beta": 1.0}}
    assert load_config(None, {"run.epochs": 7}).run.epochs == 7
    merged = apply_overrides({"hex": {"beta": 1.0, "alpha": 0.2}}, {"hex": {"beta": 2.0}})
    assert merged == {"hex": {"beta": 2.0, "alpha": 0.2}}


def test_bad_overrides_are_errors():
    with pytest.raises(ConfigError, match="expected key.path=value"):
        apply_overrides({}, ["hex.local_weight"])
    with pytest.raises(ConfigError, match="run.epochs is a value"):
        apply_overrides({"run": {"epochs": 3}}, ["run.epochs.x=1"])
    with pytest.raises(ConfigError, match="hex.local_wieght: unknown key; did you mean 'local_weight'"):
        load_config(None, ["hex.local_wieght=0.5"])
    with pytest.raises(ConfigError, match="scaling.num_workers: expected integer, got string 'two'"):
        load_config(None, ["scaling.num_workers=two"])


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("hex: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    twice = tmp_path / "twice.yaml"
    twice.write_text("hex:\n  beta: 1.0\nhex:\n  beta: 2.0\n")
    with pytest.raises(ConfigError, match="duplicate key 'hex' \\(line 3\\)"):
        load_config(twice)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(listy)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty) == TrainConfig()


# The binder is generic: any dataclass tree, not just TrainConfig's sections.
@dataclass
class _Inner:
    mode: Literal["a", "b"] = "a"
    sizes: tuple[int, ...] = (1, 2)
    pair: tuple[int, str] = (0, "x")

    def __post_init__(self) -> None:
        if any(s < 0 for s in self.sizes):
            raise ValueError(f"sizes must be >= 0, got {self.sizes}")


@dataclass
class _Outer:
    inner: _Inner = field(default_factory=_Inner)
    tags: list[str] = field(default_factory=list)
    weight: float | None = None


def test_generic_binder_nested_lists_tuples_and_post_init():
    errors: list[str] = []
    data = {"inner": {"sizes": [3, 4], "pair": [1, "y"]}, "tags": ["t"], "weight": 2}
    out = build_dataclass(_Outer, data, "x", errors)
    assert errors == []
    assert out == _Outer(_Inner("a", (3, 4), (1, "y")), ["t"], 2.0)

    errors = []
    build_dataclass(_Outer, {"inner": {"sizes": [1, "z"], "pair": [1]}, "tags": "t"}, "x", errors)
    assert errors == [
        "x.inner.sizes[1]: expected integer, got string 'z'",
        "x.inner.pair: expected a list of 2 values, got 1",
        "x.tags: expected list of string, got string 't'",
    ]

    errors = []
    build_dataclass(_Outer, {"inner": {"sizes": [-1]}}, "x", errors)
    assert errors == ["x.inner: sizes must be >= 0, got (-1,)"]


def test_describe_type_wording():
    assert describe_type(int | None) == "integer or null"
    assert describe_type(Literal["x", "y"]) == "one of 'x', 'y'"
    assert describe_type(dict[str, float]) == "mapping of string to number"


def test_augment_in_choices_and_the_older_gpu_augment_spelling():
    from hexray.train.launch import augment_in_trainer

    assert augment_in_trainer(load_config(None)), "the default makes views on the training worker"
    assert not augment_in_trainer(load_config(None, ["data.augment_in=pipeline"]))
    assert augment_in_trainer(load_config(None, ["data.augment_in=pipeline", "fast.gpu_augment=false"])) is False
    assert augment_in_trainer(load_config(None, ["data.augment_in=trainer", "fast.gpu_augment=true"]))
    with pytest.raises(ConfigError, match=r"fast\.gpu_augment.*data\.augment_in"):
        load_config(None, ["data.augment_in=pipeline", "fast.gpu_augment=true"])
    with pytest.raises(ConfigError, match=r"data\.augment_in.*'auto', 'pipeline', 'trainer'"):
        load_config(None, ["data.augment_in=gpu"])
    with pytest.raises(ConfigError, match=r"data\.decode_size"):
        load_config(None, ["data.decode_size=0"])
