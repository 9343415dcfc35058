"""Both ends kernel-free (issue 18 item 4): beacond with backend = dpdk on the
server end of a net_memif pair, perf/agentsim's DPDK mode (--dpdk: beacond's
own TCP/IPv4 stack as the client, transport_connect) on the other. One
upload of a known body, which must be in beacond's store byte for byte.

The memif pair meets at a Unix socket in a short directory of /tmp (a
file, not the abstract namespace, and short: the EAL arguments must fit
[dpdk] eal_args' 199 characters); each EAL runs without
hugepages or PCI, under a --file-prefix of its own. No namespace, no
network. Needs root (the EAL) and builds of beacond and agentsim with
DPDK; skipped, saying why, otherwise or where the EAL cannot start.
DPDK runs are costly: the test holds /tmp/beacon-dpdk.lock, as
over_dpdk.sh does (except under over_dpdk.sh, which holds it already).
"""

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from helpers import BACKEND, BEACOND, Server
from trustkit import wait_until

AGENTSIM = Path(os.environ.get("AGENTSIM", BEACOND.parent / "perf" / "agentsim"))
SERVER_CIDR = "198.18.0.1/15"
CLIENT_CIDR = "198.18.0.2/15"
DEVICE = "agent-000001.example"  # agentsim's first agent (perf/certs.c)
DPDK_LOCK = "/tmp/beacon-dpdk.lock"
LOCK_WAIT_S = 900


def _built_without_dpdk(binary, marker):
    return binary.exists() and marker in binary.read_bytes()


pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (the DPDK EAL)"),
    pytest.mark.skipif(not AGENTSIM.exists(), reason=f"{AGENTSIM} not built"),
    pytest.mark.skipif(_built_without_dpdk(BEACOND, b"this build has no DPDK"),
                       reason=f"{BEACOND} is built without DPDK"),
    pytest.mark.skipif(_built_without_dpdk(AGENTSIM, b"this agentsim is built without DPDK"),
                       reason=f"{AGENTSIM} is built without DPDK"),
]


def eal_args(role, sock, lcore, prefix):
    return (f"--no-huge -m 256 --no-pci --no-telemetry "
            f"--vdev=net_memif0,role={role},socket={sock},socket-abstract=no "
            f"-l {lcore} --file-prefix {prefix} --log-level=warning")


def lcores():
    """Each end busy-polls: on two CPUs, one each."""
    cpus = sorted(os.sched_getaffinity(0))
    return cpus[0], cpus[-1]


class MemifServer(Server):
    """beacond on the server end of the memif pair at `sock`."""

    def __init__(self, workdir, pki, sock, lcore):
        self.prefix = f"bcnmemif{os.getpid()}"
        conf = {
            "server": {"backend": "dpdk", "workers": "1"},
            "dpdk": {
                "eal_args": eal_args("server", sock, lcore, self.prefix),
                "port": "0",
                "address": SERVER_CIDR,
                "mbufs": "16383",
            },
        }
        super().__init__(workdir, pki, conf, host=SERVER_CIDR.split("/")[0])

    def stop(self, timeout=60.0):
        try:
            super().stop(timeout)
        finally:
            shutil.rmtree(f"/var/run/dpdk/{self.prefix}", ignore_errors=True)


@contextlib.contextmanager
def memif_socket():
    d = tempfile.mkdtemp(prefix="memif", dir="/tmp")
    try:
        yield Path(d) / "s.sock"
    finally:
        shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def dpdk_lock():
    if BACKEND == "dpdk":  # under over_dpdk.sh, which holds it
        yield
        return
    fd = os.open(DPDK_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        # as over_dpdk.sh's `flock -w 900`: a bound on a stuck holder
        assert wait_until(lambda: _try_lock(fd), LOCK_WAIT_S, interval=0.5), \
            f"{DPDK_LOCK} still held after {LOCK_WAIT_S} s"
        yield
    finally:
        os.close(fd)


def _try_lock(fd):
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def start_or_skip(srv):
    try:
        srv.start(timeout=120)
    except AssertionError as e:
        if "DPDK EAL" in srv.stderr():
            pytest.skip(f"the DPDK EAL cannot start here: {srv.stderr().strip()[-500:]}")
        raise


def agentsim_upload(srv, workdir, sock, lcore, body_file):
    prefix = f"agsmemif{os.getpid()}"
    pki = srv.pki
    cmd = [str(AGENTSIM), "--dpdk", eal_args("client", sock, lcore, prefix),
           "--dpdk-addr", CLIENT_CIDR, "--mode", "full", "--requests", "1",
           "--concurrency", "1", "--certs", "1", "--ca-cert", str(pki / "agents-ca.pem"),
           "--ca-key", str(pki / "agents-ca.key"), "--cache", str(workdir / "agents"),
           "--server-ca", str(pki / "server-ca.pem"), "--body-file", str(body_file),
           "--timeout", "60", "--quiet", f"https://{srv.host}:{srv.port}"]
    try:
        # a bound for a run that never ends, not for how fast it is
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
    finally:
        shutil.rmtree(f"/var/run/dpdk/{prefix}", ignore_errors=True)
    err = p.stderr.decode(errors="replace")
    if p.returncode != 0 and "DPDK EAL" in err:
        pytest.skip(f"agentsim's DPDK EAL cannot start here: {err.strip()[-500:]}")
    lines = p.stdout.decode().strip().splitlines()
    assert p.returncode == 0 and lines, f"agentsim exited {p.returncode}:\n{err}"
    return json.loads(lines[-1]), err


def test_upload_over_memif_is_stored_byte_for_byte(tmp_path, pki):
    # several TLS records and many TCP segments, and not a multiple of either
    body = os.urandom(300_007)
    body_file = tmp_path / "body.bin"
    body_file.write_bytes(body)
    server_lcore, client_lcore = lcores()
    with dpdk_lock(), memif_socket() as sock:
        srv = MemifServer(tmp_path / "beacond", pki, sock, server_lcore)
        start_or_skip(srv)
        try:
            result, err = agentsim_upload(srv, tmp_path, sock, client_lcore, body_file)
            assert result["uploads"] == 1 and result["body_bytes"] == len(body), (result, err)
            assert not any(result["errors"].values()), (result["errors"], err)
            rows = srv.uploads(DEVICE)
            assert len(rows) == 1, rows
            assert int(rows[0]["length"]) == len(body)
            assert srv.upload_bytes(rows[0]["id"]) == body, "stored bytes differ from the sent"
        finally:
            srv.stop()
    # the connection came through beacond's DPDK stack: it counts its accepts
    accepted = re.findall(r"dpdk queue 0: .*?accepted (\d+)", srv.stderr())
    assert accepted and int(accepted[-1]) >= 1, srv.stderr()[-3000:]
