"""`hexray.config`: the typed training config — YAML (+ `--set key=value`) mapped onto one tree of dataclasses.

Validated once, before anything starts: an unknown key (with a close-name suggestion), a wrong type or an
impossible value raises `ConfigError`, whose message names the dotted key path and the allowed values. No Ray;
torch is imported only through the method registry (to check `method.name` against the registered methods).

    cfg = load_config("my.yaml", ["hex.local_weight=0.5", "scaling.use_gpu=true"])
    save_config(cfg, "run/config.yaml")   # load_config("run/config.yaml") gives an equal config
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from hexray.config.binding import ConfigError, build_dataclass, choice_message, to_plain
from hexray.config.sections import (
    CheckpointSection,
    DataConfig,
    EvalSection,
    FastPathSection,
    ModelSection,
    OptimConfig,
    ProbeSection,
    RunSection,
    ScalingSection,
)
from hexray.config.yaml_io import apply_overrides, dump_yaml, parse_yaml, read_yaml_mapping
from hexray.losses.settings import HexConfig
from hexray.methods import METHODS  # importing the package registers every method
from hexray.methods.registry import check_method
from hexray.methods.settings import MethodConfig
from hexray.models.settings import BackboneConfig, SEMConfig

ScalingConfigSection = ScalingSection  # the name used in the cross-layer contract

__all__ = [
    "BackboneConfig", "CheckpointSection", "ConfigError", "DataConfig", "FastPathSection", "HexConfig",
    "MethodConfig", "ModelSection", "OptimConfig", "ProbeSection", "RunSection", "SEMConfig", "ScalingConfigSection",
    "ScalingSection", "TrainConfig", "apply_overrides", "config_from_dict", "config_to_dict", "default_config_path",
    "load_config", "preset_names", "resolve_config_path", "save_config",
]


@dataclass
class TrainConfig:
    """Everything one training run needs. Sections are independent dataclasses; checks that span sections live in
    `__post_init__` here (those needing the dataset's manifest, e.g. superclass labels, run at start-up)."""

    method: MethodConfig = field(default_factory=MethodConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    model: ModelSection = field(default_factory=ModelSection)
    sem: SEMConfig = field(default_factory=SEMConfig)
    hex: HexConfig = field(default_factory=HexConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    scaling: ScalingSection = field(default_factory=ScalingSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    probe: ProbeSection = field(default_factory=ProbeSection)
    eval: EvalSection = field(default_factory=EvalSection)
    fast: FastPathSection = field(default_factory=FastPathSection)
    run: RunSection = field(default_factory=RunSection)

    def __post_init__(self) -> None:
        problems = []
        workers, batch = self.scaling.num_workers, self.data.batch_size
        if batch % workers:
            problems.append(
                f"data.batch_size ({batch}) must be divisible by scaling.num_workers ({workers}): it is the global "
                f"batch, split evenly over workers"
            )
        metric = self.checkpoint.metric
        if metric.startswith("knn/") and self.probe.knn_every_epochs == 0:
            problems.append(f"checkpoint.metric {metric!r} needs the kNN monitor: set probe.knn_every_epochs >= 1")
        if metric.startswith("probe/") and not self.probe.online:
            problems.append(f"checkpoint.metric {metric!r} needs the online probe: set probe.online: true")
        if self.fast.gpu_augment and self.data.augment_in == "pipeline":
            problems.append("fast.gpu_augment: true asks for augmentation on the training device, but "
                            "data.augment_in is 'pipeline'; set one of them (data.augment_in: trainer is the same)")
        if self.method.name not in METHODS:
            problems.append(choice_message("method.name", self.method.name, list(METHODS)))
        else:
            try:
                check_method(self.method)
            except ValueError as err:
                problems.append(str(err))
        if problems:
            raise ConfigError(problems)
        if self.hex.enabled and self.hex.in_warmup(self.run.epochs - 1):
            warnings.warn(
                f"hex.warmup_epochs ({self.hex.warmup_epochs}, {self.hex.warmup_mode}) covers every epoch of "
                f"run.epochs ({self.run.epochs}): HEX never switches on in this run (set hex.enabled: false for a "
                f"plain baseline)",
                stacklevel=2,
            )


def default_config_path() -> Path:
    """The embedded default config (`hexray/configs/default.yaml`), used when `hexray train` gets no file."""
    return Path(str(resources.files("hexray") / "configs" / "default.yaml"))


def preset_names() -> list[str]:
    """The configs shipped in `hexray/configs/` (default, the ImageNet reference presets, ...), without `.yaml`."""
    return sorted(Path(str(f)).stem for f in resources.files("hexray").joinpath("configs").iterdir()
                  if str(f).endswith(".yaml"))


def resolve_config_path(name_or_path: str) -> Path:
    """A YAML file path, or the name of a shipped preset (e.g. `imagenet-simclr-hex`)."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    if name_or_path in preset_names():
        return Path(str(resources.files("hexray") / "configs" / f"{name_or_path}.yaml"))
    raise FileNotFoundError(f"config file {name_or_path} does not exist (shipped presets: {', '.join(preset_names())})")


def config_from_dict(data: Mapping[str, Any]) -> TrainConfig:
    """Validate a plain mapping (parsed YAML) into a TrainConfig; every problem is reported in one ConfigError."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"a config must be a mapping of sections, got {type(data).__name__}")
    errors: list[str] = []
    cfg = build_dataclass(TrainConfig, data, "", errors)
    if errors:
        raise ConfigError(errors)
    return cfg


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """Plain nested dict of a TrainConfig (tuples as lists): what the Ray train loop receives and YAML stores."""
    return to_plain(cfg)


def save_config(cfg: TrainConfig, path: str | Path) -> str:
    """Write `cfg` as YAML to a local path or a URI; `load_config(path)` returns an equal TrainConfig."""
    from hexray import storage

    location = storage.normalize(str(path))
    storage.write_text(location, dump_yaml(config_to_dict(cfg)))
    return location


def load_config(
    path: str | Path | None = None, overrides: Sequence[str] | Mapping[str, Any] = ()
) -> TrainConfig:
    """Read a YAML config (None → the embedded default), apply `key.path=value` overrides, validate."""
    source = default_config_path() if path is None else path
    data = read_yaml_mapping(source)
    return config_from_dict(apply_overrides(data, overrides))


def parse_value(text: str) -> Any:
    """A single override value parsed exactly as `--set` parses it (YAML 1.2 numbers, true/false, null)."""
    return parse_yaml(text, "value")
