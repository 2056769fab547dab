"""Properties of every unlearning method, Flower-free, on a small trained VarNet."""

from __future__ import annotations

import copy

import pytest
import torch

from fedforget.clients.site import SiteRuntime, resolve_site
from fedforget.configs import load_experiment
from fedforget.configs.schema import ExperimentConfig
from fedforget.data.batches import BatchSource
from fedforget.learning.evaluation import evaluate
from fedforget.learning.training import batch_loss
from fedforget.recon.models import PRESETS, build_varnet
from fedforget.unlearning import REGISTRY, get_method, unlearn
from fedforget.unlearning.bad_teacher import random_twin
from fedforget.unlearning.base import FORGET, RETAIN, TermContext, trainable
from fedforget.unlearning.ga_l1 import l1_gradient
from fedforget.unlearning.grad_surgery import orthogonal_to, surgery
from fedforget.unlearning.nl import noisy_targets
from fedforget.unlearning.pga import project_to_ball, reference_model
from fedforget.unlearning.ssd import dampen_weights

BUDGET = 4


def _run(setting: dict, name: str, cfg: ExperimentConfig | None = None, **kwargs):
    model = copy.deepcopy(setting["model"])
    cfg = cfg or setting["cfg"]
    report = unlearn(name, model, kwargs.pop("forget", setting["forget"]), kwargs.pop("retain", setting["retain"]),
                     cfg.unlearning, BUDGET, cfg.seed, setting["loss"], **kwargs)
    return model, report


def _forget_loss(setting: dict, model: torch.nn.Module) -> float:
    return evaluate(model, setting["forget_data"], setting["loss"], torch.device("cpu")).loss


class ExplodingSource(BatchSource):
    """A stream that fails the test if anyone reads it."""

    def batch(self, k: int):
        raise AssertionError("this method read data it must never touch")


def test_gradient_ascent_raises_the_forget_loss(setting: dict) -> None:
    before = _forget_loss(setting, setting["model"])
    model, _ = _run(setting, "ga")
    assert _forget_loss(setting, model) > before + 1e-3


def test_ft_never_touches_forget_data(setting: dict) -> None:
    untouchable = ExplodingSource(setting["forget"].dataset, 2, 0)
    model, report = _run(setting, "ft", forget=untouchable)
    assert report.evaluations == {FORGET: 0, RETAIN: BUDGET}


@pytest.mark.parametrize("name", ["ga", "ga_l1", "nl"])
def test_forget_only_methods_never_touch_retain_data(setting: dict, name: str) -> None:
    _, report = _run(setting, name, retain=ExplodingSource(setting["retain"].dataset, 2, 0))
    assert report.evaluations[RETAIN] == 0


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_method_stays_inside_its_budget(setting: dict, name: str) -> None:
    reference = {k: v.clone() for k, v in setting["model"].state_dict().items()}
    model, report = _run(setting, name, reference=reference)
    assert report.steps <= BUDGET
    assert all(count <= BUDGET for count in report.evaluations.values()), report.evaluations
    assert report.wall_seconds > 0
    changed = any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                         setting["model"].state_dict().values()))
    assert changed, f"{name} left the model unchanged"


def test_ssd_changes_only_selected_elements_and_never_grows_a_weight(setting: dict) -> None:
    model = copy.deepcopy(setting["model"])
    params = trainable(model)
    generator = torch.Generator().manual_seed(0)
    forget = {k: torch.rand(p.shape, generator=generator) for k, p in params.items()}
    retain = {k: torch.rand(p.shape, generator=generator) * 0.2 for k, p in params.items()}
    before = {k: p.detach().clone() for k, p in params.items()}
    with torch.no_grad():
        changed = dampen_weights(model, forget, retain, alpha=2.0, lam=1.0)
    selected_total = 0
    for name, p in trainable(model).items():
        selected = forget[name] > 2.0 * retain[name]
        selected_total += int(selected.sum())
        assert torch.equal(p[~selected], before[name][~selected]), "an unselected element changed"
        expected = before[name][selected] * torch.clamp(retain[name][selected] / forget[name][selected], max=1.0)
        assert torch.allclose(p[selected], expected)
        assert torch.all(p.abs() <= before[name].abs() + 1e-12), "a |weight| grew"
    assert changed == selected_total > 0


