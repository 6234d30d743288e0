"""Walking a model for every estimator in it, fitted copies included."""

from __future__ import annotations

#: Packages whose objects are never entered (torch modules, skorch nets).
TORCH_PACKAGES = {"torch", "torchvision", "timm", "skorch"}


def package_of(value) -> str:
    """The top-level package of ``value``'s class (of ``value`` itself if it is a class)."""
    cls = value if isinstance(value, type) else type(value)
    return (getattr(cls, "__module__", "") or "").split(".")[0]


def walk_estimators(model) -> list:
    """Every estimator reachable from ``model`` (itself included), each once, parents first.

    Follows the attributes of estimators (objects with ``get_params``) and the items of
    lists, tuples and dicts; never goes inside torch or skorch objects.
    """
    found, seen, stack = [], set(), [model]
    while stack:
        obj = stack.pop(0)
        if id(obj) in seen or package_of(obj) in TORCH_PACKAGES:
            continue
        seen.add(id(obj))
        if isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple)):
            stack.extend(obj)
        elif hasattr(obj, "get_params") and hasattr(obj, "__dict__") and not isinstance(obj, type):
            found.append(obj)
            stack.extend(v for k, v in vars(obj).items() if k != "_device_copies")
    return found
