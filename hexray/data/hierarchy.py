"""Class→superclass maps from a CSV or JSON file (`hexray shard --hierarchy FILE`).

Accepted forms: CSV rows `class,superclass` (an optional header row `class,superclass`); JSON either
`{"class": "superclass", ...}` or `{"superclass": ["class", ...], ...}`. Superclasses are numbered in order of
first appearance, so a file's order is the order users see in reports.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from hexray.errors import DataError


def parse_hierarchy(pairs: list[tuple[str, str]], class_names: list[str], where: str) -> tuple[list[str], list[int]]:
    """(superclass_names, class_to_superclass) for `class_names` from (class, superclass) pairs; strict both ways."""
    mapping: dict[str, str] = {}
    for cls, sup in pairs:
        if cls in mapping and mapping[cls] != sup:
            raise DataError(f"{where}: class {cls!r} is given two superclasses ({mapping[cls]!r} and {sup!r})")
        mapping[cls] = sup
    unknown = sorted(set(mapping) - set(class_names))
    if unknown:
        raise DataError(f"{where}: classes {unknown[:5]} are not in the dataset (it has {class_names[:5]}...)")
    missing = [c for c in class_names if c not in mapping]
    if missing:
        raise DataError(f"{where}: no superclass for classes {missing[:5]} ({len(missing)} in all)")
    names: list[str] = []
    for _, sup in pairs:
        if sup not in names:
            names.append(sup)
    return names, [names.index(mapping[c]) for c in class_names]


def read_pairs(path: str | Path) -> list[tuple[str, str]]:
    """(class, superclass) pairs from a CSV or JSON hierarchy file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"hierarchy file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"hierarchy file {path} is not valid JSON: {err}") from err
        if not isinstance(data, dict):
            raise DataError(f"hierarchy file {path} must hold a JSON object")
        pairs: list[tuple[str, str]] = []
        for key, value in data.items():
            if isinstance(value, list):
                pairs.extend((str(c), str(key)) for c in value)
            elif isinstance(value, str):
                pairs.append((str(key), value))
            else:
                raise DataError(f"hierarchy file {path}: value for {key!r} must be a string or a list of strings")
        return pairs
    rows = [r for r in csv.reader(text.splitlines()) if r and any(x.strip() for x in r)]
    if rows and [x.strip().lower() for x in rows[0]] == ["class", "superclass"]:
        rows = rows[1:]
    for i, row in enumerate(rows, start=1):
        if len(row) != 2:
            raise DataError(f"hierarchy file {path}: row {i} must be `class,superclass`, got {row!r}")
    return [(r[0].strip(), r[1].strip()) for r in rows]


def load_hierarchy(path: str | Path, class_names: list[str]) -> tuple[list[str], list[int]]:
    return parse_hierarchy(read_pairs(path), class_names, str(path))
