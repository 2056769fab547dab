"""The ClientApp: what a site does when the server asks (Message API only).

- ``query.site``: say which site this node is and how much data it holds (validating it).
- ``train``: FedAvg local training from the received global model (also a history-based unlearning
  method's local round, at the learning rate it sends; PUF's on the forget set).
- ``evaluate``: fastMRI metrics of the received model on the site's splits (+ membership audit).
- ``train.unlearn``: one party's share of an unlearning step (a gradient or importances), or of
  a local round (the change of its weights after k local steps, or a guide's mean gradient),
  on the site's own data; only arrays of parameter shape go back.

Each handler reads its message as a typed request (:mod:`fedforget.strategies.messages`), so a
message that lacks what its request needs fails with the missing key named, and the unlearning
handler dispatches on the request's :class:`UnlearnMode`.
"""

from __future__ import annotations

from fedforget.strategies.trace import process_started_at, trace, tracing

if tracing():  # before any heavy import: when this process began, and when Flower handed it the app
    trace("clientapp_process_start", when=process_started_at())
    trace("clientapp_import_start")

import os
import platform
import time
from collections.abc import Callable
from functools import wraps
from typing import NamedTuple

from flwr.app import ArrayRecord, Context, Message
from flwr.clientapp import ClientApp
from torch import nn

from fedforget.clients.site import HELDOUT, SiteRuntime, runtime_for
from fedforget.configs.compose import experiment_from_run_config
from fedforget.configs.schema import FORGET, unlearn_phase
from fedforget.data.batches import BatchSource
from fedforget.learning.audits import membership_audit
from fedforget.learning.evaluation import Evaluation, Reconstructor
from fedforget.learning.evaluation import zero_filled as zero_filled_reconstruction
from fedforget.learning.training import reconstruct, train_steps
from fedforget.strategies.messages import EvaluateRequest, SiteQuery, TrainRequest, UnlearnMode, UnlearnRequest
from fedforget.strategies.protocol import (
    SITE,
    SiteError,
    arrays_from_state,
    data_record,
    error_reply,
    metrics_reply,
    split_metric,
)
from fedforget.unlearning import get_method
from fedforget.unlearning.base import (
    Method,
    Phase,
    Tensors,
    TermContext,
    local_update,
    mean_term_gradient,
    term_gradients,
)

app = ClientApp()

Handler = Callable[[Message, SiteRuntime], Message]


def _site_action(handler: Handler) -> Callable[[Message, Context], Message]:
    """Resolve the site runtime and turn any failure into a readable error reply."""

    @wraps(handler)
    def run(message: Message, context: Context) -> Message:
        site = str(context.node_config.get("site", f"partition-{context.node_config.get('partition-id', '?')}"))
        trace("handler_start", id=message.metadata.message_id, type=message.metadata.message_type, site=site)
        runtime = None
        try:
            cfg = experiment_from_run_config(dict(context.run_config))
            trace("config_ready")
            runtime = runtime_for(cfg, dict(context.node_config))
            trace("runtime_ready")
            site = runtime.name
            return handler(message, runtime)
        except Exception as err:  # noqa: BLE001 - every failure must reach the server as a reason
            return error_reply(message, site, err)
        finally:
            trace("handler_end", id=message.metadata.message_id,
                  read_seconds=runtime.read_seconds if runtime is not None else 0.0)

    return run


def software_versions() -> dict[str, str]:
    """What this ClientApp process runs on: a site on another torch than the installed one is visible."""
    from importlib.metadata import version

    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "fedforget": version("fedforget"),
            "flwr": version("flwr")}


@app.query("site")
@_site_action
def describe_site(message: Message, runtime: SiteRuntime) -> Message:
    SiteQuery.from_record(message.content)  # a message that is no site query fails here, naming what it lacks
    train, test = runtime.split("train"), runtime.split("test")
    volumes = {name: len({runtime.split(name).volume_of(i) for i in range(len(runtime.split(name)))})
               for name in ("train", "test")}
    metrics = {"train-slices": len(train), "test-slices": len(test),
               "train-volumes": volumes["train"], "test-volumes": volumes["test"]}
    info = {SITE: runtime.name, "device": str(runtime.device), "anatomy": runtime.cfg.sites[runtime.name].anatomy,
            "simulated": runtime.simulated, **software_versions()}
    return metrics_reply(message, metrics, info=info, data=data_record(runtime.data_description()))


