"""Experiments compose from the Hydra groups; a wrong key or value fails before any work, naming it."""

from __future__ import annotations

import pytest

from fedforget.configs import ConfigError, load_experiment
from fedforget.configs.compose import split_overrides
from fedforget.configs.schema import ExperimentConfig
from fedforget.unlearning import HISTORY_REGISTRY, REGISTRY


def _brain_to_knee_volumes(cfg: ExperimentConfig) -> float:
    """Training volumes of the brain sites over the knee site's (every synthetic volume has the same slice count)."""
    brain = sum(s.train_volumes for s in cfg.sites.values() if s.anatomy == "brain")
    knee = sum(s.train_volumes for s in cfg.sites.values() if s.anatomy == "knee")
    return brain / knee


def test_demo_is_three_brain_sites_and_one_knee_site_the_knee_half_of_the_slices() -> None:
    cfg = load_experiment("demo")
    anatomies = [site.anatomy for site in cfg.sites.values()]
    assert anatomies.count("brain") == 3 and anatomies.count("knee") == 1
    assert cfg.unlearning.forget_site == "knee-0"
    assert 0.8 <= _brain_to_knee_volumes(cfg) <= 1.2, "the knee share the demo's gap was measured with (README)"
    assert cfg.data.mask_type == "equispaced_fraction"


def test_the_papers_ten_to_one_ratio_stays_in_the_sites_group() -> None:
    for cfg in (load_experiment("smoke", ["sites=brain3_knee1"]),
                load_experiment("demo", ["sites.knee-0.train_volumes=3"]),
                load_experiment("anatomy-shift", ["sites.knee-0.train_volumes=3"])):
        assert 8 <= _brain_to_knee_volumes(cfg) <= 12


def test_anatomy_shift_learns_its_knee_with_the_demos_share_and_the_papers_masks() -> None:
    cfg = load_experiment("anatomy-shift")
    assert 1.5 <= _brain_to_knee_volumes(cfg) <= 2.5, "the knee share its gap was measured with (README)"
    assert (cfg.data.acceleration, cfg.data.center_fraction) == (8, 0.04)


def test_mask_default_is_the_papers_eight_fold_with_four_percent_centre() -> None:
    cfg = load_experiment("smoke")
    assert (cfg.data.acceleration, cfg.data.center_fraction, cfg.data.mask_type) == (8, 0.04, "equispaced_fraction")


def test_default_budget_is_ten_percent_of_training_steps() -> None:
    cfg = load_experiment("demo")
    assert cfg.unlearning.budget_steps(cfg.federation.training_steps) == round(0.1 * cfg.federation.training_steps)


def test_methods_all_expands_to_the_registry() -> None:
    assert load_experiment("smoke", ["unlearning.methods=[all]"]).unlearning.methods == [*REGISTRY, *HISTORY_REGISTRY]


def test_method_groups_expand_in_place() -> None:
    cfg = load_experiment("smoke", ["unlearning.methods=[history,ft,retrain_budget@0.5]"])
    assert cfg.unlearning.methods == [*HISTORY_REGISTRY, "ft", "retrain_budget@0.5"]
    assert load_experiment("smoke", ["unlearning.methods=[centralised]"]).unlearning.methods == list(REGISTRY)


