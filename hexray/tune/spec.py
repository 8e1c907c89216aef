"""The sweep YAML as typed dataclasses, checked key by key so that every error names the offending key.

A sweep names a base training config, fixed overrides, a search space over dotted config keys, the metric to
optimise and how Tune schedules and searches. Parsing is pure (no Ray): `load_sweep` is cheap enough for `--help`
paths and unit tests. Whether the searched keys exist in the training config is checked by `space.validate_space`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hexray import storage
from hexray.errors import InputError
from hexray.storage import StoragePath

DISTRIBUTIONS = ("choice", "grid", "uniform", "loguniform", "randint")
SCHEDULERS = ("fifo", "asha", "pbt")
ALGORITHMS = ("random", "grid", "optuna")
MODES = ("max", "min")
DEFAULT_METRIC = "probe/online_top1"
TOP_LEVEL_KEYS = (
    "name", "base_config", "overrides", "scaling", "metric", "mode", "num_samples", "max_concurrent_trials",
    "storage_path", "search", "scheduler", "space", "trial", "arms", "method_overrides", "quick",
)
QUICK_KEYS = ("overrides", "space", "arms", "num_samples")
ARM_KEY = "run.arm"  # the config key that carries a trial's arm name (what `hexray report` groups and pairs by)


class SweepError(InputError):
    """A sweep file is invalid; the message starts with the sweep key (and file) at fault."""


@dataclass
class Branch:
    """One option of a `choice`/`grid`: its value and, for conditional choices, the keys searched only with it."""

    value: Any
    space: dict[str, ParamSpec] = field(default_factory=dict)


@dataclass
class ParamSpec:
    """One searched key. `kind` is a DISTRIBUTIONS name; `branches` for choice/grid, `low`/`high` otherwise."""

    key: str
    kind: str
    branches: list[Branch] = field(default_factory=list)
    low: float | int | None = None
    high: float | int | None = None

    @property
    def is_conditional(self) -> bool:
        return any(branch.space for branch in self.branches)


DRIVER_RESOURCE = "hexray_driver"  # custom resource of the nodes that host Tune's trial drivers


@dataclass
class SearchSpec:
    algorithm: str = "random"
    seed: int | None = None


@dataclass
class SchedulerSpec:
    """Trial scheduler. ASHA stops weak trials early; PBT copies strong trials' checkpoints and perturbs their keys."""

    kind: str = "fifo"
    grace_period: int = 1
    reduction_factor: float = 2.0
    max_t: int = 100
    perturbation_interval: int = 1
    quantile_fraction: float = 0.25
    resample_probability: float = 0.25
    synch: bool = False  # pbt: decide at each interval only once every trial has reached it (robust to uneven speed)
    hyperparam_mutations: dict[str, ParamSpec] = field(default_factory=dict)


@dataclass
class Arm:
    """One arm of a controlled comparison: a name and the config keys it sets. Every arm runs with every point of
    `space` (seeds, typically), so arms are paired: the same seed gives the same images, order and augmentations."""

    name: str
    overrides: dict[str, Any]

    @property
    def method(self) -> str | None:
        """The method the arm sets (arms of different methods may share a name: each method has its `base`)."""
        return self.overrides.get("method.name")

    @property
    def label(self) -> str:
        """`method: name` (as `hexray report` and `quick.arms` write it), or the name when the arm sets no method."""
        return f"{self.method}: {self.name}" if self.method else self.name


@dataclass
class TrialSpec:
    """How each trial's driver runs: its tiny resource request (drivers only wait on their trainer) and retries.

    The default asks for a sliver of the custom resource `hexray_driver`, which only the head/CPU nodes declare
    (cluster/*.yaml; a local Ray started by hexray declares it too), so drivers never take a GPU node's slot.
    """

    driver_resources: dict[str, float] = field(default_factory=lambda: {DRIVER_RESOURCE: 0.01})
    max_failures: int = 0
    final_eval: bool = False  # each trial ends with `hexray train`'s table (kNN + probe; random init, raw pixels)