def test_ssd_with_real_importances_dampens_and_never_grows(setting: dict) -> None:
    model, report = _run(setting, "ssd")
    assert report.dampened_elements and report.dampened_elements > 0
    for after, before in zip(trainable(model).values(), trainable(setting["model"]).values()):
        assert torch.all(after.abs() <= before.abs() + 1e-12)


def test_nl_targets_differ_from_clean_by_the_configured_noise(setting: dict) -> None:
    batch = setting["forget"].batch(0)
    lam = 0.3
    noisy = noisy_targets(batch.target, batch.max_value, lam, True, seed=5, index=3)
    residual = (noisy - batch.target) / batch.max_value.view(-1, 1, 1)
    assert abs(float(residual.std()) - lam) < 0.02 and abs(float(residual.mean())) < 0.02
    absolute = noisy_targets(batch.target, batch.max_value, 1e-5, False, seed=5, index=3) - batch.target
    assert abs(float(absolute.std()) - 1e-5) < 1e-6
    assert torch.equal(noisy, noisy_targets(batch.target, batch.max_value, lam, True, seed=5, index=3))
    assert not torch.equal(noisy, noisy_targets(batch.target, batch.max_value, lam, True, seed=5, index=4))


def test_half_normal_noise_only_brightens_the_targets(setting: dict) -> None:
    batch = setting["forget"].batch(0)
    noisy = noisy_targets(batch.target, batch.max_value, 0.3, True, seed=5, index=3, distribution="half_normal")
    residual = (noisy - batch.target) / batch.max_value.view(-1, 1, 1)
    assert float(residual.min()) >= 0
    assert abs(float(residual.mean()) - 0.3 * (2 / torch.pi) ** 0.5) < 0.02  # E|N(0,1)| = sqrt(2/pi)


def test_nl_with_zero_noise_is_fine_tuning_on_forget_data(setting: dict) -> None:
    cfg = load_experiment("smoke", ["unlearning.nl.lam=0"])
    model = copy.deepcopy(setting["model"])
    method = get_method("nl", cfg.unlearning)
    batch = setting["forget"].batch(0)
    from fedforget.unlearning.base import Phase, TermContext

    ctx = TermContext(loss=setting["loss"], seed=0)
    term = method.term(FORGET, Phase("x", "gradient", 1, (FORGET,)), model, batch, 0, ctx)
    assert torch.allclose(term, batch_loss(model, batch, setting["loss"]))


def test_grad_surgery_direction_is_orthogonal_to_the_retain_gradient() -> None:
    generator = torch.Generator().manual_seed(1)
    forget = {"a": torch.randn(5, 3, generator=generator), "b": torch.randn(4, generator=generator)}
    retain = {"a": torch.randn(5, 3, generator=generator), "b": torch.randn(4, generator=generator)}
    projected = orthogonal_to(forget, retain)
    dot = sum(float(torch.sum(projected[k] * retain[k])) for k in forget)
    assert abs(dot) < 1e-5
    removed = {k: forget[k] - projected[k] for k in forget}
    ratio = removed["a"] / retain["a"]
    assert torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio), atol=1e-5), "only the retain direction removed"


def test_pga_stays_inside_the_ball_around_the_reference(setting: dict) -> None:
    model = copy.deepcopy(setting["model"])
    centre = {k: v.detach().clone() + 0.01 for k, v in trainable(model).items()}
    with torch.no_grad():
        for p in trainable(model).values():
            p.add_(torch.randn_like(p))
        project_to_ball(model, centre, radius=0.5)
    distance = torch.sqrt(sum(torch.sum((p.detach() - centre[k]) ** 2) for k, p in trainable(model).items()))
    assert float(distance) <= 0.5 + 1e-4


def test_reference_model_removes_the_forget_sites_share() -> None:
    retain_a, retain_b, forget = ({"w": torch.tensor([v])} for v in (1.0, 3.0, 10.0))
    counts = (10, 30, 4)
    total = sum(counts)
    global_state = {"w": (10 * retain_a["w"] + 30 * retain_b["w"] + 4 * forget["w"]) / total}
    reference = reference_model(global_state, forget, total, 4)
    assert torch.allclose(reference["w"], torch.tensor([(10 * 1.0 + 30 * 3.0) / 40]))