@pytest.mark.parametrize(("overrides", "expected"), [
    (["federation.history.every=0", "unlearning.methods=[ft,sifu]"],
     "['sifu'], which read the server's round history, but federation.history.every=0 keeps none: "
     "set federation.history.every=1"),
    (["federation.history.every=2", "unlearning.methods=[fedrecover]"],
     "federation.history.every to a divisor of 1"),
    (["federation.history.every=2", "unlearning.methods=[federaser]", "unlearning.federaser.interval=3"],
     "federation.history.every to a divisor of 3"),
    (["unlearning.methods=[fukd]", "unlearning.fukd.repair=kd"], "set unlearning.retain_access=server"),
    (["unlearning.methods=[retrain_budget@1.5]"], "retrain_budget@<fraction in (0, 1]>"),
    (["unlearning.methods=[sifu@2]"], "unknown method(s) ['sifu@2']"),
    (["sites.knee-0.joins_at_round=2"], "sites.knee-0.joins_at_round=2 is invalid: expected fewer than "
                                        "federation.rounds=2"),
])
def test_history_methods_are_refused_without_the_history_they_read(overrides: list[str], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_experiment("smoke", overrides)
    assert expected in str(caught.value)


def test_history_methods_pass_with_a_matching_history() -> None:
    cfg = load_experiment("smoke", ["federation.history.every=2", "unlearning.methods=[federaser,puf,rollback]",
                                    "unlearning.federaser.interval=4"])
    assert cfg.reads_round_history and cfg.federation.history.keeps(3) and not cfg.federation.history.keeps(2)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("unlearning.forget_site=liver-0", "unlearning.forget_site='liver-0'"),
        ("unlearning.retain_fraction=0", "unlearning.retain_fraction=0.0"),
        ("unlearning.retain_fraction=1.5", "unlearning.retain_fraction=1.5"),
        ("unlearning.nl.lam=-1", "unlearning.nl.lam=-1.0"),
        ("unlearning.ga_l1.gamma=-0.1", "unlearning.ga_l1.gamma=-0.1"),
        ("unlearning.methods=[ft,forget_everything]", "forget_everything"),
        ("unlearning.retain_access=cloud", "unlearning.retain_access='cloud'"),
        ("federation.rounds=0", "federation.rounds=0"),
        ("data.mask_type=spiral", "data.mask_type='spiral'"),
        ("data.skull_stripped_share=1.5", "data.skull_stripped_share=1.5"),
        ("federation.roundz=3", "federation.roundz"),
        ("model=huge", "model/huge"),
        ("experiment=nope", "experiment/nope"),
        ("federation.rounds=many", "federation.rounds"),
    ],
)
def test_bad_config_fails_naming_the_key(override: str, expected: str) -> None:
    experiment, overrides = ("demo", [override]) if not override.startswith("experiment=") else (
        override.split("=")[1], [])
    with pytest.raises(ConfigError, match=None) as caught:
        load_experiment(experiment, overrides)
    assert expected in str(caught.value)


def test_budget_of_zero_steps_is_refused() -> None:
    cfg = load_experiment("smoke", ["unlearning.steps=0", "unlearning.budget_fraction=0.01"])
    with pytest.raises(ValueError, match="budget of 0 steps"):
        cfg.unlearning.budget_steps(cfg.federation.training_steps)


def test_overrides_string_splits_on_spaces_outside_brackets() -> None:
    assert split_overrides(" a=1  unlearning.methods=[ft, nl_ft] b='x' ") == [
        "a=1", "unlearning.methods=[ft, nl_ft]", "b='x'"]


def test_the_schema_names_every_registered_method_in_order() -> None:
    from fedforget.configs.schema import CENTRALISED_METHODS, HISTORY_METHODS, METHOD_NAMES
    from fedforget.unlearning import HISTORY_REGISTRY, REGISTRY

    assert (tuple(REGISTRY), tuple(HISTORY_REGISTRY)) == (CENTRALISED_METHODS, HISTORY_METHODS)
    assert METHOD_NAMES == CENTRALISED_METHODS + HISTORY_METHODS


def test_group_files_state_only_what_differs_from_the_schema() -> None:
    """Defaults live in the dataclasses: a group option that repeats one would be a second place to change it."""
    import dataclasses
    from pathlib import Path

    import yaml

    from fedforget.configs import schema

    groups = {"data": schema.DataConfig, "federation": schema.FederationConfig, "model": schema.ModelConfig,
              "unlearning": schema.UnlearningConfig, "poison": schema.PoisonConfig}
    naming = {"data": "kind", "model": "preset", "poison": "kind"}  # the key that says which option a file is
    root = Path(schema.__file__).parent
    repeated = []
    for group, cls in groups.items():
        defaults = {f.name: getattr(cls(), f.name) for f in dataclasses.fields(cls)}
        for option in sorted((root / group).glob("*.yaml")):
            for key, value in (yaml.safe_load(option.read_text()) or {}).items():
                if key in defaults and defaults[key] == value and key != naming.get(group):
                    repeated.append(f"{group}/{option.name}: {key}={value!r}")
    assert not repeated, repeated