def _injected_fault(runtime: SiteRuntime, phase: str, step: int) -> None:
    """Fail as configured by ``federation.fault`` (drills and tests of fault tolerance)."""
    fault = runtime.cfg.federation.fault
    if not fault.hits(runtime.name, phase, step):
        return
    if fault.mode == "exit":
        os._exit(17)  # a real crash: no reply, no cleanup
    if fault.mode == "hang":
        time.sleep(runtime.cfg.federation.timeout_s + 30)
    if fault.mode == "bug":
        raise ZeroDivisionError(f"injected programming error in {phase} step {step} (federation.fault.mode=bug)")
    raise SiteError(runtime.name, f"injected failure in {phase} step {step} (federation.fault)")


@app.train()
@_site_action
def train(message: Message, runtime: SiteRuntime) -> Message:
    """A local training round: a FedAvg round (lr from the schedule), or a history-based method's round
    (an explicit lr; on the forget set for PUF's negated round)."""
    request = TrainRequest.from_record(message.content)
    _injected_fault(runtime, request.phase, request.fault_step)
    model = runtime.load(request.model)
    settings = (runtime.training_at(request.lr) if request.lr is not None
                else runtime.training_in_round(request.server_round if request.server_round is not None else 1))
    source = runtime.forget_source() if request.on_forget_set else runtime.train_source(bool(request.exclude_poisoned))
    trace("compute_start", id=message.metadata.message_id)
    loss = train_steps(model, source, request.first_batch, request.local_steps, settings, runtime.loss,
                       runtime.device)
    trace("compute_end", id=message.metadata.message_id)
    metrics = {"num-examples": len(source), "loss": loss}
    return metrics_reply(message, metrics, arrays_from_state(model.state_dict()))


@app.evaluate()
@_site_action
def evaluate_model(message: Message, runtime: SiteRuntime) -> Message:
    return evaluation_reply(message, runtime)


def evaluation_reply(message: Message, runtime: SiteRuntime) -> Message:
    """A site's answer to an ``evaluate`` message: its scores of the received model (or of zero-filled).

    Exceptions propagate (the ClientApp's wrapper turns them into error replies; ``fedforget compose``,
    which scores in-process, must see them)."""
    request = EvaluateRequest.from_record(message.content)
    reconstructor = _reconstructor(request, runtime)
    results = {split: runtime.score(reconstructor, split) for split in request.splits}
    metrics: dict[str, float | list[float]] = {"num-examples": results["test"].slices}
    for split, result in results.items():
        metrics.update(_split_metrics(split, result))
    if "train" in results:
        heldout = runtime.score(reconstructor, HELDOUT) if runtime.holds_poisoned_forget_set else results["test"]
        reference = _reference_scores(request.reference, runtime) if request.reference is not None else {}
        audit = membership_audit(results["train"], heldout, reference.get("train"), reference.get(HELDOUT),
                                 seed=runtime.cfg.seed)
        metrics.update(audit.metrics())
    return metrics_reply(message, metrics)


def _reconstructor(request: EvaluateRequest, runtime: SiteRuntime) -> Reconstructor:
    """The received model's reconstructions, or zero-filled ones (for which no model is sent)."""
    if request.model is None:
        return zero_filled_reconstruction
    model = runtime.load(request.model)
    model.eval()
    return lambda batch: reconstruct(model, batch)


def _reference_scores(reference: ArrayRecord, runtime: SiteRuntime) -> dict[str, Evaluation]:
    """The reference model (the oracle) on the forget set and the held-out slices, for the calibrated audit."""
    return {split: runtime.reference_score(reference, split) for split in ("train", HELDOUT)}


