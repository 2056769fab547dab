"""A run you can watch: progress events, their console views, Flower's log filtered, TensorBoard HParams."""

from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path

import pytest
from rich.console import Console
from run_helpers import CompletedRun
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from fedforget.configs.compose import load_experiment
from fedforget.launch.watch import FlowerConsole, ProgressFollower
from fedforget.reporting.progress import ProgressLog, read_events
from fedforget.reporting.progress_view import PlainView, RichView, make_view
from fedforget.reporting.tensorboard import hparam_entries, write_hparams

# What `flwr run --stream` relays, as captured in a failed run's flwr.log (colour codes included).
FLOWER_LINES = [
    "Successfully started run 5138397433284250450\n",
    "\x1b[92mINFO \x1b[0m:      Starting logstream for run_id `5138397433284250450`\n",
    "\x1b[93mWARNING \x1b[0m:   fraction_evaluate is set to 0.0. Federated evaluation will be skipped.\n",
    "\x1b[92mINFO \x1b[0m:      aggregate_train: Received 2 results and 0 failures\n",
    "\x1b[91mERROR \x1b[0m:     ServerApp raised an exception\n",
    "Traceback (most recent call last):\n",
    "  File \"server_app.py\", line 70, in execute\n",
    "fedforget.strategies.protocol.SiteError: site liver-0: not a site of experiment 'smoke'\n",
    "\x1b[91mERROR \x1b[0m:     Exit Code: 201\n",
    "\x1b[92mINFO \x1b[0m:      \n",
]
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
SCORES = {"brain-0": {"test": {"psnr": 21.234}}, "knee-0": {"test": {"psnr": 15.5}, "train": {"psnr": 16.0}}}


def _write_events(log: ProgressLog) -> None:
    cfg = load_experiment("smoke", [])
    log.run_started(cfg)
    log.phase_started("federated", 2, "round")
    log.evaluation("federated", 0, SCORES)
    log.step("federated", 1, None, seconds=1.5)
    log.step("federated", 2, SCORES, seconds=1.5)
    log.phase_finished("federated", seconds=3.0)
    log.phase_loaded("oracle", 2, "round", "/cache/oracle.pt")
    log.phase_started("unlearn/ft", 2, "step")
    log.step("unlearn/ft")
    log.step("unlearn/ft", scores=SCORES)
    log.phase_finished("unlearn/ft", seconds=0.4)
    log.phase_started("unlearn/nl_ft", 2, "step")
    log.stop_phase("site knee-0: unavailable")
    log.phase_started("evaluation", 2, "model")
    log.step("evaluation", scores=SCORES, model="original")
    log.step("evaluation", scores=SCORES, model="ft")
    log.phase_finished("evaluation")
    log.run_finished()


def test_plain_view_names_every_phase_and_each_sites_psnr(tmp_path: Path) -> None:
    log = ProgressLog(tmp_path / "progress.jsonl")
    _write_events(log)
    events, _ = read_events(log.path)
    out = io.StringIO()
    view = PlainView(out, out)
    for event in events:
        view.handle(event)
    text = out.getvalue()
    assert not CONTROL.search(text.replace("\n", ""))
    lines = text.splitlines()
    assert "fedforget: federated training: 2 rounds" in lines
    assert "fedforget: federated training round 0: PSNR brain-0 21.23 dB, knee-0 15.50 dB" in lines
    assert any(line.startswith("fedforget: federated training round 1/2 (1.5 s, ETA ") for line in lines)
    assert "fedforget: oracle: loaded from /cache/oracle.pt" in lines
    assert "fedforget: unlearning ft step 2/2: PSNR brain-0 21.23 dB, knee-0 15.50 dB" in lines
    assert not any("unlearning ft step 1/2" in line for line in lines), "a method's unevaluated steps stay quiet"
    assert "fedforget: unlearning nl_ft: STOPPED: site knee-0: unavailable" in lines
    assert "fedforget: final evaluation ft (2/2): PSNR brain-0 21.23 dB, knee-0 15.50 dB" in lines
    assert lines[-1] == "fedforget: run finished: completed"


