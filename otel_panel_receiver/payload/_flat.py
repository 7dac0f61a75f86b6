"""Undo the ``flat`` npm package's ``flatten()``, which the panel's Flatten option applies."""

from __future__ import annotations

from typing import Any, Final

from otel_panel_receiver.memo import Memo

__all__ = ["path_of", "unflatten"]

#: A dotted key's parents (each with whether it is a list index), its leaf, likewise, and its
#: first segment (the group of a flattened payload it belongs to).
Path = tuple[tuple[tuple[str, bool], ...], str, bool, str]
#: The paths of keys seen: the panel sends the same few dozen keys again and again. Bounded
#: (keys of at most 256 characters, 4,096 of them, emptied when full): a client chooses them.
_PATHS: Final[Memo[str, Path]] = Memo(kept=4096, largest=256, size=len)


def unflatten(flat: dict[str, Any]) -> Any:
    """Undo ``flat.flatten()``: dotted keys become nested objects, numeric segments arrays.

    A dict whose keys are all numeric becomes a list in index order without filling gaps, so a
    hostile index costs nothing. ``flatten()`` never makes a key that is both a value and a
    parent (``{"a": 1, "a.b": 2}``); in a body that has one, the nested keys win and the value
    is ignored, as an unknown field would be.

    The objects made here are turned into lists as they are found to hold indices only, without
    a second walk over the tree; a body that also carries JSON objects as values (not what
    ``flatten()`` writes, bar ``{}``) takes the general walk over the whole tree instead.
    """
    root: dict[str, Any] = {}
    top = {"": root}  # the root's parent, so that the root may become a list too
    # The objects made here whose keys are all indices so far: id -> (object, parent, key).
    listed = {id(root): (root, top, "")}
    objects = False  # a JSON object among the values
    known = _PATHS.get  # bound once: a method looked up on the memory per key costs more
    for key, value in flat.items():
        if type(value) is dict:
            objects = True
        path = known(key)
        if path is None:
            path = path_of(key)
        parents, leaf, leaf_index, _ = path
        node = root
        for part, index in parents:
            child = node.get(part)
            if type(child) is not dict:  # absent, or a value the nested keys replace
                child = node[part] = {}
                listed[id(child)] = (child, node, part)
                if not index:
                    listed.pop(id(node), None)
            node = child
        old = node.get(leaf)
        if type(old) is dict and old:
            continue  # a value where nested keys already are (or flat's empty container)
        node[leaf] = value
        if not leaf_index:
            listed.pop(id(node), None)
    if objects:
        return _listify(root)
    if root:
        for child, parent, part in reversed(list(listed.values())):  # the innermost first
            parent[part] = [child[key] for key in sorted(child, key=int)]
    return top[""]


def path_of(key: str) -> Path:
    """Return the path of a flat key (remembered, see ``_PATHS``)."""
    path = _PATHS.get(key)
    if path is None:
        *parents, leaf = key.split(".")
        path = _PATHS.put(
            key,
            (
                tuple((part, _is_index(part)) for part in parents),
                leaf,
                _is_index(leaf),
                parents[0] if parents else leaf,
            ),
        )
    return path


def _is_index(part: str) -> bool:
    # ASCII digits only: "²" is a digit to str.isdigit, but no number to int().
    return part.isascii() and part.isdigit()


def _listify(node: dict[str, Any]) -> Any:
    """Return ``node`` with every dict inside whose keys are all indices made a list."""
    items = {key: _listify(value) if type(value) is dict else value for key, value in node.items()}
    if items and all(_is_index(key) for key in items):
        return [items[key] for key in sorted(items, key=int)]
    return items
