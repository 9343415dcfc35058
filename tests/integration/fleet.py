"""A fleet on loopback for the integration tests: N beacond behind one
HAProxy, built from the example configuration in config/ (fleet-haproxy.cfg
and fleet-beacond.conf) with only addresses and paths changed, so the
example cannot drift from what the tests run.

- Every beacond is a helpers.Server (kernel transport) with the fragment's
  keys: PROXY protocol v2 from 127.0.0.1/32, one shared ticket_key_file and
  one shared crl_dir. It counts as started on its READY=1.
- HAProxy counts as started once its stats socket answers "show stat" with
  every beacon UP after a passed health check (L4OK).
- A beacon can be killed with SIGKILL and started again on its data dir and
  port; its stderr (the access log) from before the kill is kept.
- Fleet(overrides=...) adds keys to every beacon's configuration (a
  [drain] section, say); test_fleet.ACKNOWLEDGED_CHECKS lists what must
  hold for the uploads agents saw acknowledged.

Standard library only.
"""

import configparser
import csv
import io
import os
import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path

from helpers import REPO, HOST, Server, free_port
from trustkit import ctl, new_ticket_key_line, wait_until

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
EXAMPLE_HAPROXY = REPO / "config" / "fleet-haproxy.cfg"
EXAMPLE_BEACOND = REPO / "config" / "fleet-beacond.conf"

# The fragment's keys that name this deployment's machines and files; the
# test puts its own in, and refuses an example without them.
LOCAL_KEYS = {("server", "proxy_from"), ("tls", "ticket_key_file"), ("tls", "crl_dir")}


def haproxy_config(template, bind, servers, stats_socket):
    """`template` (fleet-haproxy.cfg's text) with the frontend's bind, the
    servers' addresses and the stats socket's path replaced. Each must be
    found where the example has it: one bind, one stats socket, exactly
    len(servers) server lines."""
    out, binds, sockets, lines = [], 0, 0, 0
    for line in template.splitlines():
        m = re.match(r"^(\s*server\s+\S+\s+)\S+(.*)$", line)
        if m:
            assert lines < len(servers), f"{EXAMPLE_HAPROXY}: more server lines than beacons"
            line = f"{m.group(1)}{servers[lines]}{m.group(2)}"
            lines += 1
        elif re.match(r"^\s*bind\s", line):
            line = re.sub(r"^(\s*bind\s+)\S+", rf"\g<1>{bind}", line)
            binds += 1
        elif re.match(r"^\s*stats\s+socket\s", line):
            line = re.sub(r"^(\s*stats\s+socket\s+)\S+", rf"\g<1>{stats_socket}", line)
            sockets += 1
        out.append(line)
    assert (binds, sockets, lines) == (1, 1, len(servers)), (
        f"{EXAMPLE_HAPROXY}: expected one bind, one stats socket and {len(servers)} "
        f"server lines, found {binds}, {sockets}, {lines}")
    return "\n".join(out) + "\n"


def beacond_fragment():
    """fleet-beacond.conf as {section: {key: value}}."""
    parser = configparser.ConfigParser(interpolation=None, comment_prefixes=("#", ";"))
    parser.optionxform = str  # beacond's keys are case-sensitive
    parser.read_string(EXAMPLE_BEACOND.read_text(), source=str(EXAMPLE_BEACOND))
    sections = {s: dict(parser[s]) for s in parser.sections()}
    for sec, key in LOCAL_KEYS:
        assert key in sections.get(sec, {}), f"{EXAMPLE_BEACOND}: no [{sec}] {key}"
    return sections


