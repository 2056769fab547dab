"""Model checkpoints and result files, written atomically (temp file + rename)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch

State = dict[str, torch.Tensor]


def save_checkpoint(path: Path, state: State, meta: dict[str, Any]) -> str:
    """Save a model state with metadata atomically; returns the state's SHA-256."""
    digest = state_sha256(state)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {k: v.detach().cpu() for k, v in state.items()},
                "meta": {**meta, "sha256": digest}}, tmp)
    os.replace(tmp, path)
    return digest


def load_checkpoint(path: Path) -> tuple[State, dict[str, Any]]:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Raises:
        FileNotFoundError / ValueError: naming the path and what it should hold.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist: expected a .pt file written by fedforget "
                                "(e.g. <run>/checkpoints/original.pt)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a broken file
        raise ValueError(f"checkpoint {path} cannot be read ({type(err).__name__}: {err})") from err
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise ValueError(f"checkpoint {path} is not a fedforget checkpoint: expected keys 'state_dict' and 'meta'")
    return payload["state_dict"], payload.get("meta", {})


def state_sha256(state: State) -> str:
    """SHA-256 over parameter names, shapes and bytes (the audit's model fingerprint)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()
