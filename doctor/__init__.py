"""doctor: GPU pre-flight checks for ML jobs. Keep this import light: no torch here."""
from __future__ import annotations

__version__ = "0.1.0"

TYPE_CHECKING = False   # typing.TYPE_CHECKING without importing typing before `doctor check` starts its torch probe
if TYPE_CHECKING:
    from typing import Any

    from .api import NotReady, preflight


def __getattr__(name: str) -> Any:
    if name in ("preflight", "NotReady"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'doctor' has no attribute {name!r}")


__all__ = ["preflight", "NotReady", "__version__"]
