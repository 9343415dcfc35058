"""Health checks on the admin listener (README, "Health"): /healthz (live)
answers 200 only while every worker's loop turns and the store commits;
/readyz (ready) only while beacond serves, is live, and the data directory
has room for an upload. Otherwise 503 with the reasons, one a line.

Each condition is broken on a real beacond and the answer seen to change,
then (where it can) to recover:
- a stalled worker: one worker thread (named beacond-wN) is stopped with
  ptrace while the rest of the process, the control thread included, runs
  on. SIGSTOP cannot do this, even sent to one thread with tgkill: a stop
  signal stops the whole thread group (signal(7)), and the control thread
  would not answer at all;
- a store whose commits fail: tests/faults/eio.c makes every segment
  fdatasync report EIO (as tests/integration/test_io_error.py does);
- a full disk: the data directory is a small tmpfs, filled to the last
  byte.
Nothing here asserts how fast an answer changes: each test polls until the
state it broke shows, within a generous bound.
"""

import ctypes
import errno
import http.client
import os
import time
from pathlib import Path

import pytest

from helpers import (BEACOND, build_request, free_port, mount_tmpfs, tls_connect, umount,
                     unique_name)

EIO_FAULT = Path(os.environ.get("BEACON_FAULT_EIO",
                                BEACOND.parent / "tests" / "faults" / "beacon-fault-eio.so"))
UP = "/ManageSoftRL/Inventories/"
WAIT_S = 60  # upper bound on any state change; never an expected duration


def admin(srv, method, path):
    """(status, headers dict with lower-case names, body) from the admin
    listener."""
    c = http.client.HTTPConnection("127.0.0.1", srv.metrics_port, timeout=10)
    try:
        c.request(method, path)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def wait_status(srv, path, status, timeout=WAIT_S):
    """Polls GET path until it answers `status`; returns (headers, body)."""
    deadline = time.monotonic() + timeout
    while True:
        got, headers, body = admin(srv, "GET", path)
        if got == status:
            return headers, body
        assert time.monotonic() < deadline, (
            f"{path} still answers {got} {body!r}, not {status}, after {timeout} s\n"
            f"stderr:\n{srv.stderr()[-3000:]}")
        time.sleep(0.1)


def with_admin(start_server, config=None, start=True):
    port = free_port()
    cfg = {"server": {"metrics": f"127.0.0.1:{port}"}}
    for sec, kv in (config or {}).items():
        cfg.setdefault(sec, {}).update(kv)
    srv = start_server(cfg, start=start)
    srv.metrics_port = port
    return srv


def put(srv, name, body):
    with tls_connect(srv) as c:
        c.send(build_request("PUT", UP + name, body=body))
        return c.read_response(timeout=30)


def test_healthy_server_is_live_and_ready(start_server):
    srv = with_admin(start_server)
    for path in ("/healthz", "/readyz"):
        status, headers, body = admin(srv, "GET", path)
        assert (status, body) == (200, b"ok\n"), (path, status, body)
        assert headers.get("cache-control") == "no-store", (path, headers)
        status, headers, body = admin(srv, "HEAD", path)
        assert (status, body) == (200, b""), (path, status, body)
        assert headers.get("cache-control") == "no-store", (path, headers)
        assert headers.get("content-length") == "3", (path, headers)
    assert put(srv, unique_name("healthy"), b"fine\n").status == 201
    assert admin(srv, "GET", "/healthz")[0] == 200


# ---- a stalled worker --------------------------------------------------------

PTRACE_DETACH = 17
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
WALL = 0x40000000  # __WALL: wait for a thread, not only a child process


def thread_by_name(pid, name):
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            if (task / "comm").read_text().strip() == name:
                return int(task.name)
        except FileNotFoundError:
            continue
    raise AssertionError(f"beacond {pid} has no thread named {name}")


