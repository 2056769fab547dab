"""Stopping from outside: signals become an exception that unwinds the run, and one writer per run folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from run_helpers import REPO

from fedforget.launch.run_lock import RunFolderBusy, RunLock
from fedforget.launch.signals import Interrupted, stop_on_signals


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_unwinds_the_block_once_and_exits_128_plus_its_number(sig: int, code: int) -> None:
    cleaned, before = [], signal.getsignal(sig)
    with pytest.raises(Interrupted) as caught:
        with stop_on_signals():
            try:
                os.kill(os.getpid(), sig)
                signal.pause()  # never reached: the handler raises first
            finally:
                os.kill(os.getpid(), sig)  # a second signal during the cleanup does not cut it short
                cleaned.append(True)
    assert cleaned == [True] and caught.value.exit_code == code and caught.value.name in str(caught.value)
    assert signal.getsignal(sig) is before, "the previous handler is back after the block"


_HOLDER = """
import sys, time
from pathlib import Path
from fedforget.launch.run_lock import RunLock
with RunLock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_writer_is_refused_with_the_first_ones_pid_until_it_dies(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(RunFolderBusy, match=f"being written by PID {holder.pid}"):
            with RunLock(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()
    with RunLock(tmp_path) as lock:  # the kernel released the dead writer's lock: a resume may start
        lock.note(flwr_home=tmp_path / "home")
    assert '"flwr_home"' in (tmp_path / ".writer.lock").read_text()
