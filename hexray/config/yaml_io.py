"""YAML reading/writing and `--set key.path=value` overrides for configs.

PyYAML follows YAML 1.1, where `1e-3` (no dot) is a *string* and `off`/`yes` are booleans; the loader here reads
scalars the YAML 1.2 way instead. Override values are parsed with the same loader, so `--set optim.lr=1e-3`,
`--set scaling.use_gpu=true` and `--set data.limit_train=null` arrive typed.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from hexray.config.binding import ConfigError


class ConfigLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 scalars: `1e-3` is a float; only true/false are booleans (`on`/`off`/`yes`/`no`
    stay strings, so `fast.compile: off` means the string 'off', as the Literal expects)."""


    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        """A key written twice in one mapping is an error (PyYAML would silently keep the last one)."""
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                line = key_node.start_mark.line + 1
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r} (line {line})",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_BOOL, _FLOAT = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:float"
ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ConfigLoader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
ConfigLoader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML text; a syntax error becomes a ConfigError naming `source`."""
    try:
        return yaml.load(text, Loader=ConfigLoader)  # noqa: S506 — ConfigLoader is a SafeLoader
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML: {err}") from None


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML file (local path or URI) whose top level is a mapping (an empty file is an empty mapping)."""
    from hexray import storage

    path = storage.normalize(str(path))  # a local file or a URI (a run directory on object storage)
    if not storage.is_file(path):
        raise ConfigError(f"config file {path!r} does not exist")
    data = parse_yaml(storage.read_text(path), path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def dump_yaml(data: Mapping[str, Any]) -> str:
    """YAML text in the field order of the dataclasses (no key sorting), readable by `read_yaml_mapping`."""
    return yaml.safe_dump(dict(data), sort_keys=False, default_flow_style=False, allow_unicode=True)


def _split_override(item: str) -> tuple[str, Any]:
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {item!r}: expected key.path=value, e.g. hex.local_weight=0.5")
    return key, parse_yaml(raw, f"override {key}") if raw.strip() else None


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str] | Mapping[str, Any] = ()) -> dict[str, Any]:
    """Return a copy of `data` with dotted-key overrides applied.

    `overrides` is a list of `key.path=value` strings (values YAML-parsed; an empty value is null) or a mapping of
    dotted keys to Python values (as Tune passes them). A mapping value is merged into an existing mapping, key by
    key. Missing intermediate sections are created; whether a key exists at all is checked later, by the typed
    binding, which suggests close names.
    """
    out = copy.deepcopy(dict(data))
    if isinstance(overrides, str):
        overrides = [overrides]
    items = overrides.items() if isinstance(overrides, Mapping) else (_split_override(o) for o in overrides)
    for dotted, value in items:
        parts = str(dotted).split(".")
        if any(not p for p in parts):
            raise ConfigError(f"override {dotted!r}: empty key segment")
        node = out
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                raise ConfigError(f"override {dotted!r}: {where} is a value ({child!r}), not a section")
            node = child
        _merge(node, parts[-1], copy.deepcopy(value))
    return out


def _merge(node: dict[str, Any], key: str, value: Any) -> None:
    """Set node[key] = value, merging mappings key by key (`{"hex": {"beta": 2}}` keeps hex's other keys)."""
    if isinstance(value, dict) and isinstance(node.get(key), dict):
        for sub_key, sub_value in value.items():
            _merge(node[key], sub_key, sub_value)
    else:
        node[key] = value
