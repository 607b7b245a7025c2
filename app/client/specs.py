"""Job specs from files (JSON or YAML) and `--set dotted.path=JSON` overrides."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml


class SpecError(ValueError):
    """A spec file or an override that cannot be read; the message says which and why."""


def load_spec(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"{path}: {exc.strerror or exc}") from exc
    try:
        spec = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise SpecError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from exc
    if not isinstance(spec, dict):
        raise SpecError(f"{path}: a job spec is an object (a mapping), not {type(spec).__name__}")
    return spec


def parse_value(text: str) -> Any:
    """JSON when it parses (4, 0.5, true, [0,1], {"a": 1}, "x"), else the text itself (kd)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def apply_override(spec: dict[str, Any], assignment: str) -> dict[str, Any]:
    """A copy of `spec` with `path.to.field=VALUE` set; missing objects on the way are created,
    a number indexes into a list (seeds.0=3)."""
    path, sep, raw = assignment.partition("=")
    keys = list(path.strip().split("."))
    if not sep or not all(keys):
        raise SpecError(f"--set {assignment!r}: write it as dotted.path=VALUE, e.g. training.epochs=20")
    result = copy.deepcopy(spec)
    node: Any = result
    for i, name in enumerate(keys):
        last = i == len(keys) - 1
        key: str | int = name
        if isinstance(node, list):
            if not name.isdigit() or int(name) >= len(node):
                raise SpecError(
                    f"--set {assignment!r}: {'.'.join(keys[:i]) or 'the spec'} is a list of "
                    f"{len(node)}; {name!r} is not an index in it"
                )
            key = int(name)
        elif not isinstance(node, dict):
            raise SpecError(f"--set {assignment!r}: {'.'.join(keys[:i])} is a value, not an object")
        if last:
            node[key] = parse_value(raw)
        else:
            if isinstance(node, dict) and node.get(key) is None:
                node[key] = {}
            node = node[key]
    return result


def apply_overrides(spec: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    for assignment in assignments:
        spec = apply_override(spec, assignment)
    return spec