def test_model_presets_resolve_and_keys_override_them() -> None:
    from fedforget.configs.schema import MODEL_PRESETS

    paper = load_experiment("paper-brain-knee", ["data.root=/data"]).model
    assert paper.shape() == MODEL_PRESETS["paper"]
    custom = load_experiment("smoke", ["model.chans=16"]).model
    assert custom.shape() == {**MODEL_PRESETS["tiny"], "chans": 16}
    with pytest.raises(ConfigError, match="model.preset"):
        load_experiment("smoke", ["model.preset=huge"])


def test_every_path_field_is_made_absolute_before_flower_runs(tmp_path, monkeypatch) -> None:
    from fedforget.configs.schema import path_keys
    from fedforget.launch.runner import absolute_overrides

    assert set(path_keys()) == {"cache_dir", "data.root", "unlearning.from_checkpoint", "unlearning.server_retain_root"}
    monkeypatch.chdir(tmp_path)
    made = absolute_overrides([f"{key}=relative/{i}" for i, key in enumerate(path_keys())] + ["seed=3"])
    assert made[-1] == "seed=3"
    for i, override in enumerate(made[:-1]):
        assert override.split("=", 1)[1] == str(tmp_path / "relative" / str(i))


def test_cosine_learning_rate_runs_from_lr_to_its_final_fraction() -> None:
    fed = load_experiment("smoke", ["federation.rounds=5", "federation.lr=0.004", "federation.lr_schedule=cosine",
                                    "federation.lr_final_fraction=0.25"]).federation
    rates = [fed.round_lr(r) for r in range(1, 6)]
    assert rates[0] == pytest.approx(0.004) and rates[-1] == pytest.approx(0.001)
    assert rates[2] == pytest.approx(0.0025) and all(a > b for a, b in zip(rates, rates[1:]))
    constant = load_experiment("smoke", ["federation.lr=0.004"]).federation
    assert {constant.round_lr(r) for r in range(1, 3)} == {0.004}


def test_a_site_contrast_of_the_other_anatomy_is_a_config_error() -> None:
    from fedforget.data.synthetic import site_spec

    cfg = load_experiment("smoke", ["sites.knee-0.contrasts=[AXFLAIR]"])
    with pytest.raises(ConfigError, match="sites.knee-0.*AXFLAIR.*CORPD_FBK"):
        site_spec(cfg, "knee-0")
    assert site_spec(load_experiment("smoke", ["sites.knee-0.contrasts=[CORPDFS_FBK]"]), "knee-0").contrasts == \
        ("CORPDFS_FBK",)


def test_the_skull_stripped_share_reaches_brain_sites_only() -> None:
    from fedforget.data.synthetic import site_spec

    cfg = load_experiment("smoke", ["data.skull_stripped_share=0.4"])
    assert site_spec(cfg, "brain-0").skull_stripped_share == 0.4
    assert site_spec(cfg, "knee-0").skull_stripped_share == 0.0
def _as_run_config_composes(experiment: str, overrides: list[str]):
    """What a ServerApp / ClientApp composes from a run config: the workspace's paths filled in."""
    from fedforget.configs.compose import anchor_paths, default_path_overrides

    return anchor_paths(load_experiment(experiment, default_path_overrides(overrides)))


