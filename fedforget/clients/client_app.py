"""The ClientApp: what a site does when the server asks (Message API only).

- ``query.site``: say which site this node is and how much data it holds (validating it).
- ``train``: FedAvg local training from the received global model.
- ``evaluate``: fastMRI metrics of the received model on the site's splits (+ membership audit).
- ``train.unlearn``: one party's share of an unlearning step (a gradient or importances) on
  the site's own data; only arrays of parameter shape go back.
"""

from __future__ import annotations

from fedforget.strategies.trace import process_started_at, trace, tracing

if tracing():  # before any heavy import: when this process began, and when Flower handed it the app
    trace("clientapp_process_start", when=process_started_at())
    trace("clientapp_import_start")

import os
import time
from collections.abc import Callable
from functools import wraps

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedforget.clients.site import SiteRuntime, runtime_for
from fedforget.configs.compose import load_from_run_config
from fedforget.learning.audits import membership_auc
from fedforget.learning.evaluation import evaluate
from fedforget.learning.training import train_steps
from fedforget.recon.poison import artifact_score
from fedforget.strategies.protocol import (
    ARRAYS,
    ORIGINAL,
    SITE,
    arrays_from_state,
    config_of,
    error_reply,
    metrics_reply,
    state_from_arrays,
)
from fedforget.unlearning import get_method
from fedforget.unlearning.base import Phase, TermContext, frozen_copy, squared_gradient_mean, term_gradients

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
            cfg = load_from_run_config(dict(context.run_config))
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


@app.query("site")
@_site_action
def describe_site(message: Message, runtime: SiteRuntime) -> Message:
    train, test = runtime.split("train"), runtime.split("test")
    volumes = {name: len({runtime.split(name).volume_of(i) for i in range(len(runtime.split(name)))})
               for name in ("train", "test")}
    metrics = {"train-slices": len(train), "test-slices": len(test),
               "train-volumes": volumes["train"], "test-volumes": volumes["test"]}
    info = {SITE: runtime.name, "device": str(runtime.device), "anatomy": runtime.cfg.sites[runtime.name].anatomy}
    return metrics_reply(message, metrics, info=info)


def _injected_fault(runtime: SiteRuntime, phase: str, step: int) -> None:
    """Fail as configured by ``federation.fault`` (drills and tests of fault tolerance)."""
    fault = runtime.cfg.federation.fault
    if not fault.hits(runtime.name, phase, step):
        return
    if fault.mode == "exit":
        os._exit(17)  # a real crash: no reply, no cleanup
    if fault.mode == "hang":
        time.sleep(runtime.cfg.federation.timeout_s + 30)
    raise RuntimeError(f"injected failure in {phase} step {step} (federation.fault)")


@app.train()
@_site_action
def train(message: Message, runtime: SiteRuntime) -> Message:
    config = config_of(message.content)
    _injected_fault(runtime, str(config.get("phase", "")), int(config.get("server-round", 0)))
    exclude = bool(config.get("exclude-poisoned", False))
    model = runtime.load(message.content[ARRAYS])
    loss = train_steps(model, runtime.train_source(exclude), int(config["first-batch"]), int(config["local-steps"]),
                       runtime.training, runtime.loss, runtime.device)
    metrics = {"num-examples": runtime.training_examples(exclude), "loss": loss}
    return metrics_reply(message, metrics, arrays_from_state(model.state_dict()))


@app.evaluate()
@_site_action
def evaluate_model(message: Message, runtime: SiteRuntime) -> Message:
    config = config_of(message.content)
    model = runtime.load(message.content[ARRAYS])
    results = {split: evaluate(model, runtime.split(split), runtime.loss, runtime.device,
                               runtime.cfg.federation.batch_size, _artifact_scorer(runtime, split))
               for split in str(config["splits"]).split(",")}
    metrics: dict[str, float] = {"num-examples": results["test"].slices}
    for split, result in results.items():
        metrics.update({f"{split}-psnr": result.metrics.psnr, f"{split}-ssim": result.metrics.ssim,
                        f"{split}-nmse": result.metrics.nmse, f"{split}-loss": result.loss})
        metrics.update({f"{split}-{key}": value for key, value in result.extras.items()})
    if "train" in results:
        metrics["mia-auc"] = membership_auc(results["train"].slice_losses, results["test"].slice_losses)
    return metrics_reply(message, metrics)


def _artifact_scorer(runtime: SiteRuntime, split: str):
    """On clean test inputs of a poisoned federation: how much of the poison each reconstruction adds."""
    poison = runtime.cfg.poison
    if not poison.active or split != "test":
        return None
    def score(target, recon, sampled):
        # Only the unsampled part of the poison can be hallucinated (data consistency fixes the rest);
        # real fastMRI k-space is wider than its cropped images, where the full pattern is used.
        columns = sampled if len(sampled) == target.shape[-1] else None
        return {"artifact_score": artifact_score(poison.kind, recon, target, poison.strength, poison.seed, columns)}

    return score


@app.train("unlearn")
@_site_action
def unlearn_share(message: Message, runtime: SiteRuntime) -> Message:
    config = config_of(message.content)
    _injected_fault(runtime, f"unlearn/{config['method']}", int(config.get("index", 0)) + 1)
    method = get_method(str(config["method"]), runtime.cfg.unlearning)
    role = str(config["role"])
    source = runtime.forget_source() if role == "forget" else runtime.retain_source()
    model = runtime.load(message.content[ARRAYS])
    ctx = TermContext(loss=runtime.loss, seed=runtime.cfg.seed)
    if ORIGINAL in message.content.array_records:
        original = frozen_copy(model)
        original.load_state_dict(state_from_arrays(message.content[ORIGINAL]))
        ctx.original = original
    method.prepare(role, ctx, model)
    phase = Phase(str(config["phase"]), str(config["kind"]), int(config["steps"]), (role,))
    if phase.kind == "importance":
        batches = min(int(config["batches"]), source.batches_per_pass)
        values = squared_gradient_mean(method, model, source, batches, ctx, runtime.device)
        return metrics_reply(message, {"num-examples": batches * source.batch_size, "loss": 0.0},
                             arrays_from_state(values))
    index = int(config["index"])
    batch = source.batch(index).to(runtime.device)
    reply = term_gradients(method, role, phase, model, batch, index, ctx)
    return metrics_reply(message, {"num-examples": reply.examples, "loss": reply.loss},
                         arrays_from_state(reply.grads))


trace("clientapp_import_end")
