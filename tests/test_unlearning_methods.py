"""Properties of every unlearning method, Flower-free, on a small trained VarNet."""

from __future__ import annotations

import copy

import pytest
import torch

from fedforget.configs import load_experiment
from fedforget.configs.schema import ExperimentConfig
from fedforget.data.batches import BatchSource
from fedforget.data.sites import open_site_split
from fedforget.data.synthetic import prepare_synthetic_data
from fedforget.learning.evaluation import evaluate
from fedforget.learning.training import LocalTraining, batch_loss, train_steps
from fedforget.recon.losses import ReconLoss
from fedforget.recon.models import PRESETS, build_varnet
from fedforget.unlearning import REGISTRY, get_method, unlearn
from fedforget.unlearning.base import FORGET, RETAIN, trainable
from fedforget.unlearning.grad_surgery import orthogonal_to
from fedforget.unlearning.nl import noisy_targets
from fedforget.unlearning.pga import project_to_ball, reference_model
from fedforget.unlearning.ssd import dampen_weights

BUDGET = 4


@pytest.fixture(scope="module")
def setting(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Tiny smoke data, a VarNet trained on brain and knee, and forget / retain streams."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("unlearning-data")
    cfg = load_experiment("smoke", [f"data.root={root}"])
    prepare_synthetic_data(cfg)
    forget_train = open_site_split(cfg, "knee-0", "train")
    retain_train = open_site_split(cfg, "brain-0", "train")
    torch.manual_seed(0)
    model = build_varnet(PRESETS["tiny"])
    loss = ReconLoss()
    for source in (BatchSource(retain_train, 2, 1), BatchSource(forget_train, 2, 2)) * 3:
        train_steps(model, source, 0, 5, LocalTraining(1e-3), loss, torch.device("cpu"))
    return {"cfg": cfg, "model": model, "loss": loss, "forget": BatchSource(forget_train, 2, 11),
            "retain": BatchSource(retain_train, 2, 12), "forget_data": forget_train}


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
    from fedforget.unlearning.ga_l1 import l1_gradient

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
