"""Map a sweep's search space onto Ray Tune domains, and a trial's Tune config back onto dotted config keys.

Tune configs are flat at the top (one entry per dotted key, e.g. `"hex.quantile"`), so results and PBT address
keys exactly as the training config names them. A conditional choice becomes `tune.choice` over dicts
`{"_value": V, "<sub.key>": domain, ...}`; Tune resolves the nested domains of the option it picks, and
`flatten_trial_config` turns the option back into `{key: V, sub.key: value}` at trial start.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping
from typing import Any

from hexray.tune.spec import ARM_KEY, Branch, ParamSpec, SweepError, SweepSpec

VALUE_KEY = "_value"


def to_tune_space(spec: SweepSpec) -> dict[str, Any]:
    """The Tuner's `param_space`. With `search.algorithm: grid`, every `choice` is enumerated as a grid too."""
    from ray import tune

    as_grid = spec.search.algorithm == "grid"
    space = {key: _domain(param, as_grid, tune) for key, param in spec.space.items()}
    if spec.arms:  # every arm with every point of the space (Tune varies the arm fastest: seed 0 of every arm,
        # then seed 1, ...); flatten_trial_config unfolds the arm's keys
        space[ARM_KEY] = tune.grid_search([arm_option(arm) for arm in spec.arms])
    for key, param in spec.scheduler.hyperparam_mutations.items():
        space.setdefault(key, _domain(param, False, tune))  # PBT perturbs keys that must also have a start value
    return space


def trial_count(spec: SweepSpec) -> int:
    """How many trials Tune will run: `num_samples` × the size of the grid (every `grid` key, and with
    `search.algorithm: grid` every `choice` key, enumerated with its conditional sub-keys)."""
    as_grid = spec.search.algorithm == "grid"
    grid = 1
    for param in spec.space.values():
        if param.kind == "grid" or (as_grid and param.kind == "choice"):
            grid *= sum(len(_expand_branch(branch)) for branch in param.branches)
    return spec.num_samples * grid * max(1, len(spec.arms))


def arm_option(arm: Any) -> dict[str, Any]:
    """An arm as one grid value: `{key: value, ..., _value: name}` (the conditional-choice form; the name last,
    since Tune's trial table shows the end of a long value)."""
    return {**arm.overrides, VALUE_KEY: arm.name}


def describe_space(space: Mapping[str, ParamSpec], indent: str = "") -> list[str]:
    """One line per searched key with its distribution and values (conditional keys indented under their option),
    as resolved: numbers are numbers, whatever YAML made of them."""
    lines = []
    for key, param in space.items():
        if param.kind in ("choice", "grid"):
            lines.append(f"{indent}{key}: {param.kind} {[branch.value for branch in param.branches]!r}")
            for branch in param.branches:
                if branch.space:
                    lines.append(f"{indent}  when {key} = {branch.value!r}:")
                    lines.extend(describe_space(branch.space, indent + "    "))
        else:
            lines.append(f"{indent}{key}: {param.kind}({param.low!r}, {param.high!r})")
    return lines


def pbt_mutations(spec: SweepSpec) -> dict[str, Any]:
    """`hyperparam_mutations` for PopulationBasedTraining, keyed like the param space.

    A `choice` is given to PBT as a plain list: PBT then moves to a neighbouring value, whereas a Tune domain
    would be scaled by 0.8/1.2 and leave the listed values."""
    from ray import tune

    return {
        key: [b.value for b in param.branches] if param.kind == "choice" else _domain(param, False, tune)
        for key, param in spec.scheduler.hyperparam_mutations.items()
    }


def _domain(param: ParamSpec, as_grid: bool, tune: Any) -> Any:
    if param.kind == "uniform":
        return tune.uniform(param.low, param.high)
    if param.kind == "loguniform":
        return tune.loguniform(param.low, param.high)
    if param.kind == "randint":
        return tune.randint(param.low, param.high)
    if as_grid or param.kind == "grid":
        options = [option for branch in param.branches for option in _expand_branch(branch)]
        return tune.grid_search(options)
    if param.is_conditional:
        return tune.choice([_branch_option(branch, tune) for branch in param.branches])
    return tune.choice([branch.value for branch in param.branches])


