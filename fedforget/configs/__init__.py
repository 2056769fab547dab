"""Hydra structured configs: schema, groups (data, sites, model, federation, unlearning), experiments."""

from fedforget.configs.compose import ConfigError, compose_config, load_experiment, to_experiment
from fedforget.configs.schema import ExperimentConfig

__all__ = ["ConfigError", "ExperimentConfig", "compose_config", "load_experiment", "to_experiment"]
