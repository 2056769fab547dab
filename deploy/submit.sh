#!/usr/bin/env bash
# Run an experiment on the deployed federation and fail loudly unless it really completed:
# `flwr run` exits 0 even when the run failed, so this checks Flower's record of the run
# (`flwr ls`: finished:completed) and the run folder's status.json (completed).
set -euo pipefail
USAGE="deploy/submit.sh CONNECTION OUTPUT_DIR experiment=NAME [HYDRA OVERRIDES...] [--verbose]
  CONNECTION  connection name written by deploy/connect.sh
  OUTPUT_DIR  the run folder; the ServerApp writes it on the SuperLink machine, so run this
              script there (a relative path is made absolute here)
  Shows the run's progress (OUTPUT_DIR/progress.jsonl) and Flower's errors; Flower's full log goes
  to OUTPUT_DIR/flwr.log (--verbose prints it too).
  Exits 0 when the run completed, 1 when it failed (the reason is printed), 2 for a bad config.
  env: FLWR_HOME (default ~/.flwr)"
source "$(dirname "$0")/_lib.sh"

[[ $# -ge 3 ]] || usage
fedforget_deploy submit "$@"
