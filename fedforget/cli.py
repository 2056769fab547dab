"""Command line: ``fedforget run``, ``synth``, ``report``, ``check``, ``evaluate``, ``compose``.

``fedforget run [experiment=NAME] [HYDRA OVERRIDES...] [--output-dir DIR] [-m]`` exits
non-zero when the run failed (Flower's own ``flwr run`` exits 0 either way): 1 failed, 2 invalid
configuration, 3 unusable data, 4 finished without some requested methods, 130 / 143 stopped by
SIGINT / SIGTERM (rerun to resume). Flags and overrides mix in any order. ``fedforget check DIR...``
and ``fedforget evaluate CHECKPOINT DIR`` work on a user's own fastMRI folders. ``fedforget compose RUN
--models A,B --weights 0.5,0.5`` adds ``original + sum_i w_i (model_i - original)`` to a finished run, scored at
every site (exit 2 for a request that names something the run does not hold; nothing is written then).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from fedforget.configs.compose import ConfigError
from fedforget.configs.schema import DEVICES, EQUISPACED_FRACTION, MASK_TYPES, MODEL_PRESETS

# 0: completed with every requested method. 130 / 143: stopped by SIGINT / SIGTERM (resumable).
EXIT_FAILED, EXIT_CONFIG, EXIT_DATA, EXIT_METHODS_MISSING = 1, 2, 3, 4
# The choices are the config's (model.preset, data.mask_type, federation.device).
MODEL_CHOICES = tuple(MODEL_PRESETS)
CONFIG_DIR_HELP = ("your own config folder (experiment/*.yaml, sites/*.yaml, ...), searched beside the package's "
                   "groups: experiment=NAME finds DIR/experiment/NAME.yaml")


def _parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(prog="fedforget", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run an experiment as a Flower simulation")
    run.add_argument("overrides", nargs="*", help="experiment=NAME and Hydra overrides, e.g. unlearning.methods=[ft]")
    run.add_argument("--output-dir", type=Path, help="run folder (default outputs/<experiment>-<timestamp>)")
    run.add_argument("--config-dir", type=Path, help=CONFIG_DIR_HELP)
    run.add_argument("-m", "--multirun", action="store_true", help="sweep comma-separated override values")
    run.add_argument("--federation-config", help="Flower simulation config, e.g. 'num-supernodes=4 "
                                                 "client-resources-num-gpus=0.25'")
    run.add_argument("--ray-address", help="run the simulation's ClientApps on an existing Ray cluster "
                                           "(`ray start --head` prints it, e.g. 10.0.0.1:6379); sets RAY_ADDRESS")
    run.add_argument("--fresh", action="store_true", help="never resume an unfinished run of the same config")
    run.add_argument("--verbose", action="store_true", help="also print Flower's own log (always in <run>/flwr.log)")

    synth = commands.add_parser("synth", help="write an experiment's synthetic fastMRI-format site data (or, with "
                                              "data=images, the sites simulated from its images)")
    synth.add_argument("overrides", nargs="*", help="experiment=NAME and Hydra overrides (data.root=...)")
    synth.add_argument("--config-dir", type=Path, help=CONFIG_DIR_HELP)

    report = commands.add_parser("report", help="re-render report.md (and figures) of a finished run")
    report.add_argument("run_dir", type=Path)

    check = commands.add_parser("check", help="validate fastMRI multicoil folders, every k-space value scanned")
    check.add_argument("folders", nargs="+", type=Path, metavar="DIR")

    evaluate = commands.add_parser("evaluate", help="score a fedforget checkpoint on a fastMRI folder, "
                                                    "next to zero-filled")
    evaluate.add_argument("checkpoint", type=Path, help="a .pt file written by fedforget, e.g. "
                                                        "<run>/checkpoints/original.pt")
    evaluate.add_argument("folder", type=Path, metavar="DIR", help="a folder of fastMRI multicoil .h5 files")
    evaluate.add_argument("--acceleration", type=int, default=8, help="undersampling factor (default 8)")
    evaluate.add_argument("--center-fraction", type=float, default=0.04,
                          help="fully sampled centre fraction (default 0.04)")
    evaluate.add_argument("--mask-type", choices=MASK_TYPES, default=EQUISPACED_FRACTION)
    evaluate.add_argument("--model", choices=MODEL_CHOICES,
                          help="the VarNet preset the checkpoint must have (default: read from the weights)")
    evaluate.add_argument("--json", type=Path, metavar="OUT", help="write the scores as JSON")
    evaluate.add_argument("--figure", type=Path, metavar="OUT.png", help="save a reconstruction grid of one slice")
    evaluate.add_argument("--device", choices=DEVICES, default="auto")
    evaluate.add_argument("--batch-size", type=int, default=4)

    compose = commands.add_parser("compose", help="merge a finished run's unlearned models as a weighted sum of "
                                                  "their changes from the original, and score it at every site")
    compose.add_argument("run_dir", type=Path, metavar="RUN", help="a finished run folder")
    compose.add_argument("--models", required=True, metavar="A,B[,...]",
                         help="models of RUN/results.json to merge (not original, oracle or zero_filled)")
    compose.add_argument("--weights", required=True, metavar="W1,W2[,...]",
                         help="one weight per model: original + sum_i w_i (model_i - original); write a leading "
                              "negative weight as --weights=-1,2")
    return parser, dict(commands.choices)


def _cmd_run(args: argparse.Namespace) -> int:
    from fedforget.launch.runner import DataFailed, MethodsMissing, RunFailed, RunRequest, run_all, split_experiment
    from fedforget.launch.signals import Interrupted, stop_on_signals
    from fedforget.reporting.console import print_summary

    try:
        experiment, overrides = split_experiment(_with_config_dir(args))
    except ConfigError as err:
        print(f"fedforget: invalid configuration: {err}", file=sys.stderr)
        return EXIT_CONFIG
    if args.ray_address:
        # Flower 1.42's federation config has no address; Ray's ray.init() reads RAY_ADDRESS, and the SuperLink
        # that runs the simulation inherits this environment.
        os.environ["RAY_ADDRESS"] = args.ray_address
    request = RunRequest(experiment, overrides, args.output_dir, args.federation_config, args.fresh,
                         verbose=args.verbose)
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


def _with_config_dir(args: argparse.Namespace) -> list[str]:
    """The overrides, with ``--config-dir`` as Hydra's search path (it travels to every site in the run config)."""
    from fedforget.configs.compose import config_dir_override

    return [config_dir_override(args.config_dir), *args.overrides] if args.config_dir else list(args.overrides)


