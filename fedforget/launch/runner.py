"""``fedforget run``: validate, prepare data, run the Flower simulation, and check its real outcome."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fedforget.configs.compose import (
    ConfigError,
    anchor_paths,
    compose_for_launch,
    default_path_overrides,
    load_experiment,
    resolved_form,
    to_plain,
)
from fedforget.configs.schema import ExperimentConfig, path_keys
from fedforget.configs.workspace import outputs_dir
from fedforget.data.preparation import DataError, prepare_data
from fedforget.launch.flower import flwr_run, run_status, simulation_superlink, stage_app, write_run_config
from fedforget.launch.outcome import describe_missing, read_outcome
from fedforget.launch.run_lock import RunFolderBusy, RunLock
from fedforget.launch.signals import Interrupted
from fedforget.launch.watch import watched_run
from fedforget.learning.checkpoints import load_checkpoint
from fedforget.learning.history import RoundHistory, history_folder
from fedforget.recon.hdf5io import DataFileError
from fedforget.server.run_folder import INTERRUPTED, mark_interrupted

PACKAGE_DIR = Path(__file__).resolve().parents[1]
DEFAULT_EXPERIMENT = "demo"
CONNECTION = "fedforget-sim"
PATH_KEYS = frozenset(path_keys())


class RunFailed(RuntimeError):
    """A run that did not complete; the message says why."""


class DataFailed(RunFailed):
    """A site's data is not usable (found before the run, or by a site during it); the message names the file."""


class MethodsMissing(RunFailed):
    """The run finished, but requested methods are not in results.json (each stopped by a site fault).

    ``folders`` are the finished run folders (their tables are still worth printing).
    """

    def __init__(self, message: str, folders: list[Path]) -> None:
        super().__init__(message)
        self.folders = folders


def project_dir() -> Path:
    """The source checkout holding pyproject.toml with the Flower app (what ``flwr run`` packages)."""
    root = PACKAGE_DIR.parent
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file() or "[tool.flwr.app]" not in pyproject.read_text():
        raise RunFailed(f"fedforget run needs a source checkout with pyproject.toml beside the package; "
                        f"{root} has none (install with `pip install -e .` from the repository)")
    return root


@dataclass
class RunRequest:
    """One run: an experiment, its Hydra overrides, where it writes, how the simulation is sized."""

    experiment: str
    overrides: list[str]
    output_dir: Path | None = None
    federation_config: str | None = None
    fresh: bool = False
    verbose: bool = False


def split_experiment(arguments: Sequence[str]) -> tuple[str, list[str]]:
    """Pull ``experiment=NAME`` out of the Hydra overrides (default: demo)."""
    experiment, rest = DEFAULT_EXPERIMENT, []
    for argument in arguments:
        if argument.startswith("experiment="):
            experiment = argument.split("=", 1)[1]
        else:
            rest.append(argument)
    return experiment, rest


def expand_sweeps(overrides: Sequence[str]) -> list[list[str]]:
    """Hydra multirun: the cartesian product of sweep overrides (``key=a,b,c``), in order."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    choices = []
    for override, text in zip(parsed, overrides):
        if override.is_sweep_override():
            key = override.get_key_element()
            choices.append([f"{key}={_format(v)}" for v in override.sweep_iterator()])
        else:
            choices.append([text])
    return [list(combo) for combo in itertools.product(*choices)]


def _plain_overrides(overrides: Sequence[str]) -> list[str]:
    """The overrides without sweeps (to compose the experiment once, before expanding)."""
    return [expand_sweeps([o])[0][0] for o in overrides]


def _format(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_format(v) for v in value) + "]"
    return str(value)


def absolute_overrides(overrides: Sequence[str]) -> list[str]:
    """Make path overrides absolute against this folder (Flower never changes directory)."""
    result = []
    for override in overrides:
        key, _, value = override.partition("=")
        if key.lstrip("+") in PATH_KEYS and value:
            override = f"{key}={Path(value).expanduser().resolve()}"
        result.append(override)
    return result


def launch_overrides(overrides: Sequence[str]) -> list[str]:
    """The overrides a run carries: paths made absolute here, the workspace's defaults for what is not given
    (``configs.compose``)."""
    return default_path_overrides(absolute_overrides(overrides))


def load_for_launch(experiment: str, overrides: Sequence[str]) -> tuple[ExperimentConfig, list[str]]:
    """The experiment as the run's ServerApp and ClientApps will compose it, and the overrides that say so."""
    overrides = launch_overrides(overrides)
    return anchor_paths(load_experiment(experiment, overrides)), overrides


