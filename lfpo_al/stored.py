"""A stored record read back into its dataclass, whichever release wrote it."""

from __future__ import annotations

from dataclasses import MISSING, fields


def from_stored(cls, stored: dict):
    """``cls`` from a stored dict: a key it lacks takes the field's default (None where the field has
    none); a key another release wrote beside the fields is left out."""
    values = {}
    for field in fields(cls):
        if field.name in stored:
            values[field.name] = stored[field.name]
        elif field.default is MISSING and field.default_factory is MISSING:
            values[field.name] = None
    return cls(**values)