@dataclass
class SweepSpec:
    name: str
    source: Path | None
    base_config: Path | str | None
    overrides: dict[str, Any]
    space: dict[str, ParamSpec]
    metric: str = DEFAULT_METRIC
    mode: str = "max"
    num_samples: int = 1
    max_concurrent_trials: int = 1
    storage_path: str = "runs/sweeps"
    search: SearchSpec = field(default_factory=SearchSpec)
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    trial: TrialSpec = field(default_factory=TrialSpec)
    arms: list[Arm] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    def searched_keys(self) -> list[str]:
        """Every dotted config key a trial may receive from the search (conditional ones included), in order."""
        keys: list[str] = []

        def walk(space: Mapping[str, ParamSpec]) -> None:
            for key, param in space.items():
                if key not in keys:
                    keys.append(key)
                for branch in param.branches:
                    walk(branch.space)

        walk(self.space)
        for arm in self.arms:
            for key in (ARM_KEY, *arm.overrides):
                if key not in keys:
                    keys.append(key)
        for key in self.scheduler.hyperparam_mutations:
            if key not in keys:
                keys.append(key)
        return keys


def load_sweep(path: str | Path, *, quick: bool = False, arms: list[str] | None = None) -> SweepSpec:
    """Read and check a sweep YAML. `base_config` is resolved relative to the sweep file's folder. `quick`: run
    the file's `quick:` subset instead (`with_quick`). `arms`: only these arms (names or `method: name` labels)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sweep file not found: {path}")
    raw = read_sweep_yaml(path.read_text(), str(path))
    try:
        raw = raw if raw is not None else {}
        raw = with_quick(raw, source=path) if quick else raw
        return sweep_from_dict(only_arms(raw, arms) if arms else raw, source=path)
    except SweepError as err:
        raise SweepError(f"{path}: {err}") from err


def only_arms(raw: Any, labels: list[str]) -> dict[str, Any]:
    """The sweep restricted to the arms `labels` name (each a name, or `method: name`); e.g. the controls first."""
    raw = expand_method_overrides(raw)
    raw["arms"] = _select_arms(raw, labels, "--arms")
    raw.pop("quick", None)
    return raw


def with_quick(raw: Any, *, source: Path | None = None) -> dict[str, Any]:
    """The sweep with its `quick:` subset applied: `overrides` added to the sweep's, `space` keys replaced, only the
    `arms` named kept, `num_samples` replaced; the experiment is named `<name>-quick` so it never mixes with the
    full run's trials. A sweep without `quick:` has no quick subset."""
    raw = expand_method_overrides(raw)
    quick = raw.pop("quick", None)
    if quick is None:
        raise SweepError("quick: this sweep defines no quick subset (a `quick:` block)")
    quick = _check_quick(quick)
    raw["overrides"] = {**dict(raw.get("overrides") or {}), **dict(quick.get("overrides") or {})}
    raw["space"] = {**dict(raw.get("space") or {}), **dict(quick.get("space") or {})}
    if "arms" in quick:
        raw["arms"] = _select_arms(raw, quick["arms"], "quick.arms")
    if "num_samples" in quick:
        raw["num_samples"] = quick["num_samples"]
    raw["name"] = f"{raw.get('name', source.stem if source is not None else 'sweep')}-quick"
    return raw


def _check_quick(quick: Any) -> Mapping[str, Any]:
    quick = _mapping(quick, "quick")
    _no_unknown(quick, QUICK_KEYS, "quick.")
    if "arms" in quick:
        if not isinstance(quick["arms"], list) or not quick["arms"]:
            raise SweepError(f"quick.arms: expected a non-empty list of arm names, got {quick['arms']!r}")
    return quick  # unknown arm names: `_select_arms` in `with_quick`