def default_output_dir(experiment: str, plain_config: dict[str, Any], fresh: bool) -> Path:
    """``outputs/<experiment>-<timestamp>``, or the unfinished run of the same config (to resume it)."""
    outputs = outputs_dir()
    if not fresh:
        for candidate in sorted(outputs.glob(f"{experiment}-*"), reverse=True):
            if _is_resumable(candidate, plain_config):
                return candidate
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return outputs / f"{experiment}-{stamp}"


def _is_resumable(folder: Path, plain_config: dict[str, Any]) -> bool:
    status, config = folder / "status.json", folder / "config.yaml"
    if not (status.is_file() and config.is_file()) or (folder / "results.json").is_file():
        return False
    try:
        return yaml.safe_load(config.read_text()) == plain_config and \
            json.loads(status.read_text()).get("status") in ("running", "failed", INTERRUPTED)
    except (ValueError, OSError, yaml.YAMLError):
        return False


def check_checkpoint(cfg: ExperimentConfig) -> None:
    """A removal request on a trained federation needs a readable original checkpoint (and, when the run
    keeps a round history, the history beside it)."""
    if cfg.unlearning.from_checkpoint:
        path = Path(cfg.unlearning.from_checkpoint)
        try:
            load_checkpoint(path)
            if cfg.reads_round_history:
                RoundHistory.open(history_folder(path))
        except (FileNotFoundError, ValueError) as err:
            raise DataError(f"unlearning.from_checkpoint: {err}") from err


Composed = tuple[ExperimentConfig, list[str]]  # an experiment as load_for_launch composes it, and its overrides


def prepare(request: RunRequest, composed: Composed | None = None) -> tuple[ExperimentConfig, list[str], Path]:
    """Validate the config (before anything starts), write synthetic data, pick the run folder."""
    cfg, overrides = composed or load_for_launch(request.experiment, request.overrides)
    try:
        check_checkpoint(cfg)
        extra = prepare_data(cfg, log=print)
    except (DataError, DataFileError) as err:
        raise DataFailed(f"data not usable: {err}") from err
    if extra:
        cfg, overrides = load_for_launch(request.experiment, [*overrides, *extra])
    plain = to_plain(cfg)
    output = (request.output_dir.expanduser().resolve() if request.output_dir
              else default_output_dir(request.experiment, plain, request.fresh))
    return cfg, overrides, output


def federation_config(cfg: ExperimentConfig, given: str | None) -> str:
    """Simulation size: one SuperNode per site, with the configured client resources."""
    if given:
        return given
    fed = cfg.federation
    return (f"num-supernodes={len(cfg.sites)} client-resources-num-cpus={fed.client_cpus:g} "
            f"client-resources-num-gpus={fed.client_gpus:g}")


def execute(request: RunRequest, composed: Composed | None = None) -> Path:
    """Run one experiment through a real Flower simulation; raise RunFailed unless it completed.

    The run folder is locked for the duration (a second writer is refused with this process's
    PID). A SIGINT / SIGTERM (:class:`Interrupted`, see ``launch.signals``) stops the Flower
    run and every process it started, and marks the folder ``interrupted`` (resumable).
    """
    cfg, overrides, output = prepare(request, composed)
    try:
        with RunLock(output) as lock:
            try:
                code, flower = _simulate(request, cfg, overrides, output, lock)
            except Interrupted as stop:
                mark_interrupted(output, f"{stop}: rerun the same command to resume")
                print(f"fedforget: {stop}; stopped the Flower run and its processes; run folder {output} is "
                      f"marked interrupted (rerun the same command to resume)", file=sys.stderr, flush=True)
                raise
    except RunFolderBusy as err:
        raise RunFailed(str(err)) from err
    check_outcome(output, code, flower)
    return output


