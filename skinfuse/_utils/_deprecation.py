"""Public names that moved: the old name keeps working for a release, with a FutureWarning."""

from __future__ import annotations


def moved_names(module: str, moved: dict):
    """A module ``__getattr__`` for names that moved out of ``module``.

    ``moved`` maps an old name to ``(new module, new name, why)``; reading the old name warns
    (pointing at the reader's line) and returns the new object. Other names raise the
    usual ``AttributeError``.
    """

    def __getattr__(name):
        if name not in moved:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        import importlib
        import warnings

        new_module, new_name, why = moved[name]
        warnings.warn(
            f"{module}.{name} moved to {new_module}.{new_name} ({why}); the old name will be "
            f"removed in skinfuse 0.3. Import it as `from {new_module} import {new_name}`.",
            FutureWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(new_module), new_name)

    return __getattr__