def _split_metrics(split: str, result: Evaluation) -> dict[str, float | list[float]]:
    """Means over volumes, plus per-volume PSNR / SSIM (and extras) for the server's bootstrap intervals.

    Per-volume scores are aggregates of a volume's slices; per-slice losses never leave the site.
    """
    values: dict[str, float | list[float]] = {
        "psnr": result.metrics.psnr, "ssim": result.metrics.ssim, "nmse": result.metrics.nmse, "loss": result.loss,
        "psnr-volumes": [m.psnr for m in result.per_volume], "ssim-volumes": [m.ssim for m in result.per_volume]}
    for key, value in result.extras.items():
        values[key] = value
        values[f"{key}-volumes"] = [e[key] for e in result.volume_extras]
    return {split_metric(split, name): value for name, value in values.items()}


class _Party(NamedTuple):
    """What a party's share of an unlearning exchange works with: the method, its data, the model, the context."""

    method: Method
    source: BatchSource
    model: nn.Module
    ctx: TermContext
    phase: Phase


_Share = tuple[dict[str, float], Tensors]  # a share's metrics (num-examples, loss) and its parameter-shaped arrays


@app.train("unlearn")
@_site_action
def unlearn_share(message: Message, runtime: SiteRuntime) -> Message:
    """One party's share of an unlearning exchange, as the request's mode asks (see :class:`UnlearnMode`)."""
    request = UnlearnRequest.from_record(message.content)
    _injected_fault(runtime, unlearn_phase(request.method), request.exchange if request.exchange is not None else 1)
    method = get_method(request.method, runtime.cfg.unlearning)
    source = runtime.forget_source() if request.role == FORGET else runtime.retain_source()
    model = runtime.load(request.model)
    party = _Party(method, source, model, runtime.term_context(method, request.role, request.original),
                  request.party_phase())
    metrics, arrays = _SHARES[request.mode](request, party, runtime)
    return metrics_reply(message, metrics, arrays_from_state(arrays))


def _importances(request: UnlearnRequest, party: _Party, runtime: SiteRuntime) -> _Share:
    """A dampening phase's importances over at most one pass of the party's data."""
    batches = min(request.batches, party.source.batches_per_pass)
    values = party.method.importance(request.role, party.model, party.source, batches, party.ctx, runtime.device)
    return {"num-examples": batches * party.source.batch_size, "loss": 0.0}, values


def _direction(request: UnlearnRequest, party: _Party, runtime: SiteRuntime) -> _Share:
    """A guide role's mean gradient over a local round's batches."""
    reply = mean_term_gradient(party.method, request.role, party.phase, party.model, party.source, request.index,
                               request.local_steps, party.ctx, runtime.device)
    return {"num-examples": reply.examples, "loss": reply.loss}, reply.grads


def _local_update(request: UnlearnRequest, party: _Party, runtime: SiteRuntime) -> _Share:
    """The change of the party's weights after a local round of its own term."""
    update = local_update(party.method, request.role, party.phase, party.model, party.source, request.index,
                          request.local_steps, party.ctx, request.lr,
                          request.inputs.round_inputs().to(runtime.device), runtime.device)
    return {"num-examples": update.examples, "loss": update.loss}, update.delta


def _gradient_step(request: UnlearnRequest, party: _Party, runtime: SiteRuntime) -> _Share:
    """The party's term gradient on one batch (with the step's inputs)."""
    party.ctx.inputs = request.inputs.round_inputs().to(runtime.device)
    batch = party.source.batch(request.index).to(runtime.device)
    reply = term_gradients(party.method, request.role, party.phase, party.model, batch, request.index, party.ctx)
    return {"num-examples": reply.examples, "loss": reply.loss}, reply.grads


_SHARES: dict[UnlearnMode, Callable[[UnlearnRequest, _Party, SiteRuntime], _Share]] = {
    UnlearnMode.GRADIENT_STEP: _gradient_step,
    UnlearnMode.IMPORTANCES: _importances,
    UnlearnMode.DIRECTION: _direction,
    UnlearnMode.LOCAL_UPDATE: _local_update,
}


trace("clientapp_import_end")
