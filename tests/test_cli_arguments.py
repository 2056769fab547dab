"""The command line: flags and Hydra overrides mix in any order."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedforget.cli import main, parse_arguments


def test_flags_between_overrides_are_read() -> None:
    args = parse_arguments(["run", "experiment=smoke", "--fresh", "seed=1", "-m", "unlearning.methods=[ft]",
                            "--output-dir", "/tmp/x", "federation.rounds=3"])
    assert args.command == "run"
    assert args.overrides == ["experiment=smoke", "seed=1", "unlearning.methods=[ft]", "federation.rounds=3"]
    assert args.fresh and args.multirun and args.output_dir == Path("/tmp/x") and not args.verbose


def test_evaluate_takes_its_options_anywhere() -> None:
    args = parse_arguments(["evaluate", "--model", "tiny", "run/checkpoints/ft.pt", "--json", "out.json", "data"])
    assert (args.checkpoint, args.folder, args.model, args.json) == (Path("run/checkpoints/ft.pt"), Path("data"),
                                                                    "tiny", Path("out.json"))
    assert (args.acceleration, args.center_fraction, args.mask_type) == (8, 0.04, "equispaced_fraction")


def test_an_override_after_a_flag_reaches_the_config(capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's example: `run experiment=smoke --fresh seed=1` used to stop at `unrecognized arguments`."""
    code = main(["run", "experiment=smoke", "--fresh", "unlearning.forget_site=liver-0"])
    err = capsys.readouterr().err
    assert code == 2 and "liver-0" in err and "unrecognized arguments" not in err


def test_an_unknown_command_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_arguments(["train"])
    assert exit_info.value.code == 2 and "invalid choice: 'train'" in capsys.readouterr().err
