"""Compose experiments with Hydra's compose API (never ``@hydra.main``, which fights Flower).

An experiment is composed once, by whoever starts the run, and every process of the run then
rebuilds it from one frozen form:

- ``fedforget run`` composes and validates it, and hands it to Flower as the run config's
  ``resolved-config`` (the experiment's JSON): the ServerApp and every ClientApp rebuild the
  dataclasses from it (:func:`experiment_from_run_config`), with no Hydra and no recomposition.
- a plain ``flwr run .`` and a deployment (``fedforget deploy submit``) carry only ``experiment`` and
  ``overrides``: the experiment is composed once per process, on the machine that uses it (a site's
  paths are read where its data lies). A deployed SuperNode starts a fresh ClientApp process for every
  message, so the composed experiment is also remembered on disk (``fedforget.configs.cache``): such a
  process then never imports Hydra.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from fedforget.configs.cache import from_plain, read_composed, write_composed
from fedforget.configs.schema import (
    HISTORY_EVERY,
    METHOD_GROUPS,
    METHOD_NAMES,
    SYNTHETIC,
    ExperimentConfig,
    path_keys,
)
from fedforget.configs.workspace import default_cache_dir, workspace_root

if TYPE_CHECKING:
    from omegaconf import DictConfig

CONFIG_MODULE = "fedforget.configs"
PRIMARY_CONFIG = "config"
SCHEMA_NAME = "experiment_schema"


def _hydra() -> tuple[Any, Any, tuple[type[BaseException], ...]]:
    """Hydra's ``compose`` and ``initialize_config_module`` with the schema registered, and its error types."""
    from hydra import compose, initialize_config_module
    from hydra.core.config_store import ConfigStore
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    ConfigStore.instance().store(name=SCHEMA_NAME, node=ExperimentConfig)  # idempotent
    return compose, initialize_config_module, (HydraException, OmegaConfBaseException)


class ConfigError(ValueError):
    """A config that does not compose or does not validate; the message says which key and why."""


def split_overrides(text: str) -> list[str]:
    """Split the run-config ``overrides`` string (space separated, brackets kept together)."""
    parts, depth, current = [], 0, []
    for char in text.strip():
        depth += char in "[{("
        depth -= char in "]})"
        if char.isspace() and depth == 0:
            if current:
                parts.append("".join(current))
                current = []
            continue
        current.append(char)
    if current:
        parts.append("".join(current))
    return parts


def compose_config(experiment: str, overrides: Sequence[str] = (), with_hydra: bool = False) -> DictConfig:
    """Compose ``experiment=<name>`` plus overrides into a resolved, typed DictConfig.

    A generated site list (``generated_sites``) and sites added with ``+sites.<name>={...}``
    become ``sites`` entries here (``fedforget.configs.site_lists``). ``with_hydra`` keeps Hydra's own
    node (``hydra.sweeper.params``: the sweep an experiment declares).

    Raises:
        ConfigError: unknown experiment or group option, unknown key, or a type mismatch,
            with Hydra's own message.
    """
    from omegaconf import open_dict

    from fedforget.configs.site_lists import generated_sites, split_site_additions

    compose, initialize_config_module, errors = _hydra()
    try:
        hydra_overrides, additions = split_site_additions(overrides)
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            cfg = compose(config_name=PRIMARY_CONFIG, overrides=[f"experiment={experiment}", *hydra_overrides],
                          return_hydra_config=with_hydra)
        with open_dict(cfg):
            spec = to_object(cfg.generated_sites)
            if spec.active:
                cfg.sites.merge_with(generated_sites(spec, cfg.data.kind))
            for name, entry in additions:
                cfg.sites.merge_with({name: entry})
    except (ValueError, *errors) as err:
        raise ConfigError(f"cannot compose experiment {experiment!r} with {list(overrides)}: "
                          f"{_reason(err)}") from err
    return cfg


def _reason(err: BaseException) -> str:
    """Hydra's message, with OmegaConf's underlying one when Hydra's says only which override failed."""
    cause = err.__cause__
    if cause is not None and str(err).startswith("Error merging override"):
        return f"{err}: {str(cause).splitlines()[0]}"
    return str(err)


