"""Model checkpoints, written atomically (``configs.atomic``: temp file + rename)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import torch

from fedforget.configs.atomic import atomic_torch_save
from fedforget.recon.models import VarNetShape

State = dict[str, torch.Tensor]


class CheckpointError(ValueError):
    """A file that is not a usable fedforget checkpoint; the message names it and what it should hold."""

# fastMRI VarNet parameter names: cascades.<i>.model.unet.* and sens_net.norm_unet.unet.*; a U-Net's
# first convolution has `chans` output channels and it has one down-sampling layer per pool.
_CASCADE = re.compile(r"cascades\.(\d+)\.")
_CASCADE_UNET, _SENS_UNET = "cascades.0.model.unet.", "sens_net.norm_unet.unet."


def save_checkpoint(path: Path, state: State, meta: dict[str, Any]) -> str:
    """Save a model state with metadata atomically; returns the state's SHA-256."""
    digest = state_sha256(state)
    atomic_torch_save(path, {"state_dict": {k: v.detach().cpu() for k, v in state.items()},
                             "meta": {**meta, "sha256": digest}})
    return digest


def load_checkpoint(path: Path) -> tuple[State, dict[str, Any]]:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Raises:
        FileNotFoundError: the file does not exist.
        CheckpointError: it is not a checkpoint written by fedforget (the message names the path).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist: expected a .pt file written by fedforget "
                                "(e.g. <run>/checkpoints/original.pt)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a broken file
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(err).__name__}: {err})") from err
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise CheckpointError(f"checkpoint {path} is not a fedforget checkpoint: expected keys 'state_dict' and 'meta'")
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


def _unet_shape(path: Path, state: State, prefix: str) -> tuple[int, int]:
    """(channels, pools) of one of VarNet's U-Nets, read from its parameter names and shapes."""
    first = state.get(f"{prefix}down_sample_layers.0.layers.0.weight")
    if first is None or first.ndim != 4:
        raise CheckpointError(f"checkpoint {path} does not hold an E2E-VarNet: no parameter "
                         f"{prefix}down_sample_layers.0.layers.0.weight (expected fastMRI VarNet weights)")
    layers = re.compile(re.escape(f"{prefix}down_sample_layers.") + r"(\d+)\.")
    pools = {int(m.group(1)) for key in state if (m := layers.match(key))}
    return int(first.shape[0]), len(pools)


def varnet_shape_of(path: Path, state: State) -> VarNetShape:
    """The E2E-VarNet shape (cascades, channels, pools of both U-Nets) a state dict was saved from.

    Args:
        path: The checkpoint the state came from (named in errors).
        state: A fastMRI ``VarNet`` state dict.

    Returns:
        The shape; building a VarNet of it and loading ``state`` strictly is still the final check.

    Raises:
        CheckpointError: The state dict is not a VarNet's.
    """
    cascades = {int(m.group(1)) for key in state if (m := _CASCADE.match(key))}
    if not cascades:
        raise CheckpointError(f"checkpoint {path} does not hold an E2E-VarNet: no cascades.<i>.* parameters "
                         f"(expected fastMRI VarNet weights)")
    chans, pools = _unet_shape(path, state, _CASCADE_UNET)
    sens_chans, sens_pools = _unet_shape(path, state, _SENS_UNET)
    return VarNetShape(num_cascades=max(cascades) + 1, chans=chans, pools=pools, sens_chans=sens_chans,
                       sens_pools=sens_pools)