def _branch_option(branch: Branch, tune: Any) -> dict[str, Any]:
    return {**{k: _domain(p, False, tune) for k, p in branch.space.items()}, VALUE_KEY: branch.value}


def _expand_branch(branch: Branch) -> list[Any]:
    """Grid enumeration of one option: the plain value, or one dict per combination of its sub-space's values."""
    if not branch.space:
        return [branch.value]
    keys = list(branch.space)
    value_lists = [[option for b in branch.space[k].branches for option in _expand_branch(b)] for k in keys]
    return [{**dict(zip(keys, combo, strict=True)), VALUE_KEY: branch.value}
            for combo in itertools.product(*value_lists)]


def flatten_trial_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's Tune config as `{dotted.key: value}` overrides (conditional options unfolded)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping) and VALUE_KEY in value:
            out[key] = value[VALUE_KEY]
            out.update(flatten_trial_config({k: v for k, v in value.items() if k != VALUE_KEY}))
        else:
            out[key] = value
    return out


TRIAL_DIRNAME_CHARS = 100  # a trial's directory name at most; S3 keys and Windows paths stay short


def trial_dirname(trial_id: str, config: Mapping[str, Any]) -> str:
    """A trial directory's name: Tune's id, then each searched key's last part and its value, an arm by its name.

    Tune's own name spells out every value of every nested option, so an arm (a dict of keys) gave names of 150+
    characters. The id keeps names unique; the rest is for a reader listing the experiment directory."""
    parts = [trial_id]
    for key, value in config.items():
        shown = value[VALUE_KEY] if isinstance(value, Mapping) and VALUE_KEY in value else value
        if isinstance(shown, float):
            shown = f"{shown:.4g}"
        parts.append(f"{key.rsplit('.', 1)[-1]}={shown}")
    name = re.sub(r"[^A-Za-z0-9._=+-]+", "-", "_".join(parts))
    return name[:TRIAL_DIRNAME_CHARS].rstrip("-_")


def candidate_assignments(spec: SweepSpec) -> list[dict[str, Any]]:
    """Assignments that together touch every searched key and every value a trial can draw (ranges: both ends).

    Each assignment sets one key (plus the choices its conditional parents need), so a failure names one key.
    """
    out = _assignments(spec.space, {})
    out.extend(_assignments(spec.scheduler.hyperparam_mutations, {}))
    out.extend({ARM_KEY: arm.name, **arm.overrides} for arm in spec.arms)
    return out


def _assignments(space: Mapping[str, ParamSpec], parents: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for key, param in space.items():
        if param.kind in ("choice", "grid"):
            for branch in param.branches:
                here = {**parents, key: branch.value}
                out.append(here)
                out.extend(_assignments(branch.space, here))
        else:
            high = param.high - 1 if param.kind == "randint" else param.high
            out.extend({**parents, key: value} for value in (param.low, high))
    return out


def validate_space(
    spec: SweepSpec,
    base: Mapping[str, Any],
    *,
    apply_overrides: Callable[[Mapping[str, Any], Mapping[str, Any]], dict[str, Any]],
    config_from_dict: Callable[[Mapping[str, Any]], Any],
) -> None:
    """Fail before any trial starts if a searched key or value does not fit the training config tree.

    `base` is the base config mapping; the fixed overrides are checked first, then each candidate assignment.
    """
    try:
        config_from_dict(apply_overrides(base, spec.overrides))
    except ValueError as err:
        raise SweepError(f"overrides: the base config with the sweep's overrides is invalid: {err}") from err
    for assignment in candidate_assignments(spec):
        key, value = list(assignment.items())[-1]
        try:
            config_from_dict(apply_overrides(base, {**spec.overrides, **assignment}))
        except ValueError as err:
            where = _where(spec, key)
            raise SweepError(f"{where}: value {value!r} does not fit the training config: {err}") from err


def _where(spec: SweepSpec, key: str) -> str:
    arm = next((a for a in spec.arms if key in a.overrides), None)
    if arm is not None and key not in spec.space:
        return f"arms ({arm.name}).{key}"
    if key in spec.scheduler.hyperparam_mutations and key not in spec.space:
        return f"scheduler.hyperparam_mutations.{key}"
    return f"space.{key}"
