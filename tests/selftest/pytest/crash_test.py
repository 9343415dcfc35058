"""Kills the pytest process mid-run: no report is written."""
import os
import signal


def test_passes():
    pass


def test_kills_the_runner():
    os.kill(os.getpid(), signal.SIGKILL)
