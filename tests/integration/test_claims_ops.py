"""README's operational claims, against the real beacond:

- "Without -c, beacond runs the embedded demo configuration (paths under
  .demo/ in the current directory)", as scripts/demo.sh uses it.
"""

import fcntl
import os
import signal
import socket
import subprocess
import time

import pytest

from helpers import BEACONCTL, BEACOND, DEMO_PKI, REPO

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