def test_rich_view_draws_a_bar_per_phase(tmp_path: Path) -> None:
    log = ProgressLog(tmp_path / "progress.jsonl")
    _write_events(log)
    screen = io.StringIO()
    view = RichView(Console(file=screen, force_terminal=True, width=140))
    for event in read_events(log.path)[0]:
        view.handle(event)
    view.close()
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue())
    for label, count in (("federated training", "2/2 rounds"), ("oracle", "2/2 rounds"),
                         ("unlearning ft", "2/2 steps"), ("unlearning nl_ft", "0/2 steps"),
                         ("final evaluation", "2/2 models")):
        assert re.search(re.escape(label) + r"\s.*" + re.escape(count), text), label
    assert "unlearning ft step 2/2: PSNR brain-0 21.23 dB" in text


def test_the_view_follows_whether_the_output_is_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert isinstance(make_view(io.StringIO()), PlainView)
    assert isinstance(make_view(Terminal()), RichView)


def test_flower_lines_show_only_errors_unless_verbose() -> None:
    out, err = io.StringIO(), io.StringIO()
    sink = FlowerConsole(PlainView(out, err), verbose=False)
    for line in FLOWER_LINES:
        sink.write(line)
    assert out.getvalue() == ""
    shown = err.getvalue().splitlines()
    assert shown[0].startswith("ERROR") and "ServerApp raised an exception" in shown[0]
    assert "SiteError: site liver-0" in err.getvalue() and "Exit Code: 201" in err.getvalue()
    assert "aggregate_train" not in err.getvalue() and "fraction_evaluate" not in err.getvalue()
    assert "\x1b" not in err.getvalue()

    out, err = io.StringIO(), io.StringIO()
    sink = FlowerConsole(PlainView(out, err), verbose=True)
    for line in FLOWER_LINES:
        sink.write(line)
    assert "aggregate_train: Received 2 results" in out.getvalue() and "\x1b" not in out.getvalue()


def test_an_early_flwr_failure_still_says_why() -> None:
    err = io.StringIO()
    sink = FlowerConsole(PlainView(io.StringIO(), err), verbose=False)
    for line in ("\u256d\u2500 Error \u2500\u256e\n", "\u2502 No SuperLink connection 'lab' \u2502\n"):
        sink.write(line)
    sink.explain_early_exit(1, None)
    assert "No SuperLink connection 'lab'" in err.getvalue()


def test_the_follower_shows_only_this_attempts_events(tmp_path: Path) -> None:
    path = tmp_path / "progress.jsonl"
    earlier = ProgressLog(path)
    earlier.phase_started("federated", 3, "round")
    earlier.step("federated", 1, None, seconds=1.0)
    seen: list[dict] = []

    class Recorder:
        def handle(self, event: dict) -> None:
            seen.append(event)

    follower = ProgressFollower(path, Recorder(), interval=0.01).start()
    resumed = ProgressLog(path)
    resumed.phase_started("federated", 3, "round", done=1)
    with open(path, "a") as handle:
        handle.write('{"event": "step", "phase": "federated", "do')  # a line still being written
    follower.finish()
    assert [(e["event"], e.get("done")) for e in seen] == [("phase_started", 1)]


# --- the smoke run (a real Flower simulation, captured through a pipe: the no-TTY case) ---------------------

@pytest.mark.slow
def test_the_runs_console_output_is_plain_and_names_every_phase(smoke_run: CompletedRun) -> None:
    output = smoke_run.output
    assert not CONTROL.search(output.replace("\n", "")), "no escape or control characters without a terminal"
    for phase in ("federated training", "oracle", "unlearning ft", "unlearning nl_ft", "final evaluation"):
        assert f"fedforget: {phase}: done" in output, phase
    results = smoke_run.results
    for model, record in results["models"].items():
        psnr = ", ".join(f"{site} {record['sites'][site]['test']['psnr']:.2f} dB" for site in sorted(results["sites"]))
        assert re.search(rf"final evaluation {model} \(\d/5\): PSNR {re.escape(psnr)}\n", output), model
    rounds = [line for line in output.splitlines() if line.startswith("fedforget: federated training round")]
    assert [line.split()[4] for line in rounds] == ["0:", "1/2", "2/2"]
    assert "aggregate_train" not in output, "Flower's per-round INFO lines stay in flwr.log"
    assert "aggregate_train" in (smoke_run.folder / "flwr.log").read_text()


