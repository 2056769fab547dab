"""Atomic file writes: :mod:`fedforget.configs.atomic` under the import path recon's callers used first.

The implementation moved to ``configs`` (the bottom layer) so that ``configs`` itself can use it;
this module only re-exports it.
"""

from __future__ import annotations

from fedforget.configs.atomic import (  # noqa: F401 (re-exported)
    TEMP,
    atomic_torch_save,
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    commit,
    stage,
    swap_dir,
    temp_path,
)

__all__ = ["TEMP", "temp_path", "atomic_write", "atomic_write_bytes", "atomic_write_text", "atomic_write_json",
           "atomic_torch_save", "stage", "commit", "swap_dir"]