def test_a_run_config_is_composed_once_per_machine_and_read_back_equal(
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fedforget.configs.compose as compose
    from fedforget.configs.cache import composed_path

    monkeypatch.setenv("FEDFORGET_CACHE", str(tmp_path))
    run_config = {"experiment": "demo", "overrides": "unlearning.methods=[all] seed=3 federation.lr=0.002"}
    monkeypatch.setattr(compose, "_FROM_RUN_CONFIG", {})
    first = compose.load_from_run_config(run_config)
    assert first == _as_run_config_composes("demo", ["unlearning.methods=[all]", "seed=3", "federation.lr=0.002"])
    assert composed_path("demo", " ".join(compose.default_path_overrides(run_config["overrides"].split()))).is_file()

    # A fresh process (empty in-process memo) must not compose again: Hydra is not even reachable.
    monkeypatch.setattr(compose, "_FROM_RUN_CONFIG", {})
    monkeypatch.setattr(compose, "_hydra", lambda: pytest.fail("composed again instead of reading the memo"))
    again = compose.load_from_run_config(run_config)
    assert again == first and again is not first
    assert type(again.federation.lr) is float and again.unlearning.methods == [*REGISTRY, *HISTORY_REGISTRY]


def test_a_run_config_carrying_the_resolved_experiment_is_rebuilt_once_without_composing(
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fedforget.configs.compose as compose

    monkeypatch.setenv("FEDFORGET_CACHE", str(tmp_path))
    launched = _as_run_config_composes("demo", ["unlearning.methods=[all]", "seed=3", "federation.lr=0.002"])
    # experiment / overrides that would compose something else: the resolved form alone must decide.
    run_config = {"experiment": "smoke", "overrides": "seed=99", "resolved-config": compose.resolved_form(launched)}
    monkeypatch.setattr(compose, "_FROM_RESOLVED", {})
    monkeypatch.setattr(compose, "_hydra", lambda: pytest.fail("composed instead of rebuilding the resolved form"))
    rebuilt = compose.experiment_from_run_config(run_config)
    assert rebuilt == launched and rebuilt is not launched
    assert type(rebuilt.federation.lr) is float and rebuilt.unlearning.methods == [*REGISTRY, *HISTORY_REGISTRY]
    assert compose.experiment_from_run_config(run_config) is rebuilt, "once per process"
    assert not list(tmp_path.rglob("*.json")), "no disk memo is needed for a resolved run config"


def test_a_resolved_experiment_this_version_cannot_read_is_refused_naming_the_key(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import fedforget.configs.compose as compose

    monkeypatch.setattr(compose, "_FROM_RESOLVED", {})
    for damaged in ("{not json", '{"name": "smoke", "no_such_key": 1}'):
        with pytest.raises(ConfigError, match="resolved-config is not an experiment"):
            compose.experiment_from_run_config({"experiment": "smoke", "overrides": "", "resolved-config": damaged})


def test_a_damaged_or_foreign_config_memo_is_composed_again(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fedforget.configs.compose as compose
    from fedforget.configs.cache import composed_path

    monkeypatch.setenv("FEDFORGET_CACHE", str(tmp_path))
    run_config = {"experiment": "smoke", "overrides": "seed=5"}
    assert composed_path("smoke", "seed=5") != composed_path("smoke", "seed=6")
    path = composed_path("smoke", " ".join(compose.default_path_overrides(["seed=5"])))
    for damage in ("{not json", '{"name": "smoke", "no_such_key": 1}'):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(damage)
        monkeypatch.setattr(compose, "_FROM_RUN_CONFIG", {})
        assert compose.load_from_run_config(run_config) == _as_run_config_composes("smoke", ["seed=5"])


def test_the_config_memo_key_covers_every_config_file(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    import fedforget.configs.cache as cache

    copy = tmp_path / "configs"
    shutil.copytree(cache.CONFIG_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(cache, "CONFIG_DIR", copy)
    monkeypatch.setattr(cache, "_CODE_FINGERPRINT", [])
    before = cache.composed_path("smoke", "")
    experiment = copy / "experiment" / "smoke.yaml"
    experiment.write_text(experiment.read_text().replace("rounds: 2", "rounds: 3"))
    monkeypatch.setattr(cache, "_CODE_FINGERPRINT", [])
    assert cache.composed_path("smoke", "") != before, "an edited experiment file must not hit the old memo"


def test_one_composition_gives_the_launcher_the_declared_sweep_or_the_experiment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import fedforget.configs.compose as compose

    calls = []
    real = compose._hydra
    monkeypatch.setattr(compose, "_hydra", lambda: calls.append(1) or real())
    single = compose.compose_for_launch("demo", ["seed=3"])
    assert len(calls) == 1, "a single run's launcher composes its experiment once"
    assert single.declared_sweep == [] and single.experiment == load_experiment("demo", ["seed=3"])
    swept = compose.compose_for_launch("retain-sweep")
    assert swept.experiment is None
    assert swept.declared_sweep == ["seed=0,1,2", "unlearning.retain_fraction=0.01,0.05,0.1,0.2,0.5,1.0"]
