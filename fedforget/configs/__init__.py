"""Hydra structured configs: schema, groups (data, sites, model, federation, unlearning), experiments."""

from __future__ import annotations

from typing import Any

__all__ = ["ConfigError", "ExperimentConfig", "compose_config", "load_experiment", "to_experiment"]


def __getattr__(name: str) -> Any:
    # Lazily: importing fedforget.configs.schema (every process does) must not import Hydra.
    if name == "ExperimentConfig":
        from fedforget.configs.schema import ExperimentConfig

        return ExperimentConfig
    if name in __all__:
        from fedforget.configs import compose

        return getattr(compose, name)
    raise AttributeError(f"module 'fedforget.configs' has no attribute {name!r}")