class ThreadStop:
    """Stops one thread of another process with ptrace (PTRACE_SEIZE, then
    PTRACE_INTERRUPT); the other threads run on. Resumed by detaching."""

    def __init__(self, tid):
        self.tid = tid
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.ptrace.restype = ctypes.c_long
        self.libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p,
                                     ctypes.c_void_p]

    def _ptrace(self, req):
        if self.libc.ptrace(req, self.tid, None, None) != 0:
            e = ctypes.get_errno()
            if req == PTRACE_SEIZE and e == errno.EPERM:
                pytest.skip(f"ptrace of thread {self.tid} not permitted here")
            raise OSError(e, f"ptrace({req:#x}, {self.tid}): {os.strerror(e)}")

    def __enter__(self):
        self._ptrace(PTRACE_SEIZE)
        try:
            self._ptrace(PTRACE_INTERRUPT)
            os.waitpid(self.tid, WALL)  # it is stopped once this returns
        except BaseException:
            self._ptrace(PTRACE_DETACH)
            raise
        return self

    def __exit__(self, *exc):
        self._ptrace(PTRACE_DETACH)


def test_stalled_worker_fails_healthz_until_it_turns_again(start_server):
    srv = with_admin(start_server, {"server": {"workers": "2", "health_stall": "3s"}})
    wait_status(srv, "/healthz", 200)
    tid = thread_by_name(srv.proc.pid, "beacond-w1")
    with ThreadStop(tid):
        _, body = wait_status(srv, "/healthz", 503)
        assert b"worker 1: loop stalled for " in body, body
        assert b"worker 0" not in body, body  # the one still turning is not blamed
        _, body = wait_status(srv, "/readyz", 503)
        assert b"worker 1: loop stalled for " in body, body
        assert srv.alive()
    wait_status(srv, "/healthz", 200)
    wait_status(srv, "/readyz", 200)


# ---- a store whose commits fail ----------------------------------------------

def test_failing_commits_fail_healthz_until_one_succeeds(start_server, tmp_path, monkeypatch):
    if not EIO_FAULT.exists():
        pytest.skip(f"{EIO_FAULT} not built (sanitizer builds do not build the fault library)")
    flag = tmp_path / "disk-is-failing"
    srv = with_admin(start_server, start=False)
    with monkeypatch.context() as m:
        m.setenv("LD_PRELOAD", str(EIO_FAULT))
        m.setenv("BEACON_FAULT_EIO_FLAG", str(flag))
        srv.start()
    assert put(srv, unique_name("before-eio"), b"safe\n").status == 201
    wait_status(srv, "/healthz", 200)

    flag.touch()
    resp = put(srv, unique_name("during-eio"), os.urandom(1000))
    assert resp.status == 503, resp
    for path in ("/healthz", "/readyz"):
        _, body = wait_status(srv, path, 503)
        assert b"store: last commit failed: I/O error" in body, (path, body)
        assert b"worker" not in body, (path, body)
    status, headers, body = admin(srv, "HEAD", "/healthz")
    assert (status, body) == (503, b""), (status, body)
    assert headers.get("cache-control") == "no-store", headers

    flag.unlink()
    assert put(srv, unique_name("after-eio"), b"well again\n").status == 201
    wait_status(srv, "/healthz", 200)
    wait_status(srv, "/readyz", 200)


# ---- a full disk ----------------------------------------------------------------

def fill(path):
    """Writes `path` until the file system is full."""
    chunk = b"\0" * (64 * 1024)
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
    # The last partial chunk may leave a few bytes: take them too.
    with open(path, "ab", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 512)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e


def test_full_disk_fails_readyz_not_healthz(start_server):
    srv = with_admin(start_server, start=False)
    mount_tmpfs(srv.data_dir, "16m")
    try:
        srv.start()
        wait_status(srv, "/readyz", 200)
        filler = srv.data_dir / "filler.bin"
        fill(filler)
        _, body = wait_status(srv, "/readyz", 503)
        assert b"store: disk full: " in body and b"uploads get 507" in body, body
        # Full is not dead: a restart would not free a byte.
        status, _, body = admin(srv, "GET", "/healthz")
        assert (status, body) == (200, b"ok\n"), (status, body)

        filler.unlink()
        wait_status(srv, "/readyz", 200)
        assert put(srv, unique_name("after-full"), b"room again\n").status == 201
    finally:
        try:
            srv.stop()  # before the umount: beacond holds files open there
        finally:
            umount(srv.data_dir)