def to_object(node: Any) -> Any:
    """A config node as its dataclass (running its checks)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_object(node)


class Launch(NamedTuple):
    """One composition, read twice: the sweep the experiment declares, and (when it declares none) the experiment."""

    declared_sweep: list[str]  # ``key=a,b,c`` overrides from ``hydra.sweeper.params``
    experiment: ExperimentConfig | None  # None when a sweep is declared: each job composes its own


def compose_for_launch(experiment: str, overrides: Sequence[str] = ()) -> Launch:
    """Compose once what a launcher needs: the declared sweep and, without one, the validated experiment."""
    from omegaconf import open_dict

    cfg = compose_config(experiment, overrides, with_hydra=True)
    params = cfg.hydra.sweeper.get("params") or {}
    sweep = [f"{key}={value}" for key, value in params.items()]
    if sweep:
        return Launch(sweep, None)
    with open_dict(cfg):
        del cfg["hydra"]
    return Launch(sweep, to_experiment(cfg))



def to_experiment(cfg: DictConfig) -> ExperimentConfig:
    """Turn a composed config into validated dataclasses (runs every ``__post_init__`` check)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        experiment = OmegaConf.to_object(cfg)
    except (ValueError, OmegaConfBaseException) as err:
        raise ConfigError(str(getattr(err, "msg", err))) from err
    assert isinstance(experiment, ExperimentConfig)
    _check_methods(experiment)
    return experiment


def load_experiment(experiment: str, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Compose and validate an experiment: every error surfaces here, before any work starts."""
    return to_experiment(compose_config(experiment, overrides))


def _check_methods(experiment: ExperimentConfig) -> None:
    u = experiment.unlearning
    u.methods = [name for entry in u.methods for name in METHOD_GROUPS.get(entry, (entry,))]
    unknown = [name for name in u.methods if not _known_method(name)]
    if unknown:
        raise ConfigError(
            f"config value unlearning.methods has unknown method(s) {unknown}: expected names from "
            f"{sorted(METHOD_NAMES)}, retrain_budget@<fraction in (0, 1]>, or a group {sorted(METHOD_GROUPS)}"
        )
    if len(set(u.methods)) != len(u.methods):
        raise ConfigError(f"config value unlearning.methods={u.methods} lists a method twice")
    _check_history_needs(experiment)


def _known_method(name: str) -> bool:
    base, at, variant = name.partition("@")
    if not at:
        return name in METHOD_NAMES
    try:
        return base == "retrain_budget" and 0 < float(variant) <= 1
    except ValueError:
        return False


def _check_history_needs(experiment: ExperimentConfig) -> None:
    """A method that replays the round history needs the history it reads (checked before anything starts)."""
    u, history = experiment.unlearning, experiment.federation.history
    needs = {name: every for name, every in HISTORY_EVERY.items() if name in u.methods}
    if "federaser" in needs:
        needs["federaser"] = u.federaser.interval
    if needs and not history.enabled:
        raise ConfigError(f"unlearning.methods lists {sorted(needs)}, which read the server's round history, but "
                          f"federation.history.every=0 keeps none: set federation.history.every=1 (every round)")
    for name, every in needs.items():
        if every and every % history.every:
            what = ("replays every unlearning.federaser.interval-th round" if name == "federaser"
                    else "reads every round")
            raise ConfigError(f"{name} {what} ({every}), but federation.history.every={history.every} keeps only "
                              f"every {history.every}-th: set federation.history.every to a divisor of {every}")
    if "fukd" in u.methods and u.fukd.repair == "kd" and u.retain_access != "server":
        raise ConfigError("unlearning.fukd.repair=kd distils on the server's retain data: set "
                          "unlearning.retain_access=server, or unlearning.fukd.repair=rounds")


def to_plain(experiment: ExperimentConfig) -> dict[str, Any]:
    """The experiment as plain containers (for YAML / JSON output)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.structured(experiment), resolve=True)  # type: ignore[return-value]


