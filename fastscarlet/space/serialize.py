"""A search space as plain data (dicts, lists, str, int, float, bool, None) and back.

Files that outlive the process that wrote them (latency tables, exported subnets) carry the whole
space, not only its registry name: a custom or width-scaled space, or a built-in one whose
definition later changes, still rebuilds exactly, in a process that never registered it. The form
is JSON-serialisable and loadable by ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from fastscarlet.space.spaces import Choice, FirstBlock, Head, Layer, SearchSpace, SEConfig, Stem

SPACE_FORMAT = "fastscarlet.space/1"

# The nested dataclasses of a SearchSpace, by field name (a sequence field holds several).
_NESTED: dict[str, type] = {
    "choices": Choice,
    "layers": Layer,
    "stem": Stem,
    "first_block": FirstBlock,
    "head": Head,
    "se": SEConfig,
}


def space_to_dict(space: SearchSpace) -> dict[str, Any]:
    """Every field of ``space`` as plain data, with a ``format`` tag."""
    return {"format": SPACE_FORMAT, **dataclasses.asdict(space)}


def _tuples(value: Any) -> Any:
    # Frozen dataclasses hold tuples (hashable); JSON and asdict give lists.
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping of {cls.__name__} fields, got {data!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where}: unknown {cls.__name__} fields {unknown}")
    return cls(**{k: _tuples(v) for k, v in data.items()})


def space_from_dict(data: dict[str, Any]) -> SearchSpace:
    """Inverse of :func:`space_to_dict` (raises ``ValueError`` naming a malformed field)."""
    if not isinstance(data, dict) or data.get("format") != SPACE_FORMAT:
        fmt = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ValueError(
            f"not a serialised search space (format {fmt!r}, expected {SPACE_FORMAT!r})"
        )
    fields = {k: v for k, v in data.items() if k != "format"}
    kwargs: dict[str, Any] = {}
    for key, value in fields.items():
        cls = _NESTED.get(key)
        if cls is None:
            kwargs[key] = _tuples(value)
        elif key in ("choices", "layers"):
            if not isinstance(value, list | tuple):
                raise ValueError(f"space field {key!r}: expected a list, got {value!r}")
            kwargs[key] = tuple(_build(cls, v, f"space {key}[{i}]") for i, v in enumerate(value))
        else:
            kwargs[key] = _build(cls, value, f"space field {key!r}")
    try:
        return SearchSpace(**kwargs)
    except TypeError as exc:
        raise ValueError(f"malformed search space: {exc}") from None


def load_json(path: str | os.PathLike, what: str) -> Any:
    """The JSON content of ``path``: ``FileNotFoundError`` or ``ValueError`` naming ``what`` the
    file should have been (``"latency table"``, ...)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not a {what} (not JSON: {exc})") from None
