"""Users' own experiments and site lists: ``--config-dir``, ``+sites.<name>={...}``, ``sites=generated``,
and where a run writes when it does not say (the workspace)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from run_helpers import fedforget_run

from fedforget.configs.compose import (
    ConfigError,
    anchor_paths,
    config_dir_override,
    load_experiment,
    load_from_run_config,
)
from fedforget.configs.workspace import workspace_root

USER_EXPERIMENT = """# @package _global_
defaults:
  - /experiment/smoke
  - override /sites: two_hospitals
name: mine
seed: 11
"""
USER_SITES = """brain-7: {anatomy: brain, train_volumes: 2, test_volumes: 1, seed: 700}
knee-0: {anatomy: knee, train_volumes: 1, test_volumes: 1, seed: 400}
"""


@pytest.fixture
def user_configs(tmp_path: Path) -> Path:
    folder = tmp_path / "my-configs"
    (folder / "experiment").mkdir(parents=True)
    (folder / "sites").mkdir()
    (folder / "experiment" / "mine.yaml").write_text(USER_EXPERIMENT)
    (folder / "sites" / "two_hospitals.yaml").write_text(USER_SITES)
    return folder


def test_a_users_config_folder_holds_experiments_and_site_lists_beside_the_packages(user_configs: Path) -> None:
    cfg = load_experiment("mine", [config_dir_override(user_configs)])
    assert (cfg.name, cfg.seed, cfg.site_names, cfg.data.size) == ("mine", 11, ["brain-7", "knee-0"], 32)
    # The package's experiments stay reachable, with the user's groups as options.
    assert load_experiment("smoke", [config_dir_override(user_configs), "sites=two_hospitals"]).site_names == \
        ["brain-7", "knee-0"]


def test_a_missing_config_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"--config-dir {tmp_path / 'nope'}: no such folder"):
        config_dir_override(tmp_path / "nope")


def test_a_site_added_on_the_command_line_is_checked_like_any_other() -> None:
    cfg = load_experiment("smoke", ["+sites.brain-9={anatomy:brain,train_volumes:2,test_volumes:1,seed:900}"])
    assert cfg.site_names == ["brain-0", "knee-0", "brain-9"]
    assert (cfg.sites["brain-9"].train_volumes, cfg.sites["brain-9"].seed) == (2, 900)
    with pytest.raises(ConfigError, match="Key 'bogus' not in 'SiteConfig'"):
        load_experiment("smoke", ["+sites.brain-9={anatomy:brain,bogus:1}"])
    with pytest.raises(ConfigError, match=r"add the site whole, \+sites.brain-9=\{anatomy:brain"):
        load_experiment("smoke", ["+sites.brain-9.anatomy=brain"])


def test_a_generated_site_list_names_counts_and_splits_the_hospitals() -> None:
    cfg = load_experiment("smoke", ["sites=generated", "generated_sites.brain=96", "generated_sites.knee=32"])
    assert len(cfg.sites) == 128 and cfg.site_names[:2] == ["brain-0", "brain-1"] and cfg.site_names[96] == "knee-0"
    assert {site.train_volumes for site in cfg.sites.values()} == {2}
    assert len({site.seed for site in cfg.sites.values()}) == 128  # no two synthetic hospitals alike
    skewed = load_experiment("smoke", ["sites=generated", "generated_sites.brain=40", "generated_sites.split=skewed",
                                       "generated_sites.train_volumes=4", "generated_sites.skew=0.8"])
    volumes = [site.train_volumes for site in skewed.sites.values()]
    assert min(volumes) >= 1 and len(set(volumes)) > 3 and 2.5 < sum(volumes) / len(volumes) < 7
    real = load_experiment("smoke", ["sites=generated", "data=fastmri", "data.root=/fastmri", "generated_sites.brain=3",
                                     "generated_sites.knee=2", "generated_sites.train_volumes=5"])
    brains = [real.sites[f"brain-{i}"] for i in range(3)]
    assert [(s.train_dir, s.volumes_from, s.test_volumes_from) for s in brains] == \
        [("brain/multicoil_train", 0, 0), ("brain/multicoil_train", 5, 1), ("brain/multicoil_train", 10, 2)]
    assert real.sites["knee-1"].volumes_from == 5 and real.sites["knee-1"].train_dir == "knee/multicoil_train"


def test_a_run_config_without_paths_writes_in_the_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fedforget.configs.compose as compose

    monkeypatch.setenv("FEDFORGET_HOME", str(tmp_path))
    monkeypatch.setattr(compose, "_FROM_RUN_CONFIG", {})
    assert workspace_root() == tmp_path
    cfg = load_from_run_config({"experiment": "smoke", "overrides": ""})
    assert (cfg.cache_dir, cfg.data.root) == (str(tmp_path / "outputs" / ".cache"), str(tmp_path / "data/synthetic"))
    with pytest.raises(ConfigError, match="unlearning.server_retain_root='retain' is a relative path"):
        anchor_paths(load_experiment("smoke", ["unlearning.server_retain_root=retain"]))


@pytest.mark.slow
def test_fedforget_run_with_a_users_experiment_and_an_added_site(user_configs: Path, tmp_path: Path,
                                                                 data_root: Path, cache_root: Path) -> None:
    """The ClientApps compose the user's experiment too: it travels as a search-path override in the run config."""
    run = fedforget_run(["--config-dir", str(user_configs), "experiment=mine", "unlearning.methods=[ft]",
                         "+sites.brain-9={anatomy:brain,train_volumes:2,test_volumes:1,seed:900}",
                         f"data.root={data_root}", f"cache_dir={cache_root}"], tmp_path / "run")
    assert run.returncode == 0, run.output[-3000:]
    results = run.results
    assert list(results["sites"]) == ["brain-7", "knee-0", "brain-9"]
    assert results["sites"]["brain-9"]["train_volumes"] == 2
    assert json.loads((run.folder / "status.json").read_text())["status"] == "completed"