def fingerprint(payload: Any) -> str:
    """A short stable hash of JSON-able content (used to cache trained models)."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


RESOLVED_CONFIG = "resolved-config"
RUN_CONFIG_KEYS = ("experiment", "overrides", "output-dir", RESOLVED_CONFIG)
_FROM_RUN_CONFIG: dict[tuple[str, str], ExperimentConfig] = {}
_FROM_RESOLVED: dict[str, ExperimentConfig] = {}


def resolved_form(cfg: ExperimentConfig) -> str:
    """The frozen form of a composed, validated experiment that a run config carries (compact JSON)."""
    return json.dumps(dataclasses.asdict(cfg), separators=(",", ":"))


def experiment_from_run_config(run_config: dict[str, Any]) -> ExperimentConfig:
    """The run's experiment: rebuilt from ``resolved-config`` when the run config carries it, else composed
    from ``experiment`` + ``overrides`` (:func:`load_from_run_config`); once per process either way.

    Raises:
        ConfigError: the resolved form is not an experiment this version reads, or the composition fails.
    """
    resolved = str(run_config.get(RESOLVED_CONFIG, "")).strip()
    if not resolved:
        return load_from_run_config(run_config)
    key = hashlib.sha256(resolved.encode()).hexdigest()
    if key not in _FROM_RESOLVED:
        try:
            cfg = from_plain(ExperimentConfig, json.loads(resolved))
        except (ValueError, TypeError, KeyError) as err:
            raise ConfigError(f"the run config's {RESOLVED_CONFIG} is not an experiment this fedforget reads "
                              f"({type(err).__name__}: {err}): start the run with this version's `fedforget run`, "
                              f"or leave {RESOLVED_CONFIG} empty to compose `experiment` with `overrides`") from err
        _FROM_RESOLVED[key] = anchor_paths(cfg)
    return _FROM_RESOLVED[key]


def config_dir_override(folder: Path) -> str:
    """The override that puts a user's config folder (``experiment/``, ``sites/``, ... inside) on Hydra's
    search path, next to the package's own groups.

    Raises:
        ConfigError: the folder does not exist.
    """
    folder = folder.expanduser().resolve()
    if not folder.is_dir():
        raise ConfigError(f"--config-dir {folder}: no such folder (expected a folder holding experiment/*.yaml, "
                          f"sites/*.yaml, ... like fedforget/configs)")
    return f"hydra.searchpath=[file://{folder}]"


def default_path_overrides(overrides: Sequence[str]) -> list[str]:
    """``overrides`` plus the workspace's model cache (``<workspace>/outputs/.cache``) unless one is given."""
    if any(text.split("=", 1)[0].lstrip("+") == "cache_dir" for text in overrides):
        return list(overrides)
    return [*overrides, f"cache_dir={default_cache_dir()}"]


def anchor_paths(cfg: ExperimentConfig) -> ExperimentConfig:
    """A relative synthetic ``data.root`` moves into the workspace; any other relative path is refused.

    Flower starts the app's processes in no particular folder, so a relative path would mean a
    different folder to the ServerApp and to each ClientApp (``fedforget run`` makes paths
    absolute against the folder it was started in before Flower sees them).

    Raises:
        ConfigError: a path key holds a relative path (the message names the key).
    """
    if cfg.data.kind == SYNTHETIC and not Path(cfg.data.root).is_absolute():
        cfg.data.root = str(workspace_root() / cfg.data.root)
    for key in path_keys():
        value = str(_dotted(cfg, key))
        if value and not Path(value).expanduser().is_absolute():
            raise ConfigError(f"config value {key}={value!r} is a relative path, but `flwr run` starts the app in no "
                              f"particular folder: give an absolute path, or run through `fedforget run`, which "
                              f"resolves it against the folder you start it in")
    return cfg


def _dotted(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def load_from_run_config(run_config: dict[str, Any]) -> ExperimentConfig:
    """The experiment named by a Flower run config (``experiment`` + ``overrides``).

    Server and sites compose the same experiment from the same run config, so no
    config needs to travel in messages. Remembered per process and on disk (see
    ``fedforget.configs.cache``): a fresh process skips Hydra when this machine
    composed the same run config with the same config files before. Paths the run config
    leaves out default into the workspace (``fedforget.configs.workspace``), so a plain
    ``flwr run .`` writes where ``fedforget run`` does.
    """
    missing = [key for key in ("experiment", "overrides") if key not in run_config]
    if missing:
        raise ConfigError(f"Flower run config lacks {missing}: expected keys {list(RUN_CONFIG_KEYS)} "
                          "(see [tool.flwr.app.config] in pyproject.toml)")
    experiment = str(run_config["experiment"])
    overrides = default_path_overrides(split_overrides(str(run_config["overrides"])))
    key = (experiment, " ".join(overrides))
    if key not in _FROM_RUN_CONFIG:
        cfg = read_composed(*key)
        if cfg is None:
            cfg = load_experiment(experiment, overrides)
            write_composed(*key, cfg)
        _FROM_RUN_CONFIG[key] = anchor_paths(cfg)
    return _FROM_RUN_CONFIG[key]
