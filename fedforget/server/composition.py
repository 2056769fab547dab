"""``fedforget compose RUN``: merge a finished run's unlearned models, score the result at every site, record it.

The composed model is ``original + sum_i weight_i * (model_i - original)`` (see
:mod:`fedforget.learning.composition`). Composition exchanges nothing with the sites: the server
already holds every operand. Its scores are computed afterwards, in this process, by the very
handler a site's ClientApp runs for an ``evaluate`` message, on each site's data as the run's
``config.yaml`` and ``audit.json`` locate it, so they equal what the run would have recorded
(bit for bit for a simulation on the CPU, where the site's thread count is used too).

Everything the request names is checked before anything is written (:func:`check_request`);
:func:`compose_run` then scores the model and only afterwards writes the checkpoint, results.json
and the re-rendered report, each atomically.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from flwr.app import DEFAULT_TTL, Message, Metadata, RecordDict
from omegaconf.errors import OmegaConfBaseException

from fedforget.clients import client_app
from fedforget.clients.site import SiteIdentity, SiteRuntime
from fedforget.configs.compose import ConfigError
from fedforget.configs.schema import ORACLE, ORIGINAL, ZERO_FILLED, ExperimentConfig, final_phase
from fedforget.data.sites import site_folders
from fedforget.learning.checkpoints import CheckpointError, State, load_checkpoint, save_checkpoint, state_sha256
from fedforget.learning.composition import (
    CompositionError,
    compose_states,
    composition_file_stem,
    composition_name,
    format_weight,
)
from fedforget.recon.atomic import atomic_write_json
from fedforget.recon.hdf5io import DataFileError
from fedforget.reporting.examples import add_models
from fedforget.reporting.rerender import model_checkpoint, rerender, saved_experiment
from fedforget.reporting.results import ModelRecord, complete
from fedforget.server.examples import example_reconstructions
from fedforget.server.recorder import SiteScores
from fedforget.server.records import cost_record
from fedforget.server.run_folder import utc_now
from fedforget.server.scoring import evaluation_content, fill_record, site_scores
from fedforget.strategies.protocol import EVALUATE, SiteError

FAMILY = "composition"
# References, not unlearned models: composing them is refused (the original is every composition's base).
NOT_COMPOSABLE = (ORIGINAL, ORACLE, ZERO_FILLED)
MODELS_FORM = "--models A,B[,...] (model names of results.json, comma-separated)"
WEIGHTS_FORM = "--weights w1,w2[,...] (one number per model, comma-separated)"


class CompositionRequestError(ValueError):
    """A request that cannot be carried out as given (the CLI's exit 2); nothing has been written."""


class CompositionFailed(RuntimeError):
    """A valid request whose model could not be scored (a site's data is unreadable or changed); nothing written."""


@dataclass
class CompositionPlan:
    """A checked request: the run's files read, the operands loaded and composed, nothing written yet."""

    run_dir: Path
    results: dict[str, Any]
    audit: dict[str, Any]
    cfg: ExperimentConfig
    models: list[str]
    weights: list[float]
    original: State
    inputs: dict[str, State]
    state: State
    compose_seconds: float

    @property
    def name(self) -> str:
        """The composed model's name in results.json, e.g. ``compose(ft*0.5+nl_ft*0.5)``."""
        return composition_name(self.models, self.weights)

    @property
    def checkpoint(self) -> Path:
        """Where the composed weights go: ``checkpoints/<portable stem>.pt``."""
        return self.run_dir / "checkpoints" / f"{composition_file_stem(self.models, self.weights)}.pt"


def split_list(text: str) -> list[str]:
    """``"a, b,c"`` -> ``["a", "b", "c"]`` (empty items are kept, so a stray comma is reported, not ignored)."""
    return [item.strip() for item in text.split(",")]


def parse_weights(items: Sequence[str]) -> list[float]:
    """Each item as a finite float.

    Raises:
        CompositionRequestError: an item that is not a finite number (named, with the expected form).
    """
    weights = []
    for item in items:
        try:
            value = float(item)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise CompositionRequestError(f"weight {item!r} is not a finite number: expected {WEIGHTS_FORM}, "
                                          f"e.g. --weights 0.5,0.5")
        weights.append(value)
    return weights


def check_request(run_dir: Path, models: Sequence[str], weights: Sequence[str]) -> CompositionPlan:
    """Read and check everything the composition needs, in the order a user fixes things; write nothing.

    Args:
        run_dir: A finished run folder (results.json, config.yaml, checkpoints/original.pt and one
            checkpoint per named model).
        models: Model names of ``results.json`` (not original, oracle or zero_filled).
        weights: One number per model, as typed.

    Returns:
        The plan, with the composed weights already computed (composition is cheap; scoring is not).

    Raises:
        CompositionRequestError: The first problem found, in one line naming the folder, model or value
            and the expected form.
    """
    run_dir = Path(run_dir)
    results = _read_results(run_dir)
    checkpoints = run_dir / "checkpoints"
    if not checkpoints.is_dir():
        raise CompositionRequestError(f"{run_dir} has no checkpoints/ folder: expected a finished fedforget run "
                                      "folder holding checkpoints/original.pt and one checkpoint per model")
    original_path = checkpoints / f"{ORIGINAL}.pt"
    if not original_path.is_file():
        raise CompositionRequestError(f"{original_path} does not exist: a composition adds the models' changes "
                                      "to the original model, so the run folder must hold it")
    cfg = _read_config(run_dir)
    models, weight_items = list(models), list(weights)
    if len(weight_items) != len(models):
        raise CompositionRequestError(f"{len(models)} models ({','.join(models)}) but {len(weight_items)} weights "
                                      f"({','.join(weight_items)}): expected one weight per model, {WEIGHTS_FORM}")
    values = parse_weights(weight_items)
    available = [m for m in results["models"] if m not in NOT_COMPOSABLE]
    seen: set[str] = set()
    for model in models:
        if model in NOT_COMPOSABLE:
            raise CompositionRequestError(f"model {model!r} cannot be composed: {', '.join(NOT_COMPOSABLE)} are "
                                          f"references, not unlearned models; expected one of {_listing(available)}")
        if model not in results["models"]:
            raise CompositionRequestError(f"model {model!r} is not in {run_dir / 'results.json'}: expected one of "
                                          f"{_listing(available)} ({MODELS_FORM})")
        if model in seen:
            raise CompositionRequestError(f"model {model!r} is named twice: expected each model once "
                                          f"({MODELS_FORM}); give it the sum of its weights instead")
        seen.add(model)
    original = _load(original_path)
    inputs = {model: _load(model_checkpoint(run_dir, model, results["models"][model])) for model in models}
    started = time.perf_counter()
    try:
        state = compose_states(original, [inputs[m] for m in models], values, names=models)
    except CompositionError as err:
        raise CompositionRequestError(f"cannot compose in {run_dir}: {err}") from err
    return CompositionPlan(run_dir, results, _read_audit(run_dir), cfg, models, values, original, inputs, state,
                           time.perf_counter() - started)


def _listing(names: Sequence[str]) -> str:
    return ", ".join(names) if names else "(none: the run has no unlearned models)"


def _read_results(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "results.json"
    if not path.is_file():
        raise CompositionRequestError(f"{path} does not exist: expected a finished fedforget run folder")
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CompositionRequestError(f"{path} cannot be read ({err}): expected the results.json of a finished "
                                      "run") from err
    if not isinstance(results, dict) or not isinstance(results.get("models"), dict) or "sites" not in results:
        raise CompositionRequestError(f"{path} has no models/sites: expected the results.json of a finished run")
    return results


def _read_config(run_dir: Path) -> ExperimentConfig:
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise CompositionRequestError(f"{path} does not exist: the composed model is scored on the sites' data "
                                      "as the run's config.yaml locates it")
    try:
        return saved_experiment(run_dir)
    except (ConfigError, OSError, ValueError, yaml.YAMLError, OmegaConfBaseException) as err:
        raise CompositionRequestError(f"{path} is not a valid run config ({' '.join(str(err).split())})") from err


def _read_audit(run_dir: Path) -> dict[str, Any]:
    """audit.json if the run wrote one (where each site's files were, and their SHA-256), else {}."""
    path = run_dir / "audit.json"
    try:
        return dict(json.loads(path.read_text())) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def _load(path: Path) -> State:
    try:
        return load_checkpoint(path)[0]
    except (FileNotFoundError, CheckpointError) as err:
        raise CompositionRequestError(str(err)) from err


@dataclass(frozen=True)
class ComposedModel:
    """What :func:`compose_run` wrote."""

    name: str
    checkpoint: Path
    sha256: str
    record: dict[str, Any]
    report: Path


def compose_run(plan: CompositionPlan, log: Callable[[str], None] = lambda _: None,
                exclusive: Callable[[Path], AbstractContextManager[Any]] = lambda _: nullcontext()) -> ComposedModel:
    """Score the composed model at every site, then write its checkpoint, its results.json entry and the report.

    Args:
        plan: A checked request (:func:`check_request`).
        log: Where progress lines go.
        exclusive: Holds the run folder's writer lock around the writes (the CLI passes ``RunLock``); taken
            only once the scores exist, so a request that fails leaves even the lock file as it was.

    Raises:
        CompositionFailed: A site's data cannot be read here or differs from what the run used, or
            results.json changed while the model was scored (nothing is written then).
    """
    sha = state_sha256(plan.state)
    name = plan.name
    log(f"fedforget: scoring {name} at {len(plan.results['sites'])} sites")
    scores = score_at_sites(plan.cfg, plan.results, plan.audit, plan.state, _reference(plan), final_phase(name))
    pictures = _example_reconstructions(plan)
    entry = fill_record(_record(plan, sha), scores, plan.results["forget_site"]).to_json()
    results = copy.deepcopy(plan.results)
    results["models"][name] = entry
    if ZERO_FILLED in results["models"]:  # else the re-rendering below adds the baseline, then derives the rest
        results = complete(results, plan.cfg.seed)
    with exclusive(plan.run_dir):
        if not _unchanged(plan):
            raise CompositionFailed(f"{plan.run_dir / 'results.json'} changed while {name} was scored: run "
                                    "fedforget compose again")
        save_checkpoint(plan.checkpoint, plan.state, {"model": name, "family": FAMILY, "composed_from":
                                                      entry["composed_from"], "inputs_sha256": entry["inputs_sha256"]})
        atomic_write_json(plan.run_dir / "results.json", results)
        add_models(plan.run_dir, pictures)
        report = rerender(plan.run_dir)
    written = json.loads((plan.run_dir / "results.json").read_text())["models"][name]
    return ComposedModel(name, plan.checkpoint, sha, written, report)


def _example_reconstructions(plan: CompositionPlan) -> dict[str, Any]:
    try:
        return example_reconstructions(plan.cfg, plan.run_dir, plan.name, plan.state)
    except (OSError, DataFileError) as err:
        raise CompositionFailed(f"cannot draw {plan.name} on the sites' display slices: {err}") from err


def _unchanged(plan: CompositionPlan) -> bool:
    """Whether results.json still holds what the plan read (another writer may have finished meanwhile)."""
    try:
        return _read_results(plan.run_dir) == plan.results
    except CompositionRequestError:
        return False


def _record(plan: CompositionPlan, sha: str) -> ModelRecord:
    """The composed model's entry before its scores: what was merged, its fingerprint, and its cost (nothing
    moved, no site computed; the evaluation afterwards is not the method's cost)."""
    inputs_sha = {ORIGINAL: state_sha256(plan.original), **{m: state_sha256(s) for m, s in plan.inputs.items()}}
    details = {
        "family": FAMILY,
        "composed_from": {m: w for m, w in zip(plan.models, plan.weights)},
        "models": list(plan.models),
        "weights": list(plan.weights),
        "formula": "original + " + " + ".join(f"{format_weight(w)} * ({m} - original)"
                                              for m, w in zip(plan.models, plan.weights)),
        "checkpoint": plan.checkpoint.relative_to(plan.run_dir).as_posix(),
        "inputs_sha256": inputs_sha,
        "created": utc_now(),
        "evaluated": "after the run, in-process: each site's data read through config.yaml and scored by the "
                     "ClientApp's evaluate handler (fedforget compose)",
        **_operands_cost(plan),
    }
    wall = sum(float(plan.results["models"][m]["wall_seconds"]) for m in plan.models) + plan.compose_seconds
    return ModelRecord(wall_seconds=round(wall, 6), steps=0, retain_fraction=None,
                       bytes_communicated=details["cost"]["bytes"], trained_on=[], sha256=sha, details=details)


def _operands_cost(plan: CompositionPlan) -> dict[str, Any]:
    """A composition costs what producing its models cost, plus its own step, which moves nothing.

    Counting the operands keeps RTE and the cost columns honest: merging two removals is not free
    when each had to be run first. ``own_cost`` is the composition step alone.
    """
    costs = [plan.results["models"][m].get("cost", {}) for m in plan.models]
    total = cost_record(sum(c.get("site_steps", 0) for c in costs),
                        sum(c.get("server_seconds", 0.0) for c in costs) + plan.compose_seconds,
                        sum(c.get("messages", 0) for c in costs), sum(c.get("bytes", 0) for c in costs),
                        max((c.get("history_bytes", 0) for c in costs), default=0))
    return {"messages": total["messages"], "cost": total, "own_cost": cost_record(0, plan.compose_seconds, 0, 0)}


def _reference(plan: CompositionPlan) -> State | None:
    """The oracle: the run's final evaluations send it to the forget site for the calibrated membership audit."""
    path = plan.run_dir / "checkpoints" / f"{ORACLE}.pt"
    if ORACLE not in plan.results["models"] or not path.is_file():
        return None
    return _load(path)


# The ClientApp's own evaluate handler, without the wrapper that resolves a site from a Flower Context and turns
# exceptions into error replies: here the runtime is built from the run folder, and an exception must surface.
_EVALUATE: Callable[[Message, SiteRuntime], Message] = client_app.evaluation_reply


def score_at_sites(cfg: ExperimentConfig, results: Mapping[str, Any], audit: Mapping[str, Any], state: State,
                   reference: State | None = None, tag: str = final_phase("composed")) -> SiteScores:
    """A model's scores at every site of a run, as the run's final evaluation computes them.

    Each site gets the message :func:`fedforget.server.scoring.score_sites` sends (test split; the
    forget site's train split too, and the oracle as the membership audit's reference) and is
    answered by the ClientApp's own handler on a :class:`SiteRuntime` of that site.

    Args:
        cfg: The run's saved config.
        results: The run's results.json (its ``sites``, ``forget_site`` and ``mode``).
        audit: The run's audit.json (where each site's files were and their SHA-256), or {}.
        state: The model's weights.
        reference: The oracle's weights, or None for no calibrated audit.
        tag: The phase the message names (the run's final evaluation sends ``final/<model>``).

    Returns:
        Per site: ``{"test": {...}, "train": {...}, "audit": {...}}`` as the server parses a reply.

    Raises:
        CompositionFailed: A site's data is not readable here, or its files differ from the run's.
    """
    forget = results["forget_site"]
    simulated = results.get("mode") == "simulation"
    recorded = audit.get("data", {}).get("sites", {}) if isinstance(audit.get("data"), dict) else {}
    scores: SiteScores = {}
    with _restored_threads():
        for site in results["sites"]:
            identity = SiteIdentity(site, _folders(cfg, site, recorded.get(site)))
            try:
                # A simulated site limits its threads to client_cpus; so does this one, for the same sums.
                runtime = SiteRuntime(cfg, identity, simulated=simulated)
                _check_same_data(runtime, recorded.get(site))
                content = evaluation_content(site, forget, state, tag, 0, reference)
                reply = _EVALUATE(_message(content, EVALUATE), runtime)
            except (OSError, DataFileError, SiteError) as err:
                raise CompositionFailed(f"cannot score the composed model at site {site}: {err} (its data must be "
                                        "readable on this machine, where the run's config.yaml and audit.json "
                                        "place it)") from err
            scores[site] = site_scores(reply.content)
    return scores


def _folders(cfg: ExperimentConfig, site: str, recorded: Mapping[str, Any] | None) -> dict[str, Path]:
    """Where the run read a site's splits: as audit.json recorded them (a deployed site's own paths), else
    as the config places them."""
    folders = site_folders(cfg, site)
    if recorded:
        folders.update({split: Path(recorded[split]["folder"]) for split in folders
                        if isinstance(recorded.get(split), dict) and recorded[split].get("folder")})
    return folders


def _check_same_data(runtime: SiteRuntime, recorded: Mapping[str, Any] | None) -> None:
    """Refuse to score on files other than the run's (same names, sizes and SHA-256 as audit.json lists)."""
    if not recorded:
        return  # a run folder written before audit.json recorded the data: nothing to compare with
    now = runtime.data_description()
    for split in ("train", "test"):
        if split not in recorded:
            continue
        was = [(f["name"], f["bytes"], f["sha256"]) for f in recorded[split].get("files", [])]
        found = [(f["name"], f["bytes"], f["sha256"]) for f in now[split]["files"]]
        if was != found:
            changed = sorted({n for n, _, _ in was} ^ {n for n, _, _ in found}
                             | {a[0] for a, b in zip(was, found) if a != b})
            raise SiteError(runtime.name, f"its {split} files in {now[split]['folder']} differ from the ones the "
                                          f"run used (audit.json): {', '.join(changed[:5])}")
    if recorded.get("poison_manifest_sha256", "") != now["poison_manifest_sha256"]:
        raise SiteError(runtime.name, "its poison manifest differs from the one the run used (audit.json)")


def _message(content: RecordDict, message_type: str) -> Message:
    """A message as a site receives it. Flower gives a message its metadata in a run (the SuperLink's ids);
    outside one there is none to ask, so it is set here."""
    metadata = Metadata(run_id=0, message_id="fedforget-compose", src_node_id=0, dst_node_id=0,
                        reply_to_message_id="", group_id="", created_at=time.time(), ttl=DEFAULT_TTL,
                        message_type=message_type)
    return Message(content=content, metadata=metadata)


@contextmanager
def _restored_threads() -> Iterator[None]:
    """A simulated site's runtime sets torch's thread count for its process; give this process its own back."""
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
