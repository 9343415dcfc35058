"""README's operational claims, against the real beacond:

- "Without -c, beacond runs the embedded demo configuration (paths under
  .demo/ in the current directory)", as scripts/demo.sh uses it;
- "a change to the files (watch = yes, debounced)": beacond reloads once a
  change has stayed unchanged for one tick of its control thread (about a
  second; dataplane/main.c control_tick): changes less than a tick apart
  make one reload.
"""

import fcntl
import shutil
import os
import signal
import socket
import subprocess
import time

import pytest

from helpers import BEACONCTL, BEACOND, DEMO_PKI, REPO
from trustkit import ctl, upload, wait_until

DEMO_PORT = 8443  # the embedded configuration's listen address is 127.0.0.1:8443


def wait_for_text(path, text, proc, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        data = path.read_text(errors="replace") if path.exists() else ""
        if text in data:
            return data
        assert proc.poll() is None, f"beacond exited {proc.returncode}:\n{data}"
        assert time.monotonic() < deadline, f"no {text!r} in beacond's log:\n{data}"
        time.sleep(0.05)


@pytest.fixture
def demo_port_lock():
    """Only one demo beacond at a time on this machine (its port is fixed)."""
    with open("/tmp/beacon-demo-8443.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", DEMO_PORT))
            except OSError as e:
                pytest.skip(f"127.0.0.1:{DEMO_PORT} is taken by another program ({e})")
        yield


def test_embedded_demo_configuration(tmp_path, demo_port_lock):
    """scripts/demo.sh's steps in a fresh directory, then README's curl."""
    work = tmp_path / "demo"
    work.mkdir()
    p = subprocess.run(["bash", str(DEMO_PKI), ".demo/pki"], cwd=work,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    assert p.returncode == 0, p.stdout.decode()
    (work / ".demo/data").mkdir()
    (work / ".demo/download").mkdir()
    log = tmp_path / "beacond.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(BEACOND)], cwd=work, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=out)
    try:
        text = wait_for_text(log, "listening on", proc)
        assert f"listening on 127.0.0.1:{DEMO_PORT}" in text, text
        readme = REPO / "README.md"
        p = subprocess.run(
            ["curl", "-sS", "--max-time", "60", "--cacert", ".demo/pki/server-ca.pem",
             "--cert", ".demo/pki/agent1.pem", "--key", ".demo/pki/agent1.key", "-T",
             str(readme), "-w", "\n%{http_code}",
             f"https://127.0.0.1:{DEMO_PORT}/ManageSoftRL/Inventories/readme.ndi"],
            cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=90)
        body, _, code = p.stdout.decode().rpartition("\n")
        assert code == "201", (p.stdout, p.stderr)
        size = readme.stat().st_size
        assert body.strip() == f"201 Created: upload 1, {size} bytes", body
        # stored under .demo/data, where README's beaconctl commands read it
        assert (work / ".demo/control.sock").exists()
        spool = list((work / ".demo/data/spool").rglob("*.seg"))
        assert spool and sum(s.stat().st_size for s in spool) > size, spool
        ctl = [str(BEACONCTL), "--data-dir", ".demo/data"]
        listed = subprocess.run(ctl + ["uploads", "list"], cwd=work, stdout=subprocess.PIPE,
                                timeout=30, check=True).stdout.decode()
        assert "agent1.example" in listed and "readme.ndi" in listed, listed
        got = subprocess.run(ctl + ["uploads", "get", "1"], cwd=work, stdout=subprocess.PIPE,
                             timeout=30, check=True).stdout
        assert got == readme.read_bytes()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    assert rc == 0, log.read_text(errors="replace")
    assert not os.path.exists(work / "data"), "the demo wrote outside .demo/"


# --------------------------------------------------------------------------
# The watch's debounce

RELOAD_LINE = "watch: trust files changed; reloading"


@pytest.fixture
def watched(start_server, pki, tmp_path):
    """A beacond with watch = yes over its own copies of the trust files."""
    issuers = tmp_path / "issuers"
    issuers.mkdir()
    for f in (pki / "issuers").iterdir():
        shutil.copy(f, issuers / f.name)
    blocklist = tmp_path / "blocklist.txt"
    blocklist.write_text("# empty\n")
    srv = start_server({"server": {"watch": "yes"},
                        "tls": {"issuers": str(issuers), "blocklist": str(blocklist)}})
    assert wait_until(lambda: srv.control_socket.exists(), 10)
    return srv, issuers, blocklist


def generation(srv):
    return ctl(srv, {"cmd": "status"})["snapshot_generation"]


def replace(path, text):
    tmp = path.parent / f".{path.name}.tmp"
    tmp.write_text(text)
    os.replace(tmp, path)


def reloads(srv):
    return srv.stderr().count(RELOAD_LINE)


def block_and_wait(srv, blocklist, name):
    """The sentinel change: one edit that blocks `name`; returns once beacond
    refuses it (that reload has happened)."""
    replace(blocklist, f"device:{name}.example\n")
    assert wait_until(lambda: upload(srv, name)[0] != "response", 20, 0.2), srv.stderr()


def test_watch_burst_is_one_reload(watched):
    srv, issuers, blocklist = watched
    g0 = generation(srv)
    assert reloads(srv) == 0
    # the burst: five versions of the block list and a new file in the
    # issuers directory, renamed into place in one go (a few ms)
    for i in range(5):
        replace(blocklist, f"# version {i}\n")
    replace(issuers / "notes.txt", "not a certificate\n")
    assert wait_until(lambda: reloads(srv) >= 1, 20), srv.stderr()
    assert wait_until(lambda: generation(srv) == g0 + 1, 10), (generation(srv), g0)
    # a later single change is one more; a second reload from the burst
    # would have come before it (within a tick of the burst's end)
    block_and_wait(srv, blocklist, "agent3")
    assert reloads(srv) == 2, srv.stderr()
    assert generation(srv) == g0 + 2
    assert upload(srv, "agent1")[1].status == 201


def test_watch_waits_while_a_file_keeps_changing(watched):
    """A file rewritten every 100 ms for 2.5 s (a slow CRL fetch, an
    editor) is never reloaded half-done: no reload while it changes (every
    tick sees a new version), one after it stops."""
    srv, _, blocklist = watched
    g0 = generation(srv)
    end = time.monotonic() + 2.5
    i = 0
    while time.monotonic() < end:
        replace(blocklist, f"# partial write {i}\n")
        i += 1
        time.sleep(0.1)
    during = reloads(srv)
    block_and_wait(srv, blocklist, "agent2")
    assert during == 0, f"{during} reloads while the file kept changing:\n{srv.stderr()}"
    assert reloads(srv) == 1 and generation(srv) == g0 + 1, srv.stderr()
