"""Hints for the common mistakes in a JSON body, found from the body's pydantic model.

- a field one level off: `teacher: {"arch": ...}` -> put it under teacher.train;
- a near-miss field name: `temprature` -> did you mean `temperature`?
- neither: the fields the object takes.

A validation error's location goes through the model's types (Optional, lists, dicts, unions:
a discriminated union's tag or a smart union's class name is a step of the location too).
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Sequence
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

MAX_LISTED = 12  # fields named when no hint fits


def _types(annotation: Any) -> list[Any]:
    """The concrete types an annotation allows: Annotated, Optional and unions opened."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _types(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [t for arg in get_args(annotation) for t in _types(arg)]
    return [] if annotation is type(None) else [annotation]


def _is_model(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, BaseModel)


def _tags(model: type[BaseModel]) -> set[Any]:
    """What names this model in a discriminated union's error location: its literal tag."""
    tags: set[Any] = set()
    for info in model.model_fields.values():
        if get_origin(info.annotation) is Literal:
            tags |= set(get_args(info.annotation))
    return tags


def _fields(model: type[BaseModel]) -> dict[str, Any]:
    """The model's fields by the name a client writes (its alias, if it has one)."""
    return {info.alias or name: info for name, info in model.model_fields.items()}


def _step(candidates: list[Any], part: str | int) -> list[Any]:
    models = [t for t in candidates if _is_model(t)]
    if any(part in _fields(m) for m in models):
        pass  # a key of the body
    elif any(part == m.__name__ for m in models):
        return models  # a smart union tried each member: the client's object may be any of them
    elif tagged := [m for m in models if part in _tags(m)]:
        return tagged  # a discriminated union's tag: the member the client named
    found: list[Any] = []
    for t in candidates:
        origin = get_origin(t)
        if _is_model(t) and part in _fields(t):
            found += _types(_fields(t)[part].annotation)
        elif origin in (list, tuple, set, frozenset) and isinstance(part, int):
            found += _types(get_args(t)[0])
        elif origin is dict and isinstance(part, str):
            found += _types(get_args(t)[1])
    return found


def models_at(root: type[BaseModel], loc: Sequence[str | int]) -> list[type[BaseModel]]:
    """The models that may hold the object at `loc` (a pydantic error location, body-relative)."""
    candidates: list[Any] = [root]
    for part in loc:
        candidates = _step(candidates, part)
    return [t for t in candidates if _is_model(t)]


def _homes(models: list[type[BaseModel]], name: str) -> list[str]:
    """Fields of these models whose own object takes `name`: where it belongs, one level down."""
    homes: list[str] = []
    for model in models:
        for field, info in _fields(model).items():
            inner = [t for t in _types(info.annotation) if _is_model(t)]
            if any(name in _fields(m) for m in inner) and field not in homes:
                homes.append(field)
    return homes


def extra_field_hint(root: type[BaseModel], loc: Sequence[str | int], where: str) -> str | None:
    """What to do about an unknown field at `loc`; `where` is its object's dotted path as the
    client wrote it ("" for the body itself)."""
    *parent, name = loc
    models = models_at(root, parent)
    if not models or not isinstance(name, str):
        return None
    known = list(dict.fromkeys(f for m in models for f in _fields(m)))
    prefix = f"{where}." if where else ""
    hints = []
    if homes := _homes(models, name):
        places = [f"{prefix}{home}" for home in homes]
        others = f" (or {', '.join(places[1:])})" if len(places) > 1 else ""
        hints.append(f"It belongs one level down: put it under {places[0]}{others}.")
    if close := difflib.get_close_matches(name, known, n=1, cutoff=0.7):
        hints.append(f"Did you mean `{close[0]}`?")
    if not hints:
        listed = ", ".join(known[:MAX_LISTED]) + (", ..." if len(known) > MAX_LISTED else "")
        hints.append(f"{where or 'The body'} takes: {listed}.")
    return " ".join(hints)