def test_ga_l1_regulariser_is_normalised_by_the_parameter_count(setting: dict) -> None:
    params = trainable(setting["model"])
    count = sum(p.numel() for p in params.values())
    gradient = l1_gradient({k: p.detach() for k, p in params.items()}, gamma=2.0)
    for k, p in params.items():
        assert torch.allclose(gradient[k], torch.sign(p.detach()) * 2.0 / count)


def test_unknown_method_lists_the_registry(setting: dict) -> None:
    with pytest.raises(ValueError, match="expected one of") as caught:
        get_method("retrain_everything", setting["cfg"].unlearning)
    assert "nl_ft" in str(caught.value)


def test_methods_are_reproducible(setting: dict) -> None:
    first, _ = _run(setting, "nl_ft")
    second, _ = _run(setting, "nl_ft")
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["ssd", "lfssd"])
def test_ssd_dampens_by_its_configured_lambda(setting: dict, name: str) -> None:
    cfg = load_experiment("smoke", [f"unlearning.{name}.lam=0.3", f"unlearning.{name}.alpha=2"])
    method = get_method(name, cfg.unlearning)
    model = copy.deepcopy(setting["model"])
    params = trainable(model)
    generator = torch.Generator().manual_seed(0)
    forget = {k: torch.rand(p.shape, generator=generator) + 0.01 for k, p in params.items()}
    retain = {k: torch.rand(p.shape, generator=generator) * 0.4 for k, p in params.items()}
    before = {k: p.detach().clone() for k, p in params.items()}
    with torch.no_grad():
        changed = method.dampen(model, {FORGET: forget, RETAIN: retain})
    assert changed == sum(int((forget[k] > 2 * retain[k]).sum()) for k in params)
    ignoring_lambda = False
    for k, p in trainable(model).items():
        selected = forget[k] > 2 * retain[k]
        factor = torch.where(selected, torch.clamp(0.3 * retain[k] / forget[k], max=1.0), torch.ones_like(p))
        assert torch.allclose(p, before[k] * factor), k
        at_one = torch.where(selected, torch.clamp(retain[k] / forget[k], max=1.0), torch.ones_like(p))
        ignoring_lambda |= not torch.allclose(p, before[k] * at_one)
    assert ignoring_lambda, "lambda = 0.3 gave the weights of lambda = 1"


def test_ga_l1_ft_direction_ascends_forget_descends_retain_and_shrinks_weights() -> None:
    cfg = load_experiment("smoke", ["unlearning.ga_l1.gamma=3.0"])
    params = {"a": torch.tensor([[1.0, -2.0], [0.5, 3.0]]), "b": torch.tensor([-1.0])}
    generator = torch.Generator().manual_seed(2)
    forget = {k: torch.randn(v.shape, generator=generator) for k, v in params.items()}
    retain = {k: torch.randn(v.shape, generator=generator) for k, v in params.items()}
    for name, grads in (("ga_l1", {FORGET: forget}), ("ga_l1_ft", {FORGET: forget, RETAIN: retain})):
        method = get_method(name, cfg.unlearning)
        direction = method.combine(method.phases(4)[0], params, grads)
        for k, p in params.items():
            # The optimizer steps along -direction: up the forget loss, down the retain loss, towards 0.
            expected = -forget[k] + 3.0 * torch.sign(p) / 5 + (retain[k] if RETAIN in grads else 0)
            assert torch.allclose(direction[k], expected), (name, k)


def test_ga_l1_local_objective_gives_the_combined_signs(setting: dict) -> None:
    cfg = load_experiment("smoke", ["unlearning.ga_l1.gamma=3.0"])
    method = get_method("ga_l1_ft", cfg.unlearning)
    phase = method.phases(4)[0]
    model = copy.deepcopy(setting["model"])
    params = trainable(model)
    ctx = TermContext(loss=setting["loss"], seed=0)
    for role, source in ((FORGET, setting["forget"]), (RETAIN, setting["retain"])):
        batch = source.batch(0)
        objective, term = method.local_term(role, phase, model, batch, 0, ctx)
        local = torch.autograd.grad(objective, list(params.values()))
        data = torch.autograd.grad(method.term(role, phase, model, batch, 0, ctx), list(params.values()))
        l1 = l1_gradient({k: p.detach() for k, p in params.items()}, 3.0)
        for (k, p), g_local, g_data in zip(params.items(), local, data):
            expected = -g_data + l1[k] if role == FORGET else g_data
            assert torch.allclose(g_local, expected, atol=1e-7), (role, k)


