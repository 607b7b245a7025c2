"""The base of every contract model: strict (typos and wrong types are errors), compact when
serialised (optional keys that hold their default are left out)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    # A typo in a field name is an error, not a silently ignored option; and a value
    # of the wrong type ("baseline": 0, "epochs": "5") is refused, not coerced.
    model_config = ConfigDict(extra="forbid", strict=True)


def without_defaults(data, **defaults):
    """A serialised model without the optional keys that hold their default (so a stored spec
    reads as it did before those options existed)."""
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if not (k in defaults and v == defaults[k])}
    return data