def expand_method_overrides(raw: Any) -> dict[str, Any]:
    """The sweep with `method_overrides: {method: {dotted.key: value}}` written into every arm of that method, so a
    method's own recipe (BYOL's lr and heads, say) is stated once, not in each of its arms. A key the arm also sets
    is an error (set it in one place), as is a method no arm runs (a typo would otherwise change nothing)."""
    raw = dict(_mapping(raw, "sweep"))
    per_method = _mapping(raw.pop("method_overrides", None) or {}, "method_overrides")
    if not per_method:
        return raw
    arms = raw.get("arms")
    if not isinstance(arms, list) or not arms:
        raise SweepError("method_overrides: sets keys for the arms of a method; this sweep lists no arms")
    methods = sorted({str(a.get("method.name")) for a in arms if isinstance(a, Mapping) and "method.name" in a})
    for method, keys in per_method.items():
        where = f"method_overrides.{method}"
        if method not in methods:
            raise SweepError(f"{where}: no arm sets method.name: {method} (arms' methods: "
                             f"{', '.join(methods) or 'none'})")
        for key in _mapping(keys, where):
            _dotted_key(key, f"{where}.{key}")
            if key in ("method.name", "name", ARM_KEY):
                raise SweepError(f"{where}.{key}: picks the arms these keys apply to; set it in each arm")
    expanded = []
    for i, arm in enumerate(arms):
        method = arm.get("method.name") if isinstance(arm, Mapping) else None
        keys = per_method.get(method) if isinstance(method, str) else None
        if keys:
            clash = sorted(set(keys) & set(arm))
            if clash:
                raise SweepError(f"arms[{i}] ({arm.get('name')}).{clash[0]}: also set by "
                                 f"method_overrides.{method}; set it in one place only")
            arm = {**arm, **keys}
        expanded.append(arm)
    raw["arms"] = expanded
    return raw


def _select_arms(raw: Mapping[str, Any], labels: list[str], where: str) -> list[Any]:
    """The sweep's raw arms that `labels` name; an unknown label is an error naming `where` and the known labels."""
    arms = [a for a in raw.get("arms") or [] if isinstance(a, Mapping)]
    known = [label for a in arms for label in _arm_labels(a)]
    unknown = [label for label in labels if label not in known]
    if unknown:
        raise SweepError(f"{where}: {unknown[0]!r} is not an arm of this sweep (name, or 'method: name': "
                         f"{sorted(set(known))})")
    return [a for a in arms if set(_arm_labels(a)) & set(labels)]


def _arm_labels(arm: Mapping[str, Any]) -> list[str]:
    """What `quick.arms` may call an arm: its name (every method's arm of that name) or `method: name`."""
    name, method = arm.get("name"), arm.get("method.name")
    return [str(name)] + ([f"{method}: {name}"] if method else [])


def read_sweep_yaml(text: str, source: str) -> Any:
    """Parse sweep YAML with the run configs' loader (YAML 1.2 scalars: `1e-3` is a number, as in a config)."""
    from hexray.config.binding import ConfigError
    from hexray.config.yaml_io import parse_yaml

    try:
        return parse_yaml(text, source)
    except ConfigError as err:
        raise SweepError(str(err)) from err


def sweep_from_dict(raw: Any, *, source: Path | StoragePath | None = None) -> SweepSpec:
    """Check a parsed sweep mapping. Relative `base_config` paths resolve against `source`'s folder (or the cwd)."""
    raw = expand_method_overrides(raw)
    _no_unknown(raw, TOP_LEVEL_KEYS, "")
    if "quick" in raw:  # checked now, used by `hexray sweep --quick` (with_quick)
        sweep_from_dict(with_quick(raw), source=source)  # the subset must itself be a valid sweep
        raw = {k: v for k, v in raw.items() if k != "quick"}
    if "space" not in raw and "arms" not in raw and "hyperparam_mutations" not in (raw.get("scheduler") or {}):
        raise SweepError("space: missing; a sweep must search at least one config key (or list arms)")
    space = parse_space(raw.get("space", {}), "space")
    folder = source.parent if source is not None else Path.cwd()
    base = raw.get("base_config")
    if base is not None and not isinstance(base, str):
        raise SweepError(f"base_config: expected a path string or null, got {base!r}")
    base_path = None
    if base is not None:
        if "://" in base:  # a stored sweep on object storage names its base config by URI
            base_path = base
        else:
            base_path = Path(base) if Path(base).is_absolute() else (folder / base)
        if not storage.is_file(str(base_path)):
            raise SweepError(f"base_config: file not found: {base_path}")
    overrides = dict(_mapping(raw.get("overrides", {}), "overrides"))
    for key, value in _mapping(raw.get("scaling", {}), "scaling").items():
        overrides[f"scaling.{key}"] = value
    for key in overrides:
        _dotted_key(key, f"overrides.{key}")
    spec = SweepSpec(
        name=_string(raw.get("name", source.stem if source is not None else "sweep"), "name"),
        source=source,
        base_config=base_path,
        overrides=overrides,
        space=space,
        metric=_string(raw.get("metric", DEFAULT_METRIC), "metric"),
        mode=_one_of(raw.get("mode", "max"), MODES, "mode"),
        num_samples=_int(raw.get("num_samples", 1), "num_samples", minimum=1),
        max_concurrent_trials=_int(raw.get("max_concurrent_trials", 1), "max_concurrent_trials", minimum=1),
        storage_path=_string(raw.get("storage_path", "runs/sweeps"), "storage_path"),
        search=_parse_search(raw.get("search", {})),
        scheduler=_parse_scheduler(raw.get("scheduler", {})),
        trial=_parse_trial(raw.get("trial", {})),
        arms=_parse_arms(raw.get("arms", [])),
        raw=dict(raw),
    )
    _check_consistency(spec)
    return spec


