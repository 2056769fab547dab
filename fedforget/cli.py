"""Command line: ``fedforget run``, ``fedforget synth``, ``fedforget report``.

``fedforget run [experiment=NAME] [HYDRA OVERRIDES...] [--output-dir DIR] [-m]`` exits
non-zero when the run failed (Flower's own ``flwr run`` exits 0 either way): 1 failed, 2 invalid
configuration, 3 unusable data, 4 finished without some requested methods, 130 / 143 stopped by
SIGINT / SIGTERM (rerun to resume).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedforget.configs.compose import ConfigError

# 0: completed with every requested method. 130 / 143: stopped by SIGINT / SIGTERM (resumable).
EXIT_FAILED, EXIT_CONFIG, EXIT_DATA, EXIT_METHODS_MISSING = 1, 2, 3, 4


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedforget", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run an experiment as a Flower simulation")
    run.add_argument("overrides", nargs="*", help="experiment=NAME and Hydra overrides, e.g. unlearning.methods=[ft]")
    run.add_argument("--output-dir", type=Path, help="run folder (default outputs/<experiment>-<timestamp>)")
    run.add_argument("-m", "--multirun", action="store_true", help="sweep comma-separated override values")
    run.add_argument("--federation-config", help="Flower simulation config, e.g. 'num-supernodes=4 "
                                                 "client-resources-num-gpus=0.25'")
    run.add_argument("--fresh", action="store_true", help="never resume an unfinished run of the same config")

    synth = commands.add_parser("synth", help="write an experiment's synthetic fastMRI-format site data")
    synth.add_argument("overrides", nargs="*", help="experiment=NAME and Hydra overrides (data.root=...)")

    report = commands.add_parser("report", help="re-render report.md (and figures) of a finished run")
    report.add_argument("run_dir", type=Path)
    return parser


def _cmd_run(args: argparse.Namespace) -> int:
    from fedforget.launch.runner import DataFailed, MethodsMissing, RunFailed, RunRequest, run_all, split_experiment
    from fedforget.launch.signals import Interrupted, stop_on_signals
    from fedforget.reporting.console import print_summary

    experiment, overrides = split_experiment(args.overrides)
    request = RunRequest(experiment, overrides, args.output_dir, args.federation_config, args.fresh)
    try:
        with stop_on_signals():
            folders = run_all(request, args.multirun)
    except Interrupted as stop:
        return stop.exit_code
    except ConfigError as err:
        print(f"fedforget: invalid configuration: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except MethodsMissing as err:
        for folder in err.folders:
            print_summary(folder)
        print(f"fedforget: run INCOMPLETE: {err}", file=sys.stderr)
        return EXIT_METHODS_MISSING
    except RunFailed as err:
        print(f"fedforget: run FAILED: {err}", file=sys.stderr)
        return EXIT_DATA if isinstance(err, DataFailed) else EXIT_FAILED
    for folder in folders:
        print_summary(folder)
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from fedforget.configs.compose import load_experiment
    from fedforget.data.synthetic import prepare_synthetic_data
    from fedforget.launch.runner import absolute_overrides, split_experiment

    experiment, overrides = split_experiment(args.overrides)
    try:
        cfg = load_experiment(experiment, absolute_overrides(overrides, {}))
    except ConfigError as err:
        print(f"fedforget: invalid configuration: {err}", file=sys.stderr)
        return EXIT_CONFIG
    for folder in prepare_synthetic_data(cfg, log=print):
        print(folder)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from fedforget.reporting.multirun import MULTIRUN_FILE, aggregate_multirun
    from fedforget.reporting.rerender import rerender

    if (args.run_dir / MULTIRUN_FILE).is_file():
        print(aggregate_multirun(args.run_dir))
        return 0
    if not (args.run_dir / "results.json").is_file():
        print(f"fedforget: {args.run_dir / 'results.json'} does not exist: expected a completed run folder "
              f"(or a multirun folder with {MULTIRUN_FILE})", file=sys.stderr)
        return EXIT_FAILED
    print(rerender(args.run_dir))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handlers = {"run": _cmd_run, "synth": _cmd_synth, "report": _cmd_report}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
