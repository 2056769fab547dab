"""The per-machine cache folder, and composed experiments remembered on disk.

A deployed SuperNode starts a fresh ClientApp process for every message, and each one
needs the experiment named by the run config. Composing it with Hydra costs the Hydra
import and the composition (~0.5 s on 2 cores) every time, so the resolved experiment
is kept as JSON, keyed by the run config and by the content of every config file and
of the schema: a changed YAML file or schema (a new app version) gives a new key.
JSON, not pickle: reading a cache file can never run code. Only the standard library
is imported here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import typing
from pathlib import Path
from typing import Any

from fedforget.configs.atomic import atomic_write_text
from fedforget.configs.schema import ExperimentConfig

CONFIG_DIR = Path(__file__).resolve().parent
# Memo files are written by many processes at once (one per message on a SuperNode): one temporary name each.
_MEMO_TEMP = ".{name}.{pid}"
_CODE_FINGERPRINT: list[str] = []


def cache_root() -> Path:
    """Where per-machine caches live (``$FEDFORGET_CACHE``, default ``~/.cache/fedforget``)."""
    return Path(os.environ.get("FEDFORGET_CACHE", Path.home() / ".cache" / "fedforget"))


def config_code_fingerprint() -> str:
    """A hash of every file that shapes a composed experiment (the config groups and this package's code)."""
    if not _CODE_FINGERPRINT:
        digest = hashlib.sha256()
        for path in sorted(CONFIG_DIR.rglob("*")):
            if path.suffix in (".py", ".yaml") and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(CONFIG_DIR)).encode() + b"\0" + path.read_bytes() + b"\0")
        _CODE_FINGERPRINT.append(digest.hexdigest()[:20])
    return _CODE_FINGERPRINT[0]


def user_config_fingerprint(overrides: str) -> str:
    """A hash of the YAML files in the users' config folders that ``overrides`` adds to Hydra's search path
    (``--config-dir``): editing one of them must not return the experiment composed before the edit."""
    digest = hashlib.sha256()
    for folder in re.findall(r"file://([^\],\s]+)", overrides):
        for path in sorted(Path(folder).rglob("*.yaml")):
            with contextlib.suppress(OSError):
                digest.update(str(path).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:20]


def composed_path(experiment: str, overrides: str) -> Path:
    """The cache file of ``experiment`` composed with the run config's ``overrides`` string."""
    key = json.dumps([experiment, overrides, config_code_fingerprint(), user_config_fingerprint(overrides)])
    return cache_root() / "composed" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"


def read_composed(experiment: str, overrides: str) -> ExperimentConfig | None:
    """The remembered experiment, or None when there is none (or it cannot be read back)."""
    try:
        plain = json.loads(composed_path(experiment, overrides).read_text())
        return from_plain(ExperimentConfig, plain)
    except (OSError, ValueError, TypeError, KeyError):
        return None


def write_composed(experiment: str, overrides: str, cfg: ExperimentConfig) -> None:
    """Remember a composed, validated experiment (atomically; a read-only cache only costs the memo)."""
    write_memo(composed_path(experiment, overrides), dataclasses.asdict(cfg))


def read_memo(path: Path) -> dict:
    """A JSON object kept by :func:`write_memo`, or ``{}`` when there is none (or it cannot be read back)."""
    try:
        memo = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return memo if isinstance(memo, dict) else {}


def write_memo(path: Path, memo: Any) -> None:
    """Keep ``memo`` as compact JSON at ``path``, atomically; a read-only cache only costs the memo."""
    with contextlib.suppress(OSError):
        atomic_write_text(path, json.dumps(memo), temp=_MEMO_TEMP)


def from_plain(cls: type, data: Any) -> Any:
    """Rebuild dataclass ``cls`` from ``dataclasses.asdict`` output (its ``__post_init__`` checks run again).

    Raises:
        TypeError / KeyError / ValueError: ``data`` does not have the shape of ``cls``.
    """
    hints = typing.get_type_hints(cls)
    unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise KeyError(f"{cls.__name__} has no field(s) {sorted(unknown)}")
    return cls(**{name: _value(hints[name], value) for name, value in data.items()})


def _value(hint: Any, value: Any) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return from_plain(hint, value)
    if origin in (dict, typing.Dict):
        return {key: _value(args[1], item) for key, item in value.items()}
    if origin in (list, typing.List):
        return [_value(args[0], item) for item in value]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value
