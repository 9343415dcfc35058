"""The DPDK transport (issue 5): beacond with backend = dpdk on a DPDK tap in
a network namespace of its own, with the namespace's Linux TCP as the peer.

Each module run creates namespace bcnNNNNN, starts beacond inside it (the
tap's kernel side appears there as interface bcNNNNN), gives that interface
198.18.0.2/15 and talks to beacond at 198.18.0.1 from inside the namespace:
curl for the real service, python3-scapy (dpdk_packets.py) for crafted
segments. Only 198.18.0.0/15 addresses, only inside that namespace; the
namespace is deleted at the end.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from helpers import TapServer, free_port, sh, unique_name
from trustkit import ctl, parse_metrics, wait_until

HERE = Path(__file__).resolve().parent
SERVER_IP = "198.18.0.1"
PEER_CIDR = "198.18.0.2/15"
SCAPY_PYTHON = "/usr/bin/python3"  # Debian's python3-scapy


def _ip_netns_works():
    if shutil.which("ip") is None:
        return False
    return subprocess.run(["ip", "netns", "list"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0


pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, a tap)"),
    pytest.mark.skipif(not _ip_netns_works(), reason="`ip netns` is unavailable"),
]


def _have_scapy():
    return subprocess.run([SCAPY_PYTHON, "-c", "import scapy.all"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0


class DpdkServer(TapServer):
    """beacond in namespace `ns` with the DPDK transport on a tap."""

    def __init__(self, workdir, pki, ns, tap, overrides=None):
        super().__init__(workdir, pki, tap, f"{SERVER_IP}/15", PEER_CIDR, ns=ns,
                         overrides=overrides)

    def curl(self, path, *args, name="agent1", timeout=120):
        cmd = ["ip", "netns", "exec", self.ns, "curl", "-sS", "--max-time", str(timeout - 5),
               "--resolve", f"localhost:{self.port}:{SERVER_IP}",
               "--cacert", str(self.pki / "server-ca.pem")]
        if name is not None:
            cmd += ["--cert", str(self.pki / f"{name}.pem"),
                    "--key", str(self.pki / f"{name}.key")]
        cmd += [str(a) for a in args] + [f"https://localhost:{self.port}{path}"]
        return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=timeout)

    def curl_code(self, path, *args, **kw):
        p = self.curl(path, "-o", "/dev/null", "-w", "%{http_code}", *args, **kw)
        out = p.stdout.decode().strip()
        return (int(out) if out.isdigit() else 0), p

    def upload(self, data_path, fname, agent="agent1", **kw):
        return self.curl_code(f"/ManageSoftRL/Inventories/{fname}", "-T", str(data_path),
                              name=agent, **kw)

    def packets(self, check, *extra, timeout=60):
        p = subprocess.run(["ip", "netns", "exec", self.ns, SCAPY_PYTHON,
                            str(HERE / "dpdk_packets.py"), self.tap, SERVER_IP,
                            str(self.port), check, *map(str, extra)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
        assert p.returncode == 0, (f"{check}: {p.stderr.decode(errors='replace')}\n"
                                   f"beacond:\n{self.stderr()[-3000:]}")
        return json.loads(p.stdout.decode().strip().splitlines()[-1])

    def impaired(self, loss=0, duplicate=0, reorder=100, delay_ms=0):
        """Context: the client side moves to tap `cl...` behind a relay that
        loses, duplicates, delays and reorders frames both ways (this
        kernel has no netem qdisc)."""
        return Impairment(self, loss, duplicate, reorder, delay_ms)


class Impairment:
    def __init__(self, srv, *params):
        self.srv = srv
        self.params = params
        self.client = "cl" + srv.tap[2:]

    def _ns(self, *cmd, check=True):
        return sh("ip", "netns", "exec", self.srv.ns, *cmd, check=check)

    def __enter__(self):
        s = self.srv
        self.proc = subprocess.Popen(["ip", "netns", "exec", s.ns, SCAPY_PYTHON,
                                      str(HERE / "dpdk_packets.py"), s.tap, SERVER_IP,
                                      str(s.port), "relay", self.client,
                                      *map(str, self.params)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self.proc.stdout.readline().strip() == b"ready", self.proc.stderr.read()
        self._ns("ip", "addr", "flush", "dev", s.tap)
        self._ns("ip", "addr", "add", PEER_CIDR, "dev", self.client)
        self._ns("ip", "link", "set", self.client, "up")
        self._ns("ip", "neigh", "flush", "all")
        return self

    def __exit__(self, *exc):
        s = self.srv
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)
        self._ns("ip", "addr", "add", PEER_CIDR, "dev", s.tap, check=False)
        self._ns("ip", "link", "set", s.tap, "up", check=False)
        self._ns("ip", "neigh", "flush", "all", check=False)


@contextlib.contextmanager
def dpdk_server(tmp_path_factory, pki, suffix="", overrides=None):
    """A DpdkServer in a namespace of its own (named after our pid and
    `suffix`), stopped and the namespace deleted at the end. Its admin
    listener (/metrics) is on the namespace's loopback: net_counters()."""
    tag = f"{os.getpid() % 100000:05d}{suffix}"
    ns, tap = f"bcn{tag}", f"bc{tag}"
    sh("ip", "netns", "add", ns)
    mport = free_port()
    overrides = {s: dict(kv) for s, kv in (overrides or {}).items()}
    overrides.setdefault("server", {}).setdefault("metrics", f"127.0.0.1:{mport}")
    srv = DpdkServer(tmp_path_factory.mktemp("beacond-dpdk"), pki, ns, tap, overrides)
    srv.metrics_port = int(overrides["server"]["metrics"].rsplit(":", 1)[1])
    try:
        srv.start()
        yield srv
    finally:
        try:
            srv.stop()
        finally:
            sh("ip", "netns", "del", ns, check=False)