class Balancer:
    """HAProxy in front of the fleet. It has what helpers' clients need of
    a server (host, port, pki), so tls_connect() reaches the fleet."""

    def __init__(self, workdir, pki, beacons):
        self.dir = Path(workdir)
        self.pki = Path(pki)
        self.host = HOST
        self.port = free_port()
        self.stats_socket = self.dir / "haproxy.sock"
        self.conf = self.dir / "haproxy.cfg"
        self.log_path = self.dir / "haproxy.log"
        self.names = [f"beacon{i + 1}" for i in range(len(beacons))]
        self.conf.write_text(haproxy_config(
            EXAMPLE_HAPROXY.read_text(), f"{self.host}:{self.port}",
            [f"{b.host}:{b.port}" for b in beacons], self.stats_socket))
        self.proc = None

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self, timeout=30.0):
        self._log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen([HAPROXY, "-db", "-f", str(self.conf)],
                                     stdin=subprocess.DEVNULL, stdout=self._log_file,
                                     stderr=subprocess.STDOUT)
        ok = wait_until(lambda: self.proc.poll() is not None or self.all_up(), timeout)
        assert self.proc.poll() is None, (
            f"haproxy exited with status {self.proc.returncode}:\n{self.log()}")
        assert ok, f"haproxy's beacons not all up within {timeout} s: {self.servers()}"
        return self

    def stop(self):
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        try:
            alive = proc.poll() is None
            proc.terminate()
            proc.wait(10)
        finally:
            self._log_file.close()
        assert alive, f"haproxy died (status {proc.returncode}):\n{self.log()}"

    def command(self, line):
        """One command on the stats socket; its answer as text."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(str(self.stats_socket))
            s.sendall(line.encode() + b"\n")
            buf = b""
            while True:
                data = s.recv(65536)
                if not data:
                    return buf.decode(errors="replace")
                buf += data

    def servers(self):
        """{server name: (status, check_status)} from "show stat", or {}
        while the stats socket is not up yet."""
        try:
            text = self.command("show stat")
        except OSError:
            return {}
        rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
        return {r["svname"]: (r["status"], r["check_status"])
                for r in rows if r["svname"] in self.names}

    def server_up(self, name):
        return self.servers().get(name) == ("UP", "L4OK")

    def all_up(self):
        return all(self.server_up(n) for n in self.names)


def with_drain(config, nats_url, beacon_id):
    """config with a [drain] to nats_url under its own beacon id (None: as
    it is). On real machines the default id, the host name, differs by
    itself; beacons sharing a host must be told apart, or the stream's
    de-duplication would drop one beacon's upload 7 as the other's."""
    if not nats_url:
        return config
    config = {sec: dict(kv) for sec, kv in config.items()}
    config["drain"] = {"nats": nats_url, "beacon_id": beacon_id}
    return config


class Fleet:
    """N beacond behind one HAProxy. `beacons[i]` is a helpers.Server;
    `balancer` is where agents connect."""

    def __init__(self, workdir, pki, n=3, overrides=None, nats_url=None):
        self.dir = Path(workdir)
        self.pki = Path(pki)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ticket_keys = self.dir / "fleet-tickets.keys"
        self.ticket_keys.write_text(new_ticket_key_line() + "\n")
        os.chmod(self.ticket_keys, 0o600)
        self.crl_dir = self.dir / "crl"
        self.crl_dir.mkdir()
        config = beacond_fragment()
        config["server"].update({"proxy_from": f"{HOST}/32", "workers": "1", "watch": "no"})
        config["tls"].update({"ticket_key_file": str(self.ticket_keys),
                              "crl_dir": str(self.crl_dir)})
        for sec, kv in (overrides or {}).items():
            config.setdefault(sec, {}).update(kv)
        self.beacons = [Server(self.dir / f"beacon{i + 1}", pki,
                               with_drain(config, nats_url, f"beacon{i + 1}"))
                        for i in range(n)]
        self.balancer = Balancer(self.dir, pki, self.beacons)

    def start(self):
        for b in self.beacons:
            b.start()
        self.balancer.start()
        return self

    def stop(self):
        """Stops HAProxy, then every beacond with SIGTERM (each must exit 0)."""
        errors = []
        try:
            self.balancer.stop()
        finally:
            for b in self.beacons:
                try:
                    b.stop()
                except AssertionError as e:
                    errors.append(str(e))
        assert not errors, "\n".join(errors)

    def stats(self):
        """Each beacon's counters (the control socket's stats)."""
        return [ctl(b, {"cmd": "stats"}) for b in self.beacons]

    def kill9(self, i):
        """SIGKILL for beacon i; its stderr so far is kept as
        beacond.stderr.killed (start() would truncate it)."""
        b = self.beacons[i]
        proc, b.proc = b.proc, None
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        b._stderr_file.close()
        b.notify.close()
        b.stderr_path.rename(b.dir / "beacond.stderr.killed")

    def restart(self, i, timeout=60.0):
        """Starts beacon i again on its data dir and port and waits until
        HAProxy has it UP again."""
        self.beacons[i].start()
        name = self.balancer.names[i]
        assert wait_until(lambda: self.balancer.server_up(name), timeout), (
            f"haproxy did not take {name} back: {self.balancer.servers()}")

    def logs(self, i):
        """Beacon i's whole stderr, from before a kill too."""
        b = self.beacons[i]
        killed = b.dir / "beacond.stderr.killed"
        old = killed.read_text(errors="replace") if killed.exists() else ""
        return old + b.stderr()

    def access_line(self, path, timeout=30.0):
        """(beacon index, line) of the access-log line of the request for
        `path`, once one beacon logged it; every beacon is searched and
        exactly one may have it."""
        def find():
            hits = [(i, line) for i in range(len(self.beacons))
                    for line in self.logs(i).splitlines()
                    if "access: " in line and f" {path} " in line]
            return hits or None
        hits = wait_until(find, timeout)
        assert hits, f"no beacon logged {path}"
        assert len(hits) == 1, f"{path} logged more than once: {hits}"
        return hits[0]


def wait_for(pred, timeout, what):
    """pred()'s value once true; fails with `what` after `timeout` s."""
    v = wait_until(pred, timeout)
    assert v, f"timed out after {timeout} s waiting for {what}"
    return v
