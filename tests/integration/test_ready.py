"""Readiness (issue 12): beacond tells the service manager, through
sd_notify and NOTIFY_SOCKET as systemd's Type=notify wants, READY=1 only
once every listener, the control socket and the admin listener are up and
privileges are dropped; RELOADING=1 (with MONOTONIC_USEC) and READY=1 around
each reload; STOPPING=1 at shutdown. It writes one log line when ready.

The service manager's end is a real AF_UNIX datagram socket
(helpers.NotifySocket), the one every Server.start waits on."""

import os
import signal
import stat
import time
import urllib.request

import pytest

from helpers import BACKEND, free_port
from trustkit import beaconctl_sock, ctl


def states(srv, start=0):
    """The notify messages from `start` on, each a dict KEY -> value."""
    with srv.notify.cond:
        return list(srv.notify.messages[start:])


def test_ready_means_control_socket_and_admin_listener_are_up(start_server):
    mport = free_port()
    srv = start_server({"server": {"metrics": f"127.0.0.1:{mport}"}})
    # start() returned at READY=1: nothing below waits or retries.
    first = states(srv)
    assert first and first[0].get("READY") == "1", first
    assert not any("RELOADING" in m for m in first), first
    st = os.stat(srv.control_socket)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
    # One try, no retry: the socket must be there and answer.
    status = ctl(srv, {"cmd": "status"})
    assert status["ok"] is True and status["workers"] == 2, status
    with urllib.request.urlopen(f"http://127.0.0.1:{mport}/healthz", timeout=10) as r:
        assert r.status == 200
    ready_lines = [ln for ln in srv.stderr().splitlines() if ": ready: listening on" in ln]
    assert len(ready_lines) == 1, srv.stderr()
    transport = "DPDK" if BACKEND == "dpdk" else "kernel"
    assert (f"listening on {srv.host}:{srv.port} with 2 workers ({transport} transport); "
            f"control socket {srv.control_socket}; metrics on http://127.0.0.1:{mport}"
            in ready_lines[0]), ready_lines[0]


def test_reload_and_stop_are_told(start_server):
    srv = start_server()
    pid = srv.proc.pid
    # SIGHUP: RELOADING=1, stamped on CLOCK_MONOTONIC at the reload's start,
    # then READY=1.
    mark = srv.notify.count()
    before_us = time.monotonic_ns() // 1000
    os.kill(pid, signal.SIGHUP)
    i = srv.notify.wait_for("RELOADING", start=mark)
    assert i is not None, f"no RELOADING=1 after SIGHUP: {states(srv, mark)}\n{srv.stderr()}"
    after_us = time.monotonic_ns() // 1000
    stamp = int(states(srv, i)[0]["MONOTONIC_USEC"])
    assert before_us <= stamp <= after_us, (before_us, stamp, after_us)
    j = srv.notify.wait_for("READY", start=i + 1)
    assert j is not None, f"no READY=1 after the reload: {states(srv, mark)}"

    # beaconctl reload (the control thread): the same pair.
    mark = srv.notify.count()
    p = beaconctl_sock(srv, "reload", "all")
    assert p.returncode == 0, p.stderr
    i = srv.notify.wait_for("RELOADING", start=mark)
    assert i is not None, f"no RELOADING=1 after beaconctl reload: {states(srv, mark)}"
    assert srv.notify.wait_for("READY", start=i + 1) is not None, states(srv, mark)

    # SIGTERM: STOPPING=1, then a clean exit.
    mark = srv.notify.count()
    os.kill(pid, signal.SIGTERM)
    k = srv.notify.wait_for("STOPPING", start=mark)
    assert k is not None, f"no STOPPING=1 after SIGTERM: {states(srv, mark)}\n{srv.stderr()}"
    assert srv.proc.wait(30) == 0, srv.stderr()
    assert not any("READY" in m or "RELOADING" in m for m in states(srv, k + 1))
    srv.stop()


def test_no_ready_when_start_up_fails(start_server, tmp_path):
    """The control socket cannot be made: beacond exits, never ready,
    though its TCP listeners were already open."""
    srv = start_server({"server": {"control_socket": str(tmp_path / "missing" / "ctl.sock")}},
                       start=False)
    with pytest.raises(AssertionError, match="exited with status 1 during start-up"):
        srv.start()
    assert not any("READY" in m for m in states(srv)), states(srv)
    assert "control socket" in srv.stderr()
    srv.proc = None  # it is gone: nothing to stop