def metrics_text(srv):
    p = subprocess.run(["ip", "netns", "exec", srv.ns, "curl", "-sS", "--max-time", "5",
                        f"http://127.0.0.1:{srv.metrics_port}/metrics"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10)
    assert p.returncode == 0, p.stderr.decode()
    return p.stdout.decode()


def net_counters(srv):
    """{counter: value} of the stack's beacond_net_NAME_total samples."""
    return {name[len("beacond_net_"):-len("_total")]: v
            for (name, _), v in parse_metrics(metrics_text(srv)).items()
            if name.startswith("beacond_net_")}


def per_queue(err, counter):
    """{queue: value} of one counter, by the regex `counter` with one group,
    in the lines beacond logs at stop, one per queue (one queue per worker):
    "dpdk queue N: rx ... accepted 3, ..."."""
    out = {}
    for m in re.finditer(r"dpdk queue (\d+): (.*)", err):
        c = re.search(counter, m.group(2))
        assert c, (counter, m.group(0))
        out[int(m.group(1))] = int(c.group(1))
    return out


@pytest.fixture(scope="module")
def dsrv(tmp_path_factory, pki):
    with dpdk_server(tmp_path_factory, pki) as srv:
        yield srv


KEEPALIVE = {"idle_ms": 1000, "interval_ms": 400, "probes": 3}


@pytest.fixture(scope="module")
def ksrv(tmp_path_factory, pki):
    """Keepalive in seconds rather than minutes; the layer above waits
    longer than that for a TLS handshake."""
    conf = {"dpdk": {"keepalive_idle": f"{KEEPALIVE['idle_ms']}ms",
                     "keepalive_interval": f"{KEEPALIVE['interval_ms']}ms",
                     "keepalive_probes": str(KEEPALIVE["probes"])},
            "limits": {"handshake_timeout": "60s"}}
    with dpdk_server(tmp_path_factory, pki, "k", conf) as srv:
        yield srv


@pytest.fixture
def payloads(tmp_path):
    def make(size):
        p = tmp_path / f"{size}.bin"
        p.write_bytes(os.urandom(size))
        return p
    return make


def assert_stored(srv, name, path):
    row = srv.find_upload(name)
    data = path.read_bytes()
    assert int(row["length"]) == len(data)
    assert srv.upload_bytes(row["id"]) == data, "stored bytes differ from the upload"


def test_ping(dsrv):
    if not _have_scapy():
        pytest.skip("python3-scapy is not installed")
    assert dsrv.packets("ping")["echo"]


@pytest.mark.parametrize("size", [0, 1024, 1 << 20, 16 << 20, 64 << 20],
                         ids=["0B", "1KiB", "1MiB", "16MiB", "64MiB"])
def test_upload(dsrv, payloads, size):
    path = payloads(size)
    name = unique_name(f"dpdk-{size}")
    code, p = dsrv.upload(path, name)
    assert code == 201, p.stderr.decode() + dsrv.stderr()[-2000:]
    assert_stored(dsrv, name, path)


@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
def test_s_client_resumes(dsrv, tmp_path, version):
    """openssl s_client through the DPDK stack: a full handshake, then a
    resumed one from the saved session, each answering a GET."""
    sess = tmp_path / "sess.pem"
    req = b"GET /ManageSoftDL/policy.xml HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    outs = []
    for arg in (["-sess_out", str(sess)], ["-sess_in", str(sess)]):
        p = subprocess.run(["ip", "netns", "exec", dsrv.ns, "openssl", "s_client",
                            "-connect", f"{SERVER_IP}:{dsrv.port}", "-servername", "localhost",
                            "-CAfile", str(dsrv.pki / "server-ca.pem"),
                            "-cert", str(dsrv.pki / "agent1.pem"),
                            "-key", str(dsrv.pki / "agent1.key"), "-ign_eof", version, *arg],
                           input=req, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=30)
        outs.append(p.stdout.decode(errors="replace"))
    assert "New, TLSv1." in outs[0] and "HTTP/1.1 200 OK" in outs[0], outs[0][-2000:]
    assert "Reused, TLSv1." in outs[1] and "HTTP/1.1 200 OK" in outs[1], outs[1][-2000:]


def test_download(dsrv):
    p = dsrv.curl("/ManageSoftDL/policy.xml")
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout.startswith(b'<?xml version="1.0"?>')


@pytest.mark.parametrize("name", [None, "untrusted"], ids=["no-cert", "untrusted"])
def test_rejected(dsrv, payloads, name):
    path = payloads(1024)
    fname = unique_name("dpdk-rejected")
    code, _ = dsrv.upload(path, fname, agent=name, timeout=30)
    assert code != 201
    assert not [r for r in dsrv.uploads() if r.get("name") == fname]
    dsrv.assert_alive()


IMPAIRMENTS = {
    "loss5": {"loss": 5},
    "loss1": {"loss": 1},
    "delay50-reorder25": {"delay_ms": 50, "reorder": 25},
    "duplicate5": {"duplicate": 5},
}


@pytest.mark.parametrize("case", list(IMPAIRMENTS))
def test_upload_impaired(dsrv, payloads, case):
    """Impaired in both directions: the peer's data and our ACKs, our
    handshake and responses and their ACKs are lost, duplicated or
    reordered; the upload still arrives byte for byte."""
    if not _have_scapy():
        pytest.skip("python3-scapy is not installed")
    path = payloads(1 << 20)
    name = unique_name(f"dpdk-{case}")
    with dsrv.impaired(**IMPAIRMENTS[case]):
        code, p = dsrv.upload(path, name, timeout=120)
    assert code == 201, p.stderr.decode() + dsrv.stderr()[-2000:]
    assert_stored(dsrv, name, path)


@pytest.mark.parametrize("check", ["bad_checksum", "rst_window", "timestamps",
                                   "rto_from_timestamps"])
def test_crafted(dsrv, check):
    if not _have_scapy():
        pytest.skip("python3-scapy is not installed")
    assert dsrv.packets(check)
    dsrv.assert_alive()


def test_linux_peer_timestamps(dsrv, payloads):
    """The namespace's Linux TCP offers timestamps (RFC 7323) on its SYN:
    the SYN-ACK agrees, every segment of ours carries one (tcpdump on the
    tap's kernel side), and an upload runs with them (PAWS on) to the end.
    (ss cannot tell: this kernel's tcp_info leaves the option bits out.)"""
    if shutil.which("tcpdump") is None:
        pytest.skip("tcpdump is not installed")
    path = payloads(1 << 20)
    name = unique_name("dpdk-ts")
    dump = subprocess.Popen(["ip", "netns", "exec", dsrv.ns, "tcpdump", "-i", dsrv.tap, "-nn",
                             "-l", "-S", f"tcp port {dsrv.port}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # tcpdump says "listening on IFACE" once its capture is open.
        while b"listening on" not in (line := dump.stderr.readline()):
            assert line, "tcpdump exited before it listened"
        code, p = dsrv.upload(path, name)
    finally:
        dump.terminate()
        out = dump.communicate(timeout=10)[0].decode(errors="replace")
    assert code == 201, p.stderr.decode() + dsrv.stderr()[-2000:]
    assert_stored(dsrv, name, path)
    ours = [ln for ln in out.splitlines() if f"{SERVER_IP}.{dsrv.port} >" in ln]
    syn_acks = [ln for ln in ours if "Flags [S.]" in ln]
    assert syn_acks and all("TS val" in ln for ln in syn_acks), out[-3000:]
    untimed = [ln for ln in ours if "TS val" not in ln and "Flags [R" not in ln]
    assert len(ours) > 20 and not untimed, "\n".join(untimed[:10])


def test_keepalive_probes(ksrv):
    """Crafted peer: a silent connection is probed after the idle time; an
    answer restarts the silence; unanswered probes, `interval` apart, end
    in a reset."""
    if not _have_scapy():
        pytest.skip("python3-scapy is not installed")
    r = ksrv.packets("keepalive", KEEPALIVE["idle_ms"], KEEPALIVE["interval_ms"],
                     KEEPALIVE["probes"])
    assert r["probes"] == KEEPALIVE["probes"] and r["reset"], r


def test_keepalive_frees_vanished_peer(ksrv):
    """The Linux peer answers probes (the connection stays); once its
    address is gone (the peer vanished without a word) the probes go
    unanswered and the server frees the connection."""
    ka = KEEPALIVE
    give_up_s = (ka["idle_ms"] + ka["probes"] * ka["interval_ms"]) / 1000
    peer = subprocess.Popen(["ip", "netns", "exec", ksrv.ns, "/usr/bin/python3", "-c",
                             "import socket, sys, time\n"
                             f"s = socket.create_connection(('{SERVER_IP}', {ksrv.port}))\n"
                             "print('up', flush=True)\n"
                             "sys.stdin.read()\n"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert peer.stdout.readline().strip() == b"up"
        assert wait_until(lambda: ctl(ksrv, {"cmd": "stats"})["connections_open"] == 1, 30)
        # Past what unanswered probes would take to drop it: more probes
        # than the limit were sent (so some were answered), and it stays.
        sent = net_counters(ksrv)["tcp_keepalive_probes"]
        assert wait_until(lambda: net_counters(ksrv)["tcp_keepalive_probes"]
                          >= sent + ka["probes"] + 1, 10 * give_up_s), "no keepalive probes"
        assert ctl(ksrv, {"cmd": "stats"})["connections_open"] == 1, "an answering peer dropped"
        sh("ip", "netns", "exec", ksrv.ns, "ip", "addr", "del", PEER_CIDR, "dev", ksrv.tap)
        try:
            assert wait_until(lambda: ctl(ksrv, {"cmd": "stats"})["connections_open"] == 0,
                              give_up_s + 3), "the vanished peer's connection was not freed"
        finally:
            sh("ip", "netns", "exec", ksrv.ns, "ip", "addr", "add", PEER_CIDR, "dev", ksrv.tap)
    finally:
        peer.stdin.close()
        peer.wait(10)
    ksrv.assert_alive()


def test_keepalive_counted_at_stop(ksrv):
    """Both connections above ended by keepalive, and the stack says so."""
    ksrv.stop()
    err = ksrv.stderr()
    # Summed over the queues: each connection is on one worker's.
    probes = sum(per_queue(err, r"keepalive probes (\d+)").values())
    drops = per_queue(err, r"keepalive drops (\d+)")
    assert drops, err[-2000:]
    assert probes >= 2 * KEEPALIVE["probes"] and sum(drops.values()) == 2, err[-2000:]


def test_syn_flood(dsrv, payloads):
    """Thousands of spoofed SYNs: with SYN cookies they cost no state, and a
    real client still connects and uploads during the flood.

    What the server saw, not what the sender sent: the sender's 9000 SYNs
    cross a tap whose queue (and the stack's poll loop) drops frames when
    the machine is busy, so how many arrive depends on speed. Every SYN
    that did arrive must get a cookie and none may become a connection."""
    if not _have_scapy():
        pytest.skip("python3-scapy is not installed")
    path = payloads(64 * 1024)
    result = {}

    def flood():
        result.update(dsrv.packets("syn_flood", 3000, timeout=120))

    before = net_counters(dsrv)
    t = threading.Thread(target=flood)
    t.start()
    # The flood is under way once the server answers its SYNs (building
    # the packets takes the sender a moment).
    assert wait_until(lambda: net_counters(dsrv)["syn_cookies_sent"]
                      >= before["syn_cookies_sent"] + 100 or not t.is_alive(), 120)
    assert t.is_alive(), "the flood ended before the server answered 100 of its SYNs"
    codes = []
    try:
        for i in range(3):
            name = unique_name(f"dpdk-flood{i}")
            code, p = dsrv.upload(path, name, timeout=60)
            codes.append(code)
            if code == 201:
                assert_stored(dsrv, name, path)
    finally:
        t.join()
    assert result.get("syns") == 9000, result
    assert codes and all(c == 201 for c in codes), codes
    # The workers publish their counters every 100 ms: wait until the
    # snapshot counts the uploads' connections, then compare its deltas.
    def delta():
        now = net_counters(dsrv)
        return {k: now[k] - before[k] for k in now}

    assert wait_until(lambda: delta()["tcp_accepted"] >= len(codes), 20), delta()
    d = delta()
    # Each SYN that reached the stack got a SYN-ACK carrying a cookie: the
    # flood's (more than the 100 waited for) and one per upload (and any
    # SYN a client retransmitted). Each worker counts both in one place
    # and publishes them together, so any snapshot's sums are equal.
    assert d["syn_received"] >= 100 + len(codes), d
    assert d["syn_cookies_sent"] == d["syn_received"], d
    # None of the spoofed SYNs took a slot in the connection table: the
    # only connections accepted are the uploads', none was refused for a
    # full table, and none is open now.
    assert d["tcp_accepted"] == len(codes), d
    assert d["tcp_table_full"] == 0, d
    assert ctl(dsrv, {"cmd": "stats"})["connections_open"] == 0
    dsrv.assert_alive()


def test_both_workers_serve(tmp_path_factory, pki, payloads):
    """workers = 2 on a tap: the tap gets two queues (multi-queue tun; the
    kernel spreads flows over them by its flow hash), each worker polls its
    own, and both serve connections. Every frame of a connection must reach
    the worker that holds it: a frame on the other queue would find no
    connection there and be answered with a RST, or fail as a bad cookie,
    and the upload would fail. 24 connections from random source ports:
    all on one queue of two has odds of 2^-23."""
    n = 24
    path = payloads(32 * 1024)
    with dpdk_server(tmp_path_factory, pki, "w", {"server": {"workers": "2"}}) as srv:
        for i in range(n):
            name = unique_name(f"dpdk-worker{i}")
            code, p = srv.upload(path, name)
            assert code == 201, (code, p.stderr.decode(errors="replace"))
            assert_stored(srv, name, path)
        srv.stop()
        err = srv.stderr()
    accepted = per_queue(err, r"accepted (\d+)")
    assert sorted(accepted) == [0, 1], err[-3000:]
    assert all(a > 0 for a in accepted.values()), accepted
    assert sum(accepted.values()) == n, accepted
    assert per_queue(err, r"RST out (\d+)") == {0: 0, 1: 0}, err[-3000:]
    assert per_queue(err, r"bad cookies (\d+)") == {0: 0, 1: 0}, err[-3000:]
    assert re.search(r"2 queues \(kernel flow hash\)", err), err[-3000:]


def test_one_worker_one_queue(tmp_path_factory, pki, payloads):
    """workers = 1 on the same tap keeps the single-queue path: one queue,
    served by the one worker."""
    path = payloads(32 * 1024)
    with dpdk_server(tmp_path_factory, pki, "o", {"server": {"workers": "1"}}) as srv:
        name = unique_name("dpdk-one-worker")
        code, p = srv.upload(path, name)
        assert code == 201, (code, p.stderr.decode(errors="replace"))
        assert_stored(srv, name, path)
        srv.stop()
        err = srv.stderr()
    assert re.search(r"MTU \d+, 1 queue;", err), err[-3000:]
    assert per_queue(err, r"accepted (\d+)") == {0: 1}, err[-3000:]


def test_stats_at_stop(dsrv):
    """Last: beacond stops cleanly, and its stack counted what it dropped
    (on whichever worker's queue the crafted segments arrived)."""
    dsrv.stop()
    err = dsrv.stderr()
    assert "dpdk queue 0:" in err
    if _have_scapy():
        bad = per_queue(err, r"bad checksum (\d+), cookies")
        assert sum(bad.values()) >= 2, err[-2000:]