@pytest.mark.slow
def test_progress_file_records_the_whole_run(smoke_run: CompletedRun) -> None:
    events = [json.loads(line) for line in (smoke_run.folder / "progress.jsonl").read_text().splitlines()]
    assert events[0]["event"] == "run_started" and events[-1] == {**events[-1], "event": "run_finished"}
    started = [e["phase"] for e in events if e["event"] == "phase_started"]
    # The references are scored before the methods run (their curves start from the original's scores).
    assert started == ["federated", "oracle", "evaluation", "unlearn/ft", "unlearn/nl_ft"]
    finals = [e["model"] for e in events if e["event"] == "step" and e["phase"] == "evaluation"]
    assert finals == ["zero_filled", "original", "oracle", "ft", "nl_ft"]
    steps = [e["done"] for e in events if e["event"] == "step" and e["phase"] == "unlearn/ft"]
    assert steps == [1, 2]


def _hparams(folder: Path) -> tuple[dict, dict[str, float]]:
    events = EventAccumulator(str(folder))
    events.Reload()
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    values = {k: v.string_value or v.number_value for k, v in start.hparams.items()}
    metrics = {tag: events.Scalars(tag)[0].value for tag in events.Tags()["scalars"]}
    return values, metrics


@pytest.mark.slow
def test_tensorboard_hparams_hold_one_entry_per_model(smoke_run: CompletedRun) -> None:
    root = smoke_run.folder / "tensorboard" / "hparams"
    results = smoke_run.results
    assert sorted(p.name for p in root.iterdir()) == sorted(results["models"])
    for model in results["models"]:
        values, metrics = _hparams(root / model)
        assert values["model"] == model and values["seed"] == 0 and values["experiment"] == "smoke"
        expected = {"ft": (0.5, 1), "nl_ft": (0.5, 1), "zero_filled": (0.0, 0)}.get(model, (1.0, 2))
        assert (values["retain_fraction"], values["local_steps"]) == expected, model
        summary = results["summary"][model]
        for split in ("BTA", "KTA", "UA"):
            assert metrics[f"{split}/psnr"] == pytest.approx(summary[split]["psnr"], rel=1e-6)
        auc = results["models"][model]["audit"]["mia_auc"]
        assert metrics["membership/auc"] == pytest.approx(auc) if math.isfinite(auc) else "membership/auc" not in metrics
        assert metrics["membership/auc_vs_oracle"] == pytest.approx(results["models"][model]["audit"]["mia_auc_calibrated"])


def test_hparams_are_rewritten_not_duplicated(tmp_path: Path) -> None:
    cfg = load_experiment("smoke", [])
    summary = {"BTA": {"psnr": 20.0, "ssim": 0.8}, "KTA": {"psnr": 15.0, "ssim": 0.5}, "UA": {"psnr": 16.0, "ssim": 0.6}}
    results = {"models": {name: {"retain_fraction": None if name in ("original", "oracle") else 0.5,
                                 "audit": {"mia_auc": 0.75}} for name in ("original", "oracle", "ft")},
               "summary": {name: summary for name in ("original", "oracle", "ft")}}
    entries = hparam_entries(cfg, results)
    assert set(entries) == {"original", "oracle", "ft"}, "nl_ft never finished, so it has no entry"
    write_hparams(tmp_path, entries)
    write_hparams(tmp_path, entries)  # a resumed run writing its outputs again
    for model in entries:
        assert len(list((tmp_path / "hparams" / model).iterdir())) == 1
        values, metrics = _hparams(tmp_path / "hparams" / model)
        assert values["model"] == model and metrics["membership/auc"] == pytest.approx(0.75)
