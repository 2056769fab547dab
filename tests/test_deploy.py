"""Running across machines, on loopback: a real SuperLink and one SuperNode per site, driven by deploy/.

Every process a test starts is stopped by its PID in the ``federation`` fixture's
teardown, also when the test fails. Each test has its own ``FLWR_HOME`` per role
(SuperLink, each SuperNode, the coordinator's CLI), as on separate machines.

Speed (2 cores): every message to a site starts a fresh ClientApp process (Flower
1.42's subprocess isolation; the TLS test forks it from a warm template,
``fedforget.launch.warm_clientapp``, the insecure one starts it cold), so the deployed tests run a shrunk smoke workload
(one round, one method, one unlearning step; every phase still runs), poll the
SuperLink every 0.1 s (``SUPERNODE_POLL_SECONDS``) and keep torch to one thread per
process (``OMP_NUM_THREADS=1``: three processes share two cores). The runs share the server's
model cache (see ``model_cache``): the first trains the original and the oracle over its
federation, later ones load them and run discovery, unlearning and evaluation.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from fedforget.configs.compose import load_experiment
from fedforget.configs.schema import ExperimentConfig
from fedforget.data.batches import unlearning_source
from fedforget.data.sites import open_site_split, site_folders
from fedforget.data.synthetic import prepare_synthetic_data
from fedforget.launch.deploy import (
    DEPLOY_DIR,
    DeployError,
    Process,
    start_superlink,
    start_supernode,
    wait_for_node_id,
    wait_for_warm_template,
)
from fedforget.launch.flower import descendants, flower_bin, flower_env, free_port
from fedforget.learning.checkpoints import load_checkpoint
from fedforget.recon.losses import ReconLoss
from fedforget.recon.models import PRESETS, build_varnet
from fedforget.strategies.link import send_and_receive
from fedforget.unlearning import unlearn

SITES = ("brain-0", "knee-0")
# The smallest smoke run in which every phase (train, oracle, unlearn, evaluate) still runs.
SHRUNK = ["unlearning.methods=[ft]", "federation.rounds=2", "federation.eval_every=2", "unlearning.steps=1",
          "federation.timeout_s=120"]
# The insecure run unlearns in local rounds of 2 steps (4 steps: 2 rounds), checked against the Flower-free run.
LOCAL_ROUNDS = [o if o != "unlearning.steps=1" else "unlearning.steps=4" for o in SHRUNK] + ["unlearning.local_steps=2"]
# The TLS run also drills a real crash: knee-0's ClientApp process dies in round 1 and must rejoin in round 2.
CRASH = ["federation.fault.site=knee-0", "federation.fault.round=1", "federation.fault.mode=exit"]
POLL_SECONDS = 0.1
METRICS = {"psnr", "ssim", "nmse"}


# --- helpers ----------------------------------------------------------------------------------------------

def script(name: str, *args: str | Path, home: Path, timeout: float = 120,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a deploy/ script as a user would, with its own FLWR_HOME."""
    full_env = {**flower_env(home), **(env or {})}
    return subprocess.run(["bash", str(DEPLOY_DIR / name), *map(str, args)], env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"{done.args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


class Federation:
    """A SuperLink and SuperNodes started for one test; all stopped by PID at teardown."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.processes: list[Process] = []
        self.link: Process | None = None
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def home(self, role: str) -> Path:
        return self.root / "homes" / role

    def start_link(self, cert_dir: Path | None) -> Process:
        self.port = free_port()
        self.link = start_superlink(cert_dir, self.port, self.home("superlink"), self.root / "superlink.log")
        self.processes.append(self.link)
        return self.link

    def start_node(self, site: str, data_path: Path, ca_cert: Path | None = None, key: Path | None = None,
                   name: str | None = None, warm: bool = False) -> Process:
        role = name or site
        runtime_port = free_port()
        node = start_supernode(self.address, site, data_path, self.home(role), self.root / f"{role}.log",
                               runtime_port, ca_cert, key, poll_seconds=POLL_SECONDS, warm_clientapp=warm)
        self.processes.append(node)
        return node

    def stop_all(self) -> None:
        # Concurrently: each waits for Flower's graceful shutdown (about a second).
        with ThreadPoolExecutor(max_workers=max(1, len(self.processes))) as pool:
            list(pool.map(Process.stop, self.processes))


@pytest.fixture
def federation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Federation]:
    # One torch thread per process: SuperLink and two SuperNodes (and their ClientApps) share two cores.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", str(POLL_SECONDS))
    fed = Federation(tmp_path)
    try:
        yield fed
    finally:
        fed.stop_all()
        leftovers = [p.name for p in fed.processes if p.running()]
        orphans = _processes_of(fed.root)
        for pid in orphans:  # Flower children of ours: never leave them running
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert not leftovers, f"still running after stop: {leftovers}"
        assert not orphans, f"Flower children outlived their parents: {list(orphans.values())}"


def _processes_of(root: Path, grace: float = 10.0) -> dict[int, str]:
    """Live processes of this test: their environment holds one of its FLWR_HOMEs (Flower's children inherit it).

    Returns:
        PID -> command line of those still alive after ``grace`` seconds.
    """
    marker = f"FLWR_HOME={root / 'homes'}/".encode()
    deadline = time.monotonic() + grace
    while True:
        found = {}
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                if marker in (proc / "environ").read_bytes():
                    command = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
                    found[int(proc.name)] = command.decode(errors="replace")
            except OSError:
                continue
        found = {pid: cmd for pid, cmd in found.items() if cmd}  # zombies have no command line
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


@pytest.fixture(scope="module")
def site_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Synthetic smoke data: each site's folder (its node's data path) holds train/ and test/."""
    root = tmp_path_factory.mktemp("deploy-data")
    cfg = load_experiment("smoke", [f"data.root={root}"])
    prepare_synthetic_data(cfg)
    return {site: site_folders(cfg, site)["train"].parent for site in cfg.sites}


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server's cache of trained models, shared by this module's runs (same config, same models).

    The first deployed run trains the original and the oracle over the federation; a later
    one loads them and still runs site discovery, unlearning and every evaluation (model
    arrays both ways) over its own transport. This keeps the module within ~4 minutes.
    """
    return tmp_path_factory.mktemp("deploy-model-cache")


def submit(fed: Federation, connection: str, output: Path, cache: Path, *overrides: str,
           ) -> subprocess.CompletedProcess[str]:
    return script("submit.sh", connection, output, "experiment=smoke", *SHRUNK, f"cache_dir={cache}", *overrides,
                  home=fed.home("coordinator"), timeout=400)


def check_run_folder(output: Path) -> dict:
    """What a completed deployed run must leave on the SuperLink machine."""
    assert json.loads((output / "status.json").read_text())["status"] == "completed"
    results = json.loads((output / "results.json").read_text())
    assert set(results["sites"]) == set(SITES)
    assert set(results["models"]) == {"zero_filled", "original", "oracle", "ft"}
    for name, model in results["models"].items():
        assert set(model["sites"]) == set(SITES), name
        for site, scores in model["sites"].items():
            assert METRICS <= set(scores["test"]) and "gain_over_zero_filled" in scores["test"], (name, site)
            assert len(scores["test"]["psnr_volumes"]) == results["sites"][site]["test_volumes"], (name, site)
    assert results["models"]["original"]["trained_on"] == list(SITES)
    # The server reads no site's files: no reconstruction grids, and the data record comes from the sites.
    assert results["mode"] == "deployment" and not list((output / "figures").glob("recon_*.png"))
    assert "server_reads_site_data" in " ".join(results["figure_notes"])
    audit = json.loads((output / "audit.json").read_text())
    for site in SITES:
        files = audit["data"]["sites"][site]["train"]["files"]
        assert files and all(len(f["sha256"]) == 64 for f in files), site
    for site in SITES:
        board = output / "tensorboard" / site
        assert board.is_dir() and any(board.iterdir()), f"no TensorBoard events for {site}"
    return results


def exchange_seconds(output: Path, wall: float) -> str:
    """Wall seconds per exchange of the run (for the test log: ``pytest -s``)."""
    ledger = json.loads((output / "ledger.json").read_text())
    exchanges = len({(e["phase"], e["step"], e["message_type"]) for e in ledger})
    return f"{wall:.0f} s for {exchanges} exchanges ({wall / max(exchanges, 1):.1f} s each, fixed costs included)"


# --- the deployed runs ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_tls_and_node_authentication_refuse_an_unregistered_supernode(
        federation: Federation, site_data: dict[str, Path], model_cache: Path, tmp_path: Path) -> None:
    certs, keys = tmp_path / "certs", tmp_path / "keys"
    coordinator = federation.home("coordinator")
    ok(script("make-certs.sh", certs, "127.0.0.1", home=coordinator))
    for site in (*SITES, "rogue-0"):
        ok(script("make-site-key.sh", keys, site, home=coordinator))
    link = federation.start_link(certs)
    ok(script("connect.sh", "hospitals", federation.address, certs / "ca.crt", home=coordinator))
    for site in SITES:
        assert "registered as node" in ok(script("register-site.sh", "hospitals", site, keys, home=coordinator))
    # Registering a key twice (re-running the procedure) is not an error.
    assert "registered already" in ok(script("register-site.sh", "hospitals", SITES[0], keys, home=coordinator))

    # These SuperNodes fork each ClientApp process from a warm template (the insecure test runs them cold).
    nodes = [federation.start_node(site, site_data[site], certs / "ca.crt", keys / site, warm=True) for site in SITES]
    rogue = federation.start_node("rogue-0", site_data["knee-0"], certs / "ca.crt", keys / "rogue-0")
    for node in nodes:
        wait_for_node_id(node)
        wait_for_warm_template(node)

    # Flower 1.42: the SuperLink answers the unregistered key's activation with ApiError 2004
    # and the SuperNode exits (status 1, Flower exit code 305) instead of retrying.
    with pytest.raises(DeployError, match="exited with code 1"):
        wait_for_node_id(rogue, timeout=60)
    assert "Failed to activate SuperNode" in rogue.log() and "Exit Code: 305" in rogue.log()
    assert "No SuperNode found with the given public key" in link.log()

    started = time.monotonic()
    out = ok(submit(federation, "hospitals", tmp_path / "run", model_cache, *CRASH))
    print(exchange_seconds(tmp_path / "run", time.monotonic() - started))
    assert "completed" in out
    results = check_run_folder(tmp_path / "run")
    crashes = [e for e in results["events"] if e["kind"] == "site_failed"]
    assert [(e["site"], e["round"]) for e in crashes] == [("knee-0", 1)], results["events"]
    ledger = json.loads((tmp_path / "run" / "ledger.json").read_text())
    training = {(e["step"], e["site"]): e["status"] for e in ledger if e["phase"] == "federated"}
    assert training == {(1, "brain-0"): "ok", (1, "knee-0"): "failed", (2, "brain-0"): "ok", (2, "knee-0"): "ok"}
    nodes_seen = _node_list(coordinator)
    assert len(nodes_seen) == 2, "only the two registered keys are known to the SuperLink"
    # Every message of the run was served by a warm process, the crashed one included; the template survived it.
    messages = sum(e["site"] == "knee-0" for e in ledger)
    knee_log = nodes[1].log()
    assert knee_log.count("forked ClientApp process") >= messages, knee_log[-3000:]
    assert knee_log.count(" ready (") == 1 and "restarting it" not in knee_log, knee_log[-3000:]


def _node_list(home: Path) -> list[dict]:
    command = [flower_bin("flwr"), "supernode", "list", "hospitals", "--format", "json"]
    done = subprocess.run(command, env=flower_env(home), capture_output=True, text=True, timeout=60)
    return json.loads(done.stdout[done.stdout.index("{"):])["nodes"]


@pytest.mark.slow
def test_insecure_superlink_and_two_supernodes_run_the_smoke_experiment(
        federation: Federation, site_data: dict[str, Path], model_cache: Path, tmp_path: Path) -> None:
    federation.start_link(None)
    nodes = [federation.start_node(site, site_data[site]) for site in SITES]
    node_ids = {wait_for_node_id(node) for node in nodes}
    assert len(node_ids) == 2
    ok(script("connect.sh", "lab", federation.address, home=federation.home("coordinator")))

    started = time.monotonic()
    done = script("submit.sh", "lab", tmp_path / "run", "experiment=smoke", *LOCAL_ROUNDS, f"cache_dir={model_cache}",
                  home=federation.home("coordinator"), timeout=400)
    out = ok(done)
    print(exchange_seconds(tmp_path / "run", time.monotonic() - started))
    assert "completed" in out
    results = check_run_folder(tmp_path / "run")
    assert results["models"]["ft"]["local_steps"] == 2 and results["models"]["ft"]["rounds"] == 2
    root = site_data["brain-0"].parent
    assert_deployed_equals_flower_free(tmp_path / "run", load_experiment("smoke", [f"data.root={root}", *LOCAL_ROUNDS]))


def assert_deployed_equals_flower_free(run: Path, cfg: ExperimentConfig) -> None:
    """The deployed ft (local rounds) gives the weights of the Flower-free run from the same original."""
    torch.set_num_threads(1)  # as each deployed ClientApp process computes
    original, _ = load_checkpoint(run / "checkpoints" / "original.pt")
    deployed, _ = load_checkpoint(run / "checkpoints" / "ft.pt")
    forget = unlearning_source(cfg, "knee-0", open_site_split(cfg, "knee-0", "train"), "forget")
    retain = unlearning_source(cfg, "brain-0", open_site_split(cfg, "brain-0", "train"), "retain")
    model = build_varnet(PRESETS["tiny"])
    model.load_state_dict(original)
    unlearn("ft", model, forget, retain, cfg.unlearning, cfg.unlearning.budget_steps(cfg.federation.training_steps),
            cfg.seed, ReconLoss(cfg.federation.l1_weight))
    assert max(float((deployed[k] - original[k]).abs().max()) for k in original) > 1e-6, "ft did not move"
    for key, value in model.state_dict().items():
        assert torch.allclose(value, deployed[key], rtol=1e-4, atol=1e-6), key


@pytest.mark.slow
def test_a_supernode_with_an_unknown_site_fails_the_run_naming_it(
        federation: Federation, site_data: dict[str, Path], model_cache: Path, tmp_path: Path) -> None:
    federation.start_link(None)
    nodes = [federation.start_node("brain-0", site_data["brain-0"]),
             federation.start_node("liver-0", site_data["knee-0"])]
    for node in nodes:
        wait_for_node_id(node)
    ok(script("connect.sh", "lab", federation.address, home=federation.home("coordinator")))

    done = submit(federation, "lab", tmp_path / "run", model_cache)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAILED" in done.stderr and "finished:failed" in done.stderr
    reason = done.stderr[done.stderr.index("FAILED"):]  # "FAILED (Flower: ..., run folder: ...): <reason>"
    assert "liver-0" in reason and "not a site" in reason, reason
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["status"] == "failed" and "liver-0" in status["reason"]
    assert not (tmp_path / "run" / "results.json").exists()


@pytest.mark.slow
def test_a_signal_to_a_scripts_pid_stops_everything_it_started(
        federation: Federation, site_data: dict[str, Path]) -> None:
    """systemd, Slurm or kill signal the script's PID alone: Flower's children must go with it."""
    link = federation.start_link(None)
    node = federation.start_node("knee-0", site_data["knee-0"])
    wait_for_node_id(node)
    for process in (node, link):
        tree = descendants(process.pid)
        commands = {pid: _command(pid) for pid in tree}
        assert any("flower-superexec" in c for c in commands.values()), (process.name, commands)
        os.kill(process.pid, signal.SIGTERM)
        assert process.process.wait(timeout=60) == 128 + signal.SIGTERM, process.log()[-2000:]
        deadline = time.monotonic() + 10
        while (alive := [commands[pid] for pid in tree if _command(pid)]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not alive, f"{process.name} left {alive} running"


def _command(pid: int) -> str:
    """A live process's command line ("" once it is gone or a zombie)."""
    try:
        return (Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")).decode(errors="replace").strip()
    except OSError:
        return ""


# --- the scripts' own checks (fast) -----------------------------------------------------------------------

def test_certificates_name_every_host_and_verify(tmp_path: Path) -> None:
    ok(script("make-certs.sh", tmp_path, "superlink.example.org, 10.0.0.5", home=tmp_path / "home"))
    text = subprocess.run(["openssl", "x509", "-in", tmp_path / "server.pem", "-noout", "-text"],
                          capture_output=True, text=True, check=True).stdout
    for san in ("DNS:superlink.example.org", "IP Address:10.0.0.5", "DNS:localhost", "IP Address:127.0.0.1"):
        assert san in text
    subprocess.run(["openssl", "verify", "-CAfile", tmp_path / "ca.crt", tmp_path / "server.pem"], check=True,
                   capture_output=True)
    ca = (tmp_path / "ca.crt").read_bytes()
    ok(script("make-certs.sh", tmp_path, "other.example.org", home=tmp_path / "home"))
    assert (tmp_path / "ca.crt").read_bytes() == ca, "re-issuing the server certificate keeps the CA"
    assert oct((tmp_path / "ca.key").stat().st_mode)[-3:] == "600"


def test_site_keys_are_p384_openssh_keys_flower_accepts(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key
    from flwr.cli.supernode.register import try_load_public_key

    ok(script("make-site-key.sh", tmp_path, "knee-0", home=tmp_path / "home"))
    key = load_ssh_private_key((tmp_path / "knee-0").read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"
    assert try_load_public_key(tmp_path / "knee-0.pub")
    again = script("make-site-key.sh", tmp_path, "knee-0", home=tmp_path / "home")
    assert again.returncode == 1 and "already exists" in again.stderr


def test_scripts_reject_bad_arguments_with_the_expected_form(tmp_path: Path) -> None:
    home = tmp_path / "home"
    usage = script("start-supernode.sh", home=home)
    assert usage.returncode == 2 and "usage: deploy/start-supernode.sh" in usage.stderr
    relative = script("start-supernode.sh", "127.0.0.1:9092", "knee-0", "data/knee-0", home=home)
    assert relative.returncode == 1 and "must be absolute" in relative.stderr
    (tmp_path / "site" / "train").mkdir(parents=True)
    no_test = script("start-supernode.sh", "127.0.0.1:9092", "knee-0", tmp_path / "site", home=home)
    assert no_test.returncode == 1 and f"{tmp_path / 'site' / 'train'} holds no .h5" in no_test.stderr
    no_certs = script("start-superlink.sh", tmp_path / "nowhere", home=home)
    assert no_certs.returncode == 1 and "make-certs.sh" in no_certs.stderr
    address = script("connect.sh", "lab", "superlink.example.org", home=home)
    assert address.returncode == 1 and "host:port" in address.stderr


def test_connect_writes_flwr_home_config_never_pyproject(tmp_path: Path) -> None:
    import tomllib

    from fedforget.launch.deploy import PROJECT_DIR

    pyproject = (PROJECT_DIR / "pyproject.toml").read_text()
    ok(script("connect.sh", "lab", "superlink.example.org:9092", home=tmp_path / "home"))
    config = tomllib.loads((tmp_path / "home" / "config.toml").read_text())
    assert config["superlink"]["default"] == "lab"
    assert config["superlink"]["lab"] == {"address": "superlink.example.org:9092", "insecure": True}
    assert (PROJECT_DIR / "pyproject.toml").read_text() == pyproject


def test_send_and_receive_polls_quickly_and_keeps_late_replies_out() -> None:
    class Grid:
        def __init__(self) -> None:
            self.pulls = 0

        def push_messages(self, messages: list) -> list[str | None]:
            return ["a", "b", None]  # Flower returns None for a message it could not push

        def pull_messages(self, ids: set[str]) -> list:
            self.pulls += 1
            ready = {"a"} if self.pulls == 1 else ({"b"} if self.pulls == 3 else set())
            return [SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=i)) for i in ready & set(ids)]

    grid = Grid()
    started = time.monotonic()
    replies = send_and_receive(grid, [1, 2, 3], timeout=5)  # type: ignore[arg-type]
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["a", "b"]
    assert time.monotonic() - started < 1.0, "Flower's HttpGrid would have slept 3 s between pulls"

    class Silent(Grid):
        def pull_messages(self, ids: set[str]) -> list:
            return []

    started = time.monotonic()
    assert send_and_receive(Silent(), [1], timeout=0.5) == []  # type: ignore[arg-type]
    assert 0.4 < time.monotonic() - started < 1.5


def test_a_clientapp_process_imports_no_hydra_plotting_or_scipy() -> None:
    # Every deployed message starts a fresh process; each of these costs 0.2-1 s of imports there.
    import sys

    code = ("import json, sys; import fedforget.clients.client_app; "
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(DEPLOY_DIR.parent)}, check=True)
    loaded = set(json.loads(done.stdout))
    assert {"torch", "flwr", "fastmri"} <= loaded
    assert not loaded & {"hydra", "omegaconf", "matplotlib", "scipy", "skimage", "tensorboard"}, loaded


def test_the_warm_template_is_restarted_after_a_crash_and_never_forks_before_it_is_ready() -> None:
    import sys

    from fedforget.launch.warm_clientapp import Template

    template = Template([sys.executable, "-m", "fedforget.launch.warm_clientapp", "template", "--preload", "json"])
    try:
        assert template.fork(["flwr-clientapp", "--help"], True) is None, "not started: the task must start cold"
        first = _until_ready(template)
        child = template.fork(["flwr-clientapp", "--no-such-flag"], True)  # the child fails (argparse exits 2)
        assert child is not None and child != first
        time.sleep(1.0)
        template.check()
        assert template.ready and template.pid == first, "a failing ClientApp process must not take the template"
        os.kill(first, signal.SIGKILL)
        time.sleep(0.5)
        template.check()
        assert template.pid not in (None, first), "a dead template is restarted"
        assert template.fork(["flwr-clientapp", "--help"], True) is None, "restarting: the task must start cold"
        assert _until_ready(template) != first
    finally:
        template.stop()
    assert not Path(f"/proc/{template.pid}").exists()


def _until_ready(template, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while not template.ready:
        assert time.monotonic() < deadline, "the template did not become ready"
        template.check()
        time.sleep(0.05)
    return template.pid
