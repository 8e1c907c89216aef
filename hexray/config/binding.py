"""Bind plain dicts (parsed YAML) onto any tree of dataclasses, and back.

Generic over the tree: it walks `dataclasses.fields` and their type hints (bool, int, float, str, Any, Literal,
Optional/unions, list, tuple, dict, nested dataclasses), so a section added anywhere in the tree is checked without
touching this file. Every problem is reported with its dotted key path; all problems of one config are collected
into a single `ConfigError`, so a user fixes a file in one pass, not one key per run.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from hexray.errors import InputError

NoneType = type(None)


class ConfigError(InputError):
    """A config is invalid. `errors` lists one line per problem, each starting with the dotted key path."""

    def __init__(self, errors: list[str] | str):
        self.errors = [errors] if isinstance(errors, str) else list(errors)
        if len(self.errors) == 1:
            super().__init__(f"invalid config: {self.errors[0]}")
        else:
            super().__init__("invalid config:\n  " + "\n  ".join(self.errors))


class _Invalid(Exception):
    """Internal: one value failed its type; carries the message without the path."""


def describe_type(tp: Any) -> str:
    """Human wording of a type hint, used in error messages ("null or float", "one of 'a', 'b'")."""
    origin = get_origin(tp)
    if tp is Any:
        return "any value"
    if tp is NoneType:
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(describe_type(a) for a in get_args(tp))
    if origin in (list, Sequence) or tp is list:
        args = get_args(tp)
        return f"list of {describe_type(args[0])}" if args else "list"
    if origin is tuple or tp is tuple:
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {describe_type(args[0])}"
        return f"list of {len(args)} values" if args else "list"
    if origin in (dict, Mapping) or tp is dict:
        args = get_args(tp)
        return f"mapping of {describe_type(args[0])} to {describe_type(args[1])}" if args else "mapping"
    if dataclasses.is_dataclass(tp):
        return f"mapping (section {tp.__name__})"
    plain = {bool: "bool (true/false)", int: "integer", float: "number", str: "string"}
    return plain.get(tp, getattr(tp, "__name__", str(tp)))


def _type_name(value: Any) -> str:
    return {NoneType: "null", bool: "bool", int: "integer", float: "number", str: "string", list: "list",
            dict: "mapping"}.get(type(value), type(value).__name__)


def _wrong(tp: Any, value: Any) -> _Invalid:
    return _Invalid(f"expected {describe_type(tp)}, got {_type_name(value)} {value!r}")


def coerce(tp: Any, value: Any, path: str, errors: list[str]) -> Any:
    """Check `value` against type hint `tp` and return it in that type (dataclasses built, tuples made)."""
    try:
        return _coerce(tp, value, path, errors)
    except _Invalid as err:
        errors.append(f"{path}: {err}")
        return None


def _coerce(tp: Any, value: Any, path: str, errors: list[str]) -> Any:
    origin = get_origin(tp)
    if tp is Any or tp is object:
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise _wrong(tp, value)
        return build_dataclass(tp, value, path, errors)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _wrong(tp, value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _wrong(tp, value)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _wrong(tp, value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _wrong(tp, value)
    if origin is Literal:
        for allowed in get_args(tp):
            if value == allowed and type(value) is type(allowed):
                return value
        raise _Invalid(f"must be one of {', '.join(repr(a) for a in get_args(tp))}; got {value!r}")
    if origin in (Union, types.UnionType):
        members = get_args(tp)
        if value is None:
            if NoneType in members:
                return None
            raise _wrong(tp, value)
        for member in members:
            if member is NoneType:
                continue
            trial: list[str] = []
            try:
                result = _coerce(member, value, path, trial)
            except _Invalid:
                continue
            if not trial:
                return result
        raise _wrong(tp, value)
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _wrong(tp, value)
        args = get_args(tp)
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise _Invalid(f"expected a list of {len(args)} values, got {len(value)}")
            item_types = list(args)
        else:
            item_types = [args[0] if args else Any] * len(value)
        items = [coerce(t, v, f"{path}[{i}]", errors) for i, (t, v) in enumerate(zip(item_types, value, strict=True))]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise _wrong(tp, value)
        key_tp, val_tp = get_args(tp) or (Any, Any)
        out = {}
        for key, item in value.items():
            key = coerce(key_tp, key, f"{path} key {key!r}", errors)
            out[key] = coerce(val_tp, item, f"{path}.{key}", errors)
        return out
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise _wrong(tp, value)
    return value  # an annotation this binder does not know: trust the dataclass's own checks


def closest(value: Any, allowed: Iterable[str]) -> str | None:
    """The allowed name a misspelt `value` most likely meant (difflib, similarity >= 0.6), or None."""
    close = difflib.get_close_matches(str(value), list(allowed), n=1, cutoff=0.6)
    return close[0] if close else None


def unknown_key_message(path: str, key: Any, allowed: list[str]) -> str:
    """'path.key: unknown key; did you mean 'x'? allowed: a, b, c' — difflib picks the suggestion."""
    where = f"{path}.{key}" if path else str(key)
    close = closest(key, allowed)
    hint = f"; did you mean {close!r}?" if close else ""
    return f"{where}: unknown key{hint} (allowed: {', '.join(allowed)})"


def choice_message(key: str, value: Any, allowed: list[str] | tuple[str, ...]) -> str:
    """'key must be one of a, b, c; got 'x' (did you mean 'a'?)' — for names checked against a registry."""
    close = closest(value, allowed)
    hint = f" (did you mean {close!r}?)" if close else ""
    return f"{key} must be one of {', '.join(sorted(allowed))}; got {value!r}{hint}"


def _path_message(path: str, msg: str) -> str:
    """Prefix a dataclass's own validation message with its key path, unless it already names it."""
    if not path or msg.startswith(f"{path}.") or msg.startswith(f"{path}:") or msg.startswith(f"{path} "):
        return msg
    return f"{path}: {msg}"


def build_dataclass(cls: type, data: Mapping[str, Any], path: str, errors: list[str]) -> Any:
    """Build `cls` from `data`: unknown keys and wrong types go to `errors`; missing keys take the defaults.

    The dataclass's own `__post_init__` runs last; a ValueError/TypeError from it is recorded with the path.
    Returns None when any error was recorded inside this subtree.
    """
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    hints = get_type_hints(cls)
    before = len(errors)
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            errors.append(unknown_key_message(path, key, names))
            continue
        kwargs[key] = coerce(hints.get(key, Any), value, f"{path}.{key}" if path else key, errors)
    if len(errors) > before:
        return None
    try:
        return cls(**kwargs)
    except ConfigError as err:
        errors.extend(_path_message(path, line) for line in err.errors)
        return None
    except (ValueError, TypeError) as err:
        errors.append(_path_message(path, str(err)))
        return None


def to_plain(obj: Any) -> Any:
    """Dataclass tree → plain dicts/lists/scalars (tuples become lists) that `yaml.safe_dump` can write."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj
