"""Which Horovod is installed, without initialising it (for description.json and doctor)."""
from __future__ import annotations

from typing import Optional


def horovod_version() -> Optional[str]:
    """Horovod's version string, or None when Horovod is not installed.

    Only the top-level package is imported: it is pure Python, so this works even where the
    PyTorch extension (horovod.torch) was not built.
    """
    try:
        import horovod
    except ImportError:
        return None
    return horovod.__version__
