"""A simulation on an existing Ray cluster (on loopback): ``ray start --head``, then ``fedforget run --ray-address``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from run_helpers import fedforget_run

from fedforget.launch.flower import free_port, stop_leftovers

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).parent / "ray")


@pytest.fixture
def ray_cluster():
    """A one-node Ray cluster of its own; every process of it carries a private FLWR_HOME marker to stop it by."""
    folder = Path(tempfile.mkdtemp(prefix="ffray-"))  # short: Ray's socket paths under it must fit 107 bytes
    port = free_port()
    env = {**os.environ, "FLWR_HOME": str(folder / "marker")}
    env.pop("RAY_ADDRESS", None)
    started = subprocess.run([RAY, "start", "--head", f"--port={port}", "--num-cpus=2", f"--temp-dir={folder}",
                              "--include-dashboard=false", "--disable-usage-stats"],
                             env=env, capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield f"127.0.0.1:{port}", folder
    finally:
        stop_leftovers(folder / "marker")
        shutil.rmtree(folder, ignore_errors=True)


def test_a_run_on_an_existing_ray_cluster_puts_its_sites_on_the_clusters_workers(ray_cluster, tmp_path: Path,
                                                                                 data_root: Path,
                                                                                 cache_root: Path) -> None:
    address, folder = ray_cluster
    run = fedforget_run(["experiment=smoke", "unlearning.methods=[ft]", "--ray-address", address,
                         f"data.root={data_root}", f"cache_dir={cache_root}"], tmp_path / "run")
    assert run.returncode == 0, run.output[-3000:]
    assert run.status["status"] == "completed"
    # The ClientApp actors were workers of the cluster (its session logs), not of a Ray started for the run.
    actor_logs = [path for path in folder.glob("session_*/logs/worker-*.out") if "ClientAppActor" in path.read_text()]
    assert len(actor_logs) >= 2
    assert not list((tmp_path / "run").glob("**/session_*"))