def _cmd_synth(args: argparse.Namespace) -> int:
    from fedforget.configs.schema import FASTMRI
    from fedforget.data.preparation import DataError, prepare_written_sites
    from fedforget.launch.runner import load_for_launch, split_experiment

    try:
        experiment, overrides = split_experiment(_with_config_dir(args))
        cfg, _ = load_for_launch(experiment, overrides)
        if cfg.data.kind == FASTMRI:
            raise ConfigError("data.kind=fastmri: fedforget writes no data for real fastMRI folders (synth writes "
                              "synthetic sites and sites simulated from images, data=images)")
        folders = prepare_written_sites(cfg, log=print)
    except ConfigError as err:
        print(f"fedforget: invalid configuration: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except DataError as err:
        print(f"fedforget: data not usable: {err}", file=sys.stderr)
        return EXIT_DATA
    for folder in folders:
        print(folder)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from fedforget.recon.hdf5io import DataFileError
    from fedforget.reporting.multirun import MULTIRUN_FILE, aggregate_multirun
    from fedforget.reporting.rerender import rerender

    if (args.run_dir / MULTIRUN_FILE).is_file():
        print(aggregate_multirun(args.run_dir))
        return 0
    if not (args.run_dir / "results.json").is_file():
        print(f"fedforget: {args.run_dir / 'results.json'} does not exist: expected a completed run folder "
              f"(or a multirun folder with {MULTIRUN_FILE})", file=sys.stderr)
        return EXIT_FAILED
    try:
        print(rerender(args.run_dir))
    except DataFileError as err:
        print(f"fedforget: cannot re-render {args.run_dir}: {err}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from fedforget.data.inspection import check_folders
    from fedforget.reporting.data_check import check_report

    checks = check_folders(args.folders)
    print(check_report(checks))
    return 0 if all(check.ok for check in checks) else EXIT_FAILED


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from fedforget.learning.checkpoints import CheckpointError
    from fedforget.learning.scoring import MaskSetting, example_slice, load_varnet, open_folder, score_checkpoint
    from fedforget.learning.training import pick_device
    from fedforget.recon.hdf5io import DataFileError
    from fedforget.reporting.checkpoint_scores import score_figure, score_lines, write_score_json

    mask = MaskSetting(args.mask_type, args.acceleration, args.center_fraction)
    try:
        mask.mask_func()
        device = pick_device(args.device)
        loaded = load_varnet(args.checkpoint, args.model)
        dataset = open_folder(args.folder, mask)
    except (FileNotFoundError, CheckpointError, DataFileError, ValueError, RuntimeError) as err:
        print(f"fedforget evaluate: {err}", file=sys.stderr)
        return EXIT_FAILED
    score = score_checkpoint(loaded, dataset, args.folder, mask, device, args.batch_size)
    print("\n".join(score_lines(score)))
    if args.json:
        print(f"wrote {write_score_json(args.json, score)}")
    if args.figure:
        print(f"wrote {score_figure(args.figure, score, example_slice(loaded, dataset, device))}")
    return 0


def _cmd_compose(args: argparse.Namespace) -> int:
    from fedforget.launch.run_lock import RunFolderBusy, RunLock
    from fedforget.reporting.console import print_summary
    from fedforget.server.composition import (
        CompositionFailed,
        CompositionRequestError,
        check_request,
        compose_run,
        split_list,
    )

    try:
        plan = check_request(args.run_dir, split_list(args.models), split_list(args.weights))
    except CompositionRequestError as err:
        print(f"fedforget compose: {err}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        composed = compose_run(plan, log=print, exclusive=RunLock)  # one writer per run folder, as for run
    except (CompositionFailed, RunFolderBusy) as err:
        print(f"fedforget compose: {err}", file=sys.stderr)
        return EXIT_FAILED
    print_summary(plan.run_dir)
    print(f"fedforget: added {composed.name} (sha256 {composed.sha256[:12]}), weights in {composed.checkpoint}, "
          f"report {composed.report}")
    return 0


HANDLERS = {"run": _cmd_run, "synth": _cmd_synth, "report": _cmd_report, "check": _cmd_check,
            "evaluate": _cmd_evaluate, "compose": _cmd_compose}


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command and its arguments; flags and positional arguments (overrides) mix in any order.

    argparse's ``parse_intermixed_args`` does not support subparsers, so the command's own
    parser reads everything after the command word.
    """
    parser, commands = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in commands:
        args = commands[argv[0]].parse_intermixed_args(argv[1:])
        args.command = argv[0]
        return args
    return parser.parse_args(argv)  # --help, or the error for a missing or unknown command


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    return HANDLERS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
