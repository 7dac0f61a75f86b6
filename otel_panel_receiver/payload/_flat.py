"""Undo the ``flat`` npm package's ``flatten()``, which the panel's Flatten option applies."""

from __future__ import annotations

from typing import Any

from otel_panel_receiver.errors import PayloadError

__all__ = ["unflatten"]


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """Undo ``flat.flatten()``: dotted keys become nested objects, numeric segments arrays.

    A dict whose keys are all numeric becomes a list in index order without filling gaps, so a
    hostile index costs nothing. A key that is both a value and a parent is a ``PayloadError``.
    """
    root: dict[str, Any] = {}
    for key, value in flat.items():
        parts = key.split(".")
        node = root
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None or child in ([], {}):
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise PayloadError("key is both a value and a parent", ".".join(parts[: depth + 1]))
            node = child
        leaf = parts[-1]
        if isinstance(node.get(leaf), dict) and node[leaf]:
            if value in ([], {}):
                continue  # flat keeps empty containers as values: nothing to merge
            raise PayloadError("key is both a value and a parent", key)
        node[leaf] = value
    result: dict[str, Any] = _listify(root)
    return result


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    items = {key: _listify(value) for key, value in node.items()}
    # ASCII digits only: "²" is a digit to str.isdigit, but no number to int().
    if items and all(key.isascii() and key.isdigit() for key in items):
        return [items[key] for key in sorted(items, key=int)]
    return items