def _simulate(request: RunRequest, cfg: ExperimentConfig, overrides: list[str], output: Path,
              lock: RunLock) -> tuple[int, dict[str, str]]:
    """The Flower side of a run: a private SuperLink, ``flwr run``, Flower's record of the outcome."""
    print(f"fedforget: experiment {cfg.name!r}, {len(cfg.sites)} sites, run folder {output}", flush=True)
    run_config = write_run_config(output / "run-config.toml", request.experiment, overrides, output,
                                  resolved_form(cfg))
    with tempfile.TemporaryDirectory(prefix="fedforget-flwr-") as home, \
            open(output / "flwr.log", "a") as log, \
            simulation_superlink(Path(home), output / "superlink.log", CONNECTION):
        lock.note(flwr_home=home)  # every process of the run carries FLWR_HOME=<home> in its environment
        app = stage_app(project_dir(), Path(home))  # flwr run would walk the whole checkout, .venv included
        with watched_run(output, request.verbose) as console:
            code, run_id = flwr_run(app, CONNECTION, run_config, Path(home), [log, console],
                                    federation_config(cfg, request.federation_config))
            console.explain_early_exit(code, run_id)
        flower = run_status(CONNECTION, Path(home), run_id)
    return code, flower


def check_outcome(output: Path, code: int, flower: dict[str, str]) -> None:
    """A run succeeded only if Flower says completed *and* the run folder says completed *and*
    every requested method is in results.json.

    Raises:
        DataFailed: a site found its data unusable (the reason names the file, slice and problem).
        MethodsMissing: the run finished without some requested methods (stopped by site faults).
        RunFailed: anything else that kept the run from completing.
    """
    if code != 0 and not (output / "status.json").is_file():
        raise RunFailed(f"flwr run exited with code {code} before the run started (see {output / 'flwr.log'})")
    outcome = read_outcome(output, code, flower.get("run-id"), flower)
    failure = DataFailed if outcome.error_kind == "data" else RunFailed
    if outcome.flower_status != "finished:completed":
        raise failure(f"Flower reports the run as {outcome.flower_status!r}: {outcome.reason}")
    if not outcome.finished:
        raise failure(f"the run folder {output} is not complete (status {outcome.folder_status!r}): "
                      f"{outcome.reason}")
    if outcome.missing_methods:
        raise MethodsMissing(f"the run folder {output} lacks {describe_missing(outcome.missing_methods)}", [output])


def run_all(request: RunRequest, multirun: bool) -> list[Path]:
    """One run, or a Hydra-style multirun (one run per combination of sweep values).

    An experiment that declares ``hydra.sweeper.params`` is always a multirun; command-line
    sweeps of the same keys replace the declared ones.
    """
    given = {o.split("=", 1)[0] for o in request.overrides}
    plain = _plain_overrides(request.overrides)
    overrides = launch_overrides(plain)
    launch = compose_for_launch(request.experiment, overrides)  # the one composition of a single run
    declared = [o for o in launch.declared_sweep if o.split("=", 1)[0] not in given]
    if not (multirun or declared):
        single = launch.experiment is not None and plain == list(request.overrides)
        return [execute(request, (anchor_paths(launch.experiment), overrides) if single else None)]
    jobs = expand_sweeps([*declared, *request.overrides])
    base = request.output_dir or outputs_dir() / f"{request.experiment}-multirun-{dt.datetime.now():%Y%m%d-%H%M%S}"
    folders, incomplete = [], []
    for number, job in enumerate(jobs):
        print(f"fedforget: multirun job {number}: {' '.join(job)}", flush=True)
        try:
            folders.append(execute(RunRequest(request.experiment, job, Path(base) / str(number),
                                              request.federation_config, request.fresh, verbose=request.verbose)))
        except MethodsMissing as err:  # the sweep goes on; the command still exits non-zero at the end
            folders.extend(err.folders)
            incomplete.append(f"job {number}: {err}")
    Path(base).mkdir(parents=True, exist_ok=True)
    (Path(base) / "multirun.json").write_text(json.dumps(
        [{"job": i, "overrides": job, "run": str(f)} for i, (job, f) in enumerate(zip(jobs, folders))], indent=2))
    if incomplete:
        raise MethodsMissing("; ".join(incomplete), folders)
    return folders


__all__ = ["ConfigError", "DataFailed", "MethodsMissing", "RunFailed", "RunRequest", "run_all",
           "split_experiment"]