def parse_space(raw: Any, where: str) -> dict[str, ParamSpec]:
    """Parse `{dotted.key: {distribution: args}}`; `where` is the sweep key path used in errors."""
    raw = _mapping(raw, where)
    return {key: parse_param(key, value, f"{where}.{key}") for key, value in raw.items()}


def parse_param(key: str, raw: Any, where: str) -> ParamSpec:
    """One `{choice|grid: [...]}` or `{uniform|loguniform|randint: [low, high]}` entry."""
    _dotted_key(key, where)
    if not isinstance(raw, Mapping) or len(raw) != 1:
        raise SweepError(
            f"{where}: expected one of {{{', '.join(DISTRIBUTIONS)}}} mapped to its arguments, got {raw!r}"
        )
    (kind, args), = raw.items()
    if kind not in DISTRIBUTIONS:
        raise SweepError(f"{where}: unknown distribution {kind!r}; allowed: {', '.join(DISTRIBUTIONS)}")
    if kind in ("choice", "grid"):
        if not isinstance(args, list) or not args:
            raise SweepError(f"{where}.{kind}: expected a non-empty list of values, got {args!r}")
        branches = [_parse_branch(option, f"{where}.{kind}[{i}]") for i, option in enumerate(args)]
        if kind == "grid" and any(branch.space for branch in branches):
            raise SweepError(f"{where}.grid: conditional sub-spaces are only allowed in `choice`")
        return ParamSpec(key=key, kind=kind, branches=branches)
    if not isinstance(args, list) or len(args) != 2 or not all(_is_number(a) for a in args):
        raise SweepError(f"{where}.{kind}: expected [low, high] numbers, got {args!r}")
    low, high = args
    if kind == "randint":
        if not all(isinstance(a, int) for a in args):
            raise SweepError(f"{where}.randint: expected integers [low, high) , got {args!r}")
        if high <= low:
            raise SweepError(f"{where}.randint: high must be > low (high is exclusive), got {args!r}")
    elif high <= low:
        raise SweepError(f"{where}.{kind}: high must be > low, got {args!r}")
    if kind == "loguniform" and low <= 0:
        raise SweepError(f"{where}.loguniform: bounds must be > 0, got {args!r}")
    return ParamSpec(key=key, kind=kind, low=low, high=high)


def _parse_branch(option: Any, where: str) -> Branch:
    """A plain value, or `{value: V, space: {...}}` for a value whose own keys are searched only when it is chosen."""
    if isinstance(option, Mapping) and "value" in option and set(option) <= {"value", "space"}:
        return Branch(value=option["value"], space=parse_space(option.get("space", {}), f"{where}.space"))
    if isinstance(option, Mapping) and "space" in option:
        raise SweepError(f"{where}: a conditional option needs `value` next to `space`, got keys {sorted(option)}")
    return Branch(value=option)


