"""A Flower user's own commands on the checkout: ``flwr run .``, ``flwr ls``, ``flwr log``, ``flwr stop``.

Nothing is prepared first: the local SuperLink is the one ``flwr`` starts itself (in a private
``FLWR_HOME``), the synthetic sites do not exist yet, and the run folder is the default one in the
workspace (``FEDFORGET_HOME``). ``flwr run`` exits 0 either way, so every check reads Flower's record
(``flwr ls``) and the run folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import pytest
import torch
from run_helpers import REPO

from fedforget.launch.flower import stop_leftovers

pytestmark = pytest.mark.slow

FLWR = str(Path(sys.executable).parent / "flwr")


@pytest.fixture(scope="module")
def flower_user(tmp_path_factory: pytest.TempPathFactory):
    """A shell of a user who installed fedforget: a fresh Flower home and workspace, nothing else."""
    home = Path(tempfile.mkdtemp(prefix="ffflwr-"))  # short: Ray's socket paths under it must fit 107 bytes
    workspace = tmp_path_factory.mktemp("workspace")
    env = {**os.environ, "FLWR_HOME": str(home), "FEDFORGET_HOME": str(workspace), "FLWR_TELEMETRY_ENABLED": "0",
           "FLWR_DISABLE_UPDATE_CHECK": "1", "RAY_TMPDIR": str(home / "ray"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", None)  # the user's shell does not set Flower's switch

    def flwr(*args: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
        return subprocess.run([FLWR, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)

    yield flwr, workspace
    stop_leftovers(home)  # the local SuperLink `flwr` started stays up otherwise
    shutil.rmtree(home, ignore_errors=True)


def _runs(flwr) -> dict[str, dict]:
    listing = flwr("ls", "--format", "json", timeout=60)
    return {run["run-id"]: run for run in json.loads(listing.stdout)["runs"]}


def _run_id(output: str) -> str:
    return next(line.rsplit(" ", 1)[-1] for line in output.splitlines() if "Successfully started run" in line)


def test_flwr_run_dot_completes_on_the_installed_torch_and_says_where_it_wrote(flower_user) -> None:
    flwr, workspace = flower_user
    done = flwr("run", ".", "--stream", "--run-config", 'experiment="smoke" overrides="unlearning.methods=[ft]"')
    run_id = _run_id(done.stdout)
    assert _runs(flwr)[run_id]["status"] == "finished:completed", done.stdout[-3000:]
    [folder] = (workspace / "outputs").glob(f"smoke-*-run{run_id}")
    assert f"fedforget: run folder {folder}" in done.stdout
    assert json.loads((folder / "status.json").read_text())["status"] == "completed"
    results = json.loads((folder / "results.json").read_text())
    # The runtime dependency install resolved to nothing: every ClientApp ran on this venv's torch.
    assert {site["runtime"]["torch"] for site in results["sites"].values()} == {torch.__version__}
    assert "Installed:" not in done.stdout
    assert sorted(p.name.split("-")[0] for p in (workspace / "data" / "synthetic").iterdir()
                  if not p.name.startswith(".")) == ["brain", "knee"]
    log = flwr("log", run_id, "--show", timeout=60)
    assert f"fedforget: run folder {folder}" in log.stdout


def test_too_few_supernodes_fail_at_once_naming_the_command_that_fixes_it(flower_user) -> None:
    flwr, workspace = flower_user
    started = time.monotonic()
    done = flwr("run", ".", "--stream", "--run-config", 'experiment="smoke" overrides="sites=brain2_knee1"')
    run_id = _run_id(done.stdout)
    assert _runs(flwr)[run_id]["status"] == "finished:failed"
    assert time.monotonic() - started < 120  # not after federation.timeout_s
    [folder] = (workspace / "outputs").glob(f"smoke-*-run{run_id}")
    reason = json.loads((folder / "status.json").read_text())["reason"]
    assert "the simulation has 2 SuperNodes but experiment 'smoke' has 3 sites" in reason
    assert "flwr federation simulation-config --num-supernodes 3" in reason
    # The advice works: the same run, one SuperNode per site.
    fixed = flwr("run", ".", "--stream", "--federation-config", "num-supernodes=3", "--run-config",
                 'experiment="smoke" overrides="sites=brain2_knee1 unlearning.methods=[ft]"')
    assert _runs(flwr)[_run_id(fixed.stdout)]["status"] == "finished:completed", fixed.stdout[-3000:]


def test_flwr_stop_ends_a_running_run(flower_user) -> None:
    flwr, _ = flower_user
    started = flwr("run", ".", "--run-config", 'experiment="smoke"', timeout=120)
    run_id = _run_id(started.stdout)
    deadline = time.monotonic() + 120
    while _runs(flwr)[run_id]["status"] != "running" and time.monotonic() < deadline:
        time.sleep(1)
    assert flwr("stop", run_id, timeout=60).returncode == 0
    deadline = time.monotonic() + 60
    while not _runs(flwr)[run_id]["status"].startswith("finished") and time.monotonic() < deadline:
        time.sleep(1)
    assert _runs(flwr)[run_id]["status"] == "finished:stopped"


def test_every_dependency_is_kept_out_of_flowers_runtime_install() -> None:
    """The [tool.uv] overrides must name every dependency, or `flwr run` downloads it into a fresh environment."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    names = {dep.split(";")[0].split("[")[0].split(">")[0].split("<")[0].split("=")[0].strip().lower()
             for dep in project["project"]["dependencies"]}
    overridden = {entry.split(";")[0].strip().lower(): entry.split(";", 1)[1].strip()
                  for entry in project["tool"]["uv"]["override-dependencies"]}
    assert names == set(overridden)
    assert set(overridden.values()) == {"sys_platform == 'never'"}
