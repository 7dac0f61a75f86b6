"""Undo the ``flat`` npm package's ``flatten()``, which the panel's Flatten option applies."""

from __future__ import annotations

from typing import Any

__all__ = ["unflatten"]


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """Undo ``flat.flatten()``: dotted keys become nested objects, numeric segments arrays.

    A dict whose keys are all numeric becomes a list in index order without filling gaps, so a
    hostile index costs nothing. ``flatten()`` never makes a key that is both a value and a
    parent (``{"a": 1, "a.b": 2}``); in a body that has one, the nested keys win and the value
    is ignored, as an unknown field would be.
    """
    root: dict[str, Any] = {}
    for key, value in flat.items():
        node, leaf = root, key
        if "." in key:
            *parents, leaf = key.split(".")
            for part in parents:
                child = node.get(part)
                if type(child) is not dict:  # absent, or a value the nested keys replace
                    child = node[part] = {}
                node = child
        old = node.get(leaf)
        if type(old) is dict and old:
            continue  # a value where nested keys already are (or flat's empty container)
        node[leaf] = value
    result: dict[str, Any] = _listify(root)
    return result


def _listify(node: dict[str, Any]) -> Any:
    """Return ``node`` with every dict inside whose keys are all indices made a list."""
    items = {key: _listify(value) if type(value) is dict else value for key, value in node.items()}
    # ASCII digits only: "²" is a digit to str.isdigit, but no number to int().
    if items and all(key.isascii() and key.isdigit() for key in items):
        return [items[key] for key in sorted(items, key=int)]
    return items