def test_conditional_surgery_projects_only_conflicting_gradients() -> None:
    retain = {"w": torch.tensor([1.0, 0.0, 0.0])}
    conflicting = {"w": torch.tensor([2.0, 1.0, 0.0])}  # ascending it would also raise the retain loss
    harmless = {"w": torch.tensor([-2.0, 1.0, 0.0])}  # ascending it lowers the retain loss
    assert torch.equal(surgery(conflicting, retain, conditional=True)["w"], torch.tensor([0.0, 1.0, 0.0]))
    assert torch.equal(surgery(harmless, retain, conditional=True)["w"], harmless["w"])
    assert torch.equal(surgery(harmless, retain, conditional=False)["w"], torch.tensor([0.0, 1.0, 0.0]))
    conditional = get_method("grad_surgery", load_experiment("smoke", ["unlearning.grad_surgery.conditional=true"])
                             .unlearning)
    assert torch.equal(conditional.ascent_direction({FORGET: harmless, RETAIN: retain})["w"], -harmless["w"])


@pytest.mark.parametrize("variant", ["unconditional", "conditional"])
def test_grad_surgery_ascent_raises_the_forget_loss(setting: dict, variant: str) -> None:
    cfg = load_experiment("smoke", [f"unlearning.grad_surgery.conditional={variant == 'conditional'}"])
    ascent_steps = get_method("grad_surgery", cfg.unlearning).phases(BUDGET)[0].steps
    after_ascent = {}

    def on_step(step: int, model: torch.nn.Module, record: dict) -> None:
        if step == ascent_steps:
            after_ascent["loss"] = _forget_loss(setting, model)

    _run(setting, "grad_surgery", cfg, on_step=on_step)
    assert after_ascent["loss"] > _forget_loss(setting, setting["model"]) + 1e-3


def test_random_twin_resets_every_parameter(setting: dict) -> None:
    trained = copy.deepcopy(setting["model"])
    with torch.no_grad():
        for name, p in trained.named_parameters():
            p.fill_(2.5) if name.endswith("dc_weight") else p.add_(1.0)
    twin = random_twin(trained, seed=3)
    dc_weights = [p for name, p in twin.named_parameters() if name.endswith("dc_weight")]
    assert dc_weights and all(float(p) == 1.0 for p in dc_weights), "dc_weight kept the template's value"
    fresh = random_twin(build_varnet(PRESETS["tiny"]), seed=3)
    for (name, a), b in zip(twin.named_parameters(), fresh.parameters()):
        assert torch.equal(a, b), f"{name} depends on the template's weights"
    other = random_twin(trained, seed=4)
    assert not torch.equal(next(other.parameters()), next(twin.parameters()))


def test_a_site_builds_the_bad_teacher_once_and_as_the_flower_free_run_does(setting: dict) -> None:
    cfg = load_experiment("smoke", [f"data.root={setting['root']}"])
    identity = resolve_site({"partition-id": cfg.site_names.index("knee-0")}, cfg)
    method = get_method("bad_teacher", cfg.unlearning)
    runtime = SiteRuntime(cfg, identity, simulated=False)
    runtime.model.load_state_dict(setting["model"].state_dict())  # the first message: the method's start
    teacher = runtime.term_context(method, FORGET, None).extras["teacher"]
    with torch.no_grad():
        for p in runtime.model.parameters():
            p.mul_(0.5)  # a later message's student
    assert runtime.term_context(method, FORGET, None).extras["teacher"] is teacher, "rebuilt per message"
    later_process = SiteRuntime(cfg, identity, simulated=False)  # a deployed site: a new process per message
    later_process.model.load_state_dict(runtime.model.state_dict())
    rebuilt = later_process.term_context(method, FORGET, None).extras["teacher"]
    flower_free = TermContext(loss=setting["loss"], seed=cfg.seed)
    method.prepare(FORGET, flower_free, setting["model"])
    for a, b, c in zip(teacher.state_dict().values(), rebuilt.state_dict().values(),
                       flower_free.extras["teacher"].state_dict().values()):
        assert torch.equal(a, b) and torch.equal(a, c)