def _parse_search(raw: Any) -> SearchSpec:
    raw = _mapping(raw, "search")
    _no_unknown(raw, ("algorithm", "seed"), "search.")
    seed = raw.get("seed")
    return SearchSpec(
        algorithm=_one_of(raw.get("algorithm", "random"), ALGORITHMS, "search.algorithm"),
        seed=None if seed is None else _int(seed, "search.seed", minimum=0),
    )


def _parse_scheduler(raw: Any) -> SchedulerSpec:
    if isinstance(raw, str):
        raw = {"kind": raw}
    raw = _mapping(raw, "scheduler")
    kind = _one_of(raw.get("kind", "fifo"), SCHEDULERS, "scheduler.kind")
    allowed = {
        "fifo": ("kind",),
        "asha": ("kind", "grace_period", "reduction_factor", "max_t"),
        "pbt": ("kind", "perturbation_interval", "quantile_fraction", "resample_probability", "hyperparam_mutations",
                "synch"),
    }[kind]
    _no_unknown(raw, allowed, "scheduler.", context=f"for scheduler.kind {kind!r}")
    spec = SchedulerSpec(kind=kind)
    spec.grace_period = _int(raw.get("grace_period", 1), "scheduler.grace_period", minimum=1)
    spec.max_t = _int(raw.get("max_t", 100), "scheduler.max_t", minimum=1)
    spec.reduction_factor = _number(raw.get("reduction_factor", 2.0), "scheduler.reduction_factor")
    if spec.reduction_factor <= 1:
        raise SweepError(f"scheduler.reduction_factor: must be > 1, got {spec.reduction_factor}")
    spec.perturbation_interval = _int(raw.get("perturbation_interval", 1), "scheduler.perturbation_interval", minimum=1)
    spec.quantile_fraction = _number(raw.get("quantile_fraction", 0.25), "scheduler.quantile_fraction")
    if not 0 < spec.quantile_fraction <= 0.5:
        raise SweepError(f"scheduler.quantile_fraction: must be in (0, 0.5], got {spec.quantile_fraction}")
    spec.resample_probability = _number(raw.get("resample_probability", 0.25), "scheduler.resample_probability")
    spec.synch = raw.get("synch", False)
    if not isinstance(spec.synch, bool):
        raise SweepError(f"scheduler.synch: expected true or false, got {spec.synch!r}")
    if kind == "pbt":
        spec.hyperparam_mutations = parse_space(raw.get("hyperparam_mutations"), "scheduler.hyperparam_mutations")
        if not spec.hyperparam_mutations:
            raise SweepError("scheduler.hyperparam_mutations: pbt needs at least one key to perturb")
        for key, param in spec.hyperparam_mutations.items():
            if param.kind == "grid" or param.is_conditional:
                raise SweepError(f"scheduler.hyperparam_mutations.{key}: pbt perturbs only plain choice or ranges")
    return spec


def _parse_arms(raw: Any) -> list[Arm]:
    """`arms: [{name: NAME, dotted.key: value, ...}, ...]`: names unique, keys dotted config keys."""
    if not isinstance(raw, list):
        raise SweepError(f"arms: expected a list of {{name: ..., dotted.key: value}} mappings, got {raw!r}")
    arms: list[Arm] = []
    for i, item in enumerate(raw):
        item = dict(_mapping(item, f"arms[{i}]"))
        name = item.pop("name", None)
        if not isinstance(name, str) or not name.strip():
            raise SweepError(f"arms[{i}].name: expected a non-empty string, got {name!r}")
        if any(a.name == name and a.method == item.get("method.name") for a in arms):
            raise SweepError(f"arms[{i}].name: {name!r} names two arms of one method")
        for key in item:
            _dotted_key(key, f"arms[{i}] ({name}).{key}")
            if key == ARM_KEY:
                raise SweepError(f"arms[{i}] ({name}).{key}: set by the arm's name")
        arms.append(Arm(name=name, overrides=item))
    return arms


def _parse_trial(raw: Any) -> TrialSpec:
    raw = _mapping(raw, "trial")
    _no_unknown(raw, ("driver_resources", "max_failures", "final_eval"), "trial.")
    spec = TrialSpec()
    if "driver_resources" in raw:
        resources = _mapping(raw["driver_resources"], "trial.driver_resources")
        for name, amount in resources.items():
            if not _is_number(amount) or amount < 0:
                raise SweepError(f"trial.driver_resources.{name}: expected a number >= 0, got {amount!r}")
        spec.driver_resources = {str(k): float(v) for k, v in resources.items()}
    spec.max_failures = _int(raw.get("max_failures", 0), "trial.max_failures", minimum=-1)
    final_eval = raw.get("final_eval", False)
    if not isinstance(final_eval, bool):
        raise SweepError(f"trial.final_eval: expected true or false, got {final_eval!r}")
    spec.final_eval = final_eval
    return spec


def _check_consistency(spec: SweepSpec) -> None:
    """Cross-key rules: what each search algorithm can express."""
    params = _all_params(spec.space)
    if spec.search.algorithm == "grid":
        for where, param in params:
            if param.kind not in ("choice", "grid"):
                raise SweepError(
                    f"{where}: search.algorithm 'grid' needs discrete values (choice/grid), got {param.kind}"
                )
    if spec.search.algorithm == "optuna":
        for where, param in params:
            if param.kind == "grid" or param.is_conditional:
                raise SweepError(f"{where}: search.algorithm 'optuna' supports no grid and no conditional choices")
        if spec.scheduler.kind == "pbt":
            raise SweepError("search.algorithm: 'optuna' cannot be combined with scheduler.kind 'pbt'")
    for key in spec.overrides:
        if key in spec.searched_keys():
            raise SweepError(f"overrides.{key}: also searched or set by an arm; set it in one place only")
    searched = {where.rsplit("space.", 1)[-1] for where, _ in params} | set(spec.scheduler.hyperparam_mutations)
    for arm in spec.arms:
        clash = sorted(set(arm.overrides) & searched)
        if clash:
            raise SweepError(f"arms ({arm.name}).{clash[0]}: also in space; an arm fixes keys the space does not "
                             "search")
    if spec.trial.final_eval and spec.scheduler.kind == "pbt":
        raise SweepError("trial.final_eval: PBT trials restart from other trials' checkpoints; score the final "
                         "checkpoints with `hexray eval` instead")
    if spec.arms and spec.scheduler.kind != "fifo":
        raise SweepError(f"arms: a controlled comparison runs every arm to the end; scheduler.kind "
                         f"{spec.scheduler.kind!r} would stop or perturb some (use 'fifo')")


def _all_params(space: Mapping[str, ParamSpec], where: str = "space") -> list[tuple[str, ParamSpec]]:
    found = []
    for key, param in space.items():
        found.append((f"{where}.{key}", param))
        for i, branch in enumerate(param.branches):
            found.extend(_all_params(branch.space, f"{where}.{key}.{param.kind}[{i}].space"))
    return found


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SweepError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
    for key in value:
        if not isinstance(key, str):
            raise SweepError(f"{where}: keys must be strings, got {key!r}")
    return value


def _no_unknown(raw: Mapping[str, Any], allowed: tuple[str, ...], prefix: str, context: str = "") -> None:
    for key in raw:
        if key not in allowed:
            suffix = f" {context}" if context else ""
            raise SweepError(f"{prefix}{key}: unknown key{suffix}; allowed: {', '.join(allowed)}")


def _dotted_key(key: str, where: str) -> None:
    if not isinstance(key, str) or not key or any(not part for part in key.split(".")):
        raise SweepError(f"{where}: expected a dotted config key like 'hex.beta', got {key!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(value: Any, where: str) -> float:
    if not _is_number(value):
        raise SweepError(f"{where}: expected a number, got {value!r}")
    return float(value)


def _int(value: Any, where: str, *, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise SweepError(f"{where}: expected an integer, got {value!r}")
    if value < minimum:
        raise SweepError(f"{where}: must be >= {minimum}, got {value}")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise SweepError(f"{where}: expected a non-empty string, got {value!r}")
    return value


def _one_of(value: Any, allowed: tuple[str, ...], where: str) -> str:
    if value not in allowed:
        raise SweepError(f"{where}: expected one of {', '.join(allowed)}, got {value!r}")
    return value
