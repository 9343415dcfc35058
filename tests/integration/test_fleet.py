"""A fleet (issue 16, item 7): three beacond behind one HAProxy (mode tcp,
send-proxy-v2, round robin), started from the example configuration
(config/fleet-haproxy.cfg, config/fleet-beacond.conf; fleet.py), with one
shared ticket_key_file and one shared crl_dir.

- A TLS 1.3 and a TLS 1.2 session ticket from one beacon resume on the
  others; a ticket from a beacon with another key file does not.
- Each beacon sees the agent's address, not HAProxy's.
- A CRL change refuses a certificate on all three with certificate_revoked,
  a resumption with a ticket from before the revocation too.
- One beacon killed with SIGKILL amid a run of uploads: the agents send
  again what got no 201, and every upload that got one is stored, whole,
  on some beacon (ACKNOWLEDGED_CHECKS).

Which beacon served a connection is read from the beacons themselves: the
access-log line of the request's unique path, and the per-beacon counters
of the control socket.
"""

import os
import random
import shutil
import socket
import ssl
import threading

import pytest

from certkit import alert_name
from fleet import Fleet, wait_for
from natsfix import NatsServer, read_stream, uploads_in
from helpers import (BACKEND, ConnectionClosed, Server, build_request, client_context,
                     tls_connect, unique_name)
from test_proxy_protocol import v1_header, v2_header
from trustkit import ctl, drop, make_crl, new_ticket_key_line, reload, upload, wait_until

pytestmark = [
    pytest.mark.skipif(shutil.which("haproxy") is None and not os.path.exists("/usr/sbin/haproxy"),
                       reason="haproxy not installed (scripts/setup.sh installs it)"),
    # HAProxy reaches the beacons over loopback; the DPDK runs keep them on a tap.
    pytest.mark.skipif(BACKEND != "kernel", reason="the fleet runs on the kernel transport"),
]

UP = "/ManageSoftRL/Inventories/"
VERSIONS = {"1.3": ssl.TLSVersion.TLSv1_3, "1.2": ssl.TLSVersion.TLSv1_2}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, pki):
    nats = NatsServer(tmp_path_factory.mktemp("fleet-nats")).start()
    f = Fleet(tmp_path_factory.mktemp("fleet"), pki, nats_url=nats.url)
    f.nats = nats
    try:
        f.start()
        yield f
    finally:
        try:
            f.stop()
        finally:
            nats.stop()


def pinned(pki, name, version):
    v = VERSIONS[version]
    return client_context(pki, name, min_version=v, max_version=v)


def put(target, ctx, session=None, body=b"fleet upload\n"):
    """One PUT of `body` to a new path on a fresh connection to `target`.
    Returns (path, Response, reused?, the connection's new session, the
    client's own "ADDR:PORT")."""
    path = UP + unique_name("fleet")
    with tls_connect(target, ctx=ctx, session=session) as c:
        reused = c.tls.session_reused
        addr, port = c.tls.getsockname()[:2]
        c.send(build_request("PUT", path, body=body))
        resp = c.read_response()
        return path, resp, reused, c.tls.session, f"{addr}:{port}"


def served_by(fleet, path, client):
    """The beacon that logged the request for `path`; its access line must
    name the agent's own address and port, not HAProxy's."""
    i, line = fleet.access_line(path)
    assert f"access: {client} " in line, (
        f"beacon{i + 1} logged another address than the agent's {client}: {line}")
    return i


def resumed_counts(fleet):
    return [s["handshakes_resumed"] for s in fleet.stats()]


# --------------------------------------------------------------------------
# Sessions across the fleet


@pytest.mark.parametrize("version", list(VERSIONS))
def test_session_resumes_on_another_beacon(fleet, pki, version):
    ctx = pinned(pki, "agent1", version)
    before = resumed_counts(fleet)
    path, resp, reused, session, client = put(fleet.balancer, ctx)
    assert resp.status == 201 and not reused, resp
    assert session is not None and session.has_ticket, "no session ticket issued"
    issuer = served_by(fleet, path, client)
    served = []
    for _ in range(len(fleet.beacons)):
        path, resp, reused, _, client = put(fleet.balancer, ctx, session)
        assert resp.status == 201, resp
        assert reused, f"TLS {version} ticket from beacon{issuer + 1} not resumed"
        served.append(served_by(fleet, path, client))
    assert set(served) - {issuer}, (
        f"round robin never sent a resumption past beacon{issuer + 1}: {served}")
    after = resumed_counts(fleet)
    assert [a - b for a, b in zip(after, before)] == \
        [served.count(i) for i in range(len(fleet.beacons))], (before, after, served)


@pytest.mark.parametrize("version", list(VERSIONS))
def test_ticket_from_another_key_file_is_not_resumed(fleet, pki, tmp_path, version):
    """An attacker's beacon (same PKI, its own ticket key file) issues the
    ticket: no beacon of the fleet can decrypt it, each does a full
    handshake, which verifies the certificate again."""
    keys = tmp_path / "other-tickets.keys"
    keys.write_text(new_ticket_key_line() + "\n")
    os.chmod(keys, 0o600)
    other = Server(tmp_path / "other", pki, {"server": {"workers": "1", "watch": "no"},
                                             "tls": {"ticket_key_file": str(keys)}})
    other.start()
    try:
        ctx = pinned(pki, "agent1", version)
        _, resp, _, session, _ = put(other, ctx)
        assert resp.status == 201 and session is not None and session.has_ticket, resp
        # The ticket works where it came from: the attempt below is a real one.
        _, resp, reused, _, _ = put(other, ctx, session)
        assert resp.status == 201 and reused, "the other beacon did not resume its own ticket"
    finally:
        other.stop()
    before = resumed_counts(fleet)
    tried = set()
    for _ in range(2 * len(fleet.beacons)):
        path, resp, reused, _, client = put(fleet.balancer, ctx, session)
        assert resp.status == 201, resp
        assert not reused, f"a TLS {version} ticket under a foreign key resumed"
        tried.add(served_by(fleet, path, client))
        if len(tried) == len(fleet.beacons):
            break
    assert tried == set(range(len(fleet.beacons))), f"only beacons {tried} were tried"
    assert resumed_counts(fleet) == before


def test_beacons_see_the_agents_address(fleet, pki):
    """Every beacon logs the agent's address (HAProxy's PROXY v2 header),
    and HAProxy's health checks, which send the header too, are not
    refused."""
    ctx = client_context(pki, "agent1")
    seen = set()
    for _ in range(2 * len(fleet.beacons)):
        path, resp, _, _, client = put(fleet.balancer, ctx)
        assert resp.status == 201, resp
        seen.add(served_by(fleet, path, client))
        if len(seen) == len(fleet.beacons):
            break
    assert seen == set(range(len(fleet.beacons))), seen
    assert [s["proxy_refused"] for s in fleet.stats()] == [0] * len(fleet.beacons)


def client_hello(pki):
    """The bytes of a real TLS ClientHello (Python's ssl, in memory)."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_context(pki, "agent1").wrap_bio(inc, out, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


@pytest.mark.parametrize("header", [v2_header("198.18.7.7", 4444),
                                    v1_header("198.18.7.7", 4444)], ids=["v2", "v1"])
def test_agents_own_proxy_header_is_not_an_address(fleet, pki, header):
    """An agent that sends a PROXY header of its own through the balancer,
    to pass for another address: HAProxy's header came first, so the
    agent's is the start of its TLS stream, refused as such without a
    byte of TLS, logged under the agent's real address; the claimed one
    appears nowhere."""
    before = [s["handshake_failures"] for s in fleet.stats()]
    with socket.create_connection((fleet.balancer.host, fleet.balancer.port), timeout=10) as raw:
        client = "%s:%d" % raw.getsockname()[:2]
        raw.sendall(header + client_hello(pki))
        got = b""
        while True:
            data = raw.recv(65536)
            if not data:
                break
            got += data
    assert got == b"", f"beacond answered a stream that began with a PROXY header: {got[:64]!r}"

    def refused():
        d = [s["handshake_failures"] - b for s, b in zip(fleet.stats(), before)]
        return d if sum(d) else None
    delta = wait_for(refused, 30, "a beacon to count the refused handshake")
    assert sorted(delta) == [0] * (len(delta) - 1) + [1], delta
    i = delta.index(1)
    assert wait_until(lambda: f"{client}: refused: handshake:" in fleet.logs(i), 30), \
        fleet.logs(i)[-2000:]
    for j in range(len(fleet.beacons)):
        assert "198.18.7.7" not in fleet.logs(j), f"beacon{j + 1} took the agent's claim"
    assert [s["proxy_refused"] for s in fleet.stats()] == [0] * len(fleet.beacons)


# --------------------------------------------------------------------------
# Revocation across the fleet


def refused_by(fleet, name, ctx, session=None):
    """One upload attempt through HAProxy that must be refused with
    certificate_revoked; returns the beacon that counted the refusal."""
    before = [s["handshakes"]["revoked"] for s in fleet.stats()]
    kind, detail, info = upload(fleet.balancer, name, ctx=ctx, session=session)
    assert kind != "response", f"revoked {name} got an HTTP response: {detail}"
    assert info["reused"] is not True, f"revoked {name}'s session was resumed"
    assert alert_name(info["error"]) == "certificate_revoked", detail

    def counted():
        d = [s["handshakes"]["revoked"] - b for s, b in zip(fleet.stats(), before)]
        return d if sum(d) else None
    delta = wait_for(counted, 30, "a beacon to count the revocation")
    assert sorted(delta) == [0] * (len(delta) - 1) + [1], delta
    return delta.index(1)


def refused_by_all(fleet, name, ctx, session=None):
    seen = set()
    for _ in range(2 * len(fleet.beacons)):
        seen.add(refused_by(fleet, name, ctx, session))
        if len(seen) == len(fleet.beacons):
            return
    assert seen == set(range(len(fleet.beacons))), f"only beacons {seen} were reached"


def test_crl_change_refuses_on_every_beacon(fleet, pki, tmp_path):
    """agent2's tickets, issued before its revocation, resume anywhere;
    after the CRL lands in the shared crl_dir and each beacon reloads it,
    every beacon refuses agent2 with certificate_revoked, with or without
    a ticket. agent1 keeps resuming."""
    sessions = {}
    for who in ("agent1", "agent2"):
        for version in VERSIONS:
            ctx = pinned(pki, who, version)
            _, resp, _, session, _ = put(fleet.balancer, ctx)
            assert resp.status == 201 and session.has_ticket, resp
            _, resp, reused, _, _ = put(fleet.balancer, ctx, session)
            assert resp.status == 201 and reused, f"{who} TLS {version}: no resumption before"
            sessions[who, version] = (ctx, session)
    crl = make_crl(pki, tmp_path / "agent2.crl.pem", revoke=["agent2"])
    drop(fleet.crl_dir / "agents.crl", crl.read_bytes())
    for b in fleet.beacons:
        reload(b, "crl")
    for version in VERSIONS:
        ctx, session = sessions["agent2", version]
        refused_by_all(fleet, "agent2", pinned(pki, "agent2", version))
        refused_by_all(fleet, "agent2", ctx, session)
        ctx, session = sessions["agent1", version]
        for _ in fleet.beacons:
            _, resp, reused, _, _ = put(fleet.balancer, ctx, session)
            assert resp.status == 201 and reused, f"agent1 TLS {version} stopped resuming"


# --------------------------------------------------------------------------
# A beacon killed amid uploads


class Agent(threading.Thread):
    """Uploads through the balancer until told to stop; an upload that gets
    no 201 (a refused or cut connection, another status) is sent again, on
    a new connection, at most `tries` times. Uploads of random content and
    size, each under a name of its own."""

    def __init__(self, fleet, pki, name, seed, tries=10, most=300):
        super().__init__(daemon=True)
        self.target = fleet.balancer
        self.ctx = client_context(pki, name)
        self.device = f"{name}.example"
        self.rng = random.Random(seed)
        self.tries, self.most = tries, most
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acked = {}  # name -> body, once a 201 came
        self.sent = {}  # name -> body, everything attempted
        self.failures = []  # (name, what went wrong)
        self.given_up = []
        self.error = None

    def count(self):
        with self.lock:
            return len(self.acked)

    def attempt(self, path, body):
        try:
            with tls_connect(self.target, ctx=self.ctx) as c:
                c.send(build_request("PUT", path, body=body))
                return c.read_response(30)
        except (ConnectionClosed, ConnectionError, ssl.SSLError) as e:
            return e

    def upload_one(self):
        name = unique_name("kill9")
        body = self.rng.randbytes(self.rng.randint(1, 96 * 1024))
        with self.lock:
            self.sent[name] = body
        for _ in range(self.tries):
            got = self.attempt(UP + name, body)
            if getattr(got, "status", None) == 201:
                with self.lock:
                    self.acked[name] = body
                return
            with self.lock:
                self.failures.append((name, repr(got)))
        with self.lock:
            self.given_up.append(name)

    def run(self):
        try:
            while not self.stop.is_set() and len(self.sent) < self.most:
                self.upload_one()
        except BaseException as e:  # reported by the test, not lost in the thread
            self.error = e


def assert_acknowledged_in_some_store(fleet, agents):
    """Every upload an agent got a 201 for is in some beacon's store, and
    every stored copy of any upload of the run (a retry can store one
    twice) has exactly the bytes the agent sent."""
    sent = {}
    for a in agents:
        sent.update({(a.device, n): b for n, b in a.sent.items()})
    stored = {}
    for b in fleet.beacons:
        for device in {a.device for a in agents}:
            for row in b.uploads(device):
                key = (device, row["name"])
                if key in sent:
                    assert b.upload_bytes(row["id"]) == sent[key], \
                        f"{b.dir.name} upload {row['id']} ({key}): bytes differ from the agent's"
                    stored.setdefault(key, []).append(b.dir.name)
    for a in agents:
        for n in a.acked:
            assert (a.device, n) in stored, f"{n} got a 201 but no beacon stored it"


def assert_every_stored_upload_in_the_stream_once(fleet, agents):
    """Each beacon drains into the one stream: once every drain caught up,
    every upload any beacon stored (the killed one's too, drained after its
    restart) is in the stream exactly once under its beacon's id, whole, and
    nothing else is. An upload an agent sent again after a lost 201 through
    the balancer may be stored by two beacons: two uploads, each once."""
    def drained():
        states = [ctl(b, {"cmd": "status"})["drain"] for b in fleet.beacons]
        return all(d["state"] == "connected" and d["lag_uploads"] == 0 for d in states)
    wait_for(drained, 120, "every beacon's drain to catch up")
    by_beacon = {}
    for m in read_stream(fleet.nats.port, "BEACON_UPLOADS"):
        by_beacon.setdefault(m.headers["Beacon-Id"], []).append(m)
    sent = {(a.device, n): b for a in agents for n, b in a.sent.items()}
    for i, b in enumerate(fleet.beacons):
        stored = {r["id"]: r for r in b.uploads()}
        in_stream = uploads_in(by_beacon.pop(f"beacon{i + 1}", []))
        assert sorted(in_stream) == sorted(stored), (
            f"beacon{i + 1}: store {len(stored)} uploads, stream {len(in_stream)}")
        for uid, (headers, body) in in_stream.items():
            assert headers["Device"] == stored[uid]["device"], (uid, headers)
            key = (headers["Device"], headers["Name"])
            if key in sent:
                assert body == sent[key], f"beacon{i + 1} upload {uid}: body differs"
    assert not by_beacon, f"messages from no beacon of the fleet: {sorted(by_beacon)}"


# The checks that the uploads acknowledged in the kill -9 run made it where
# they belong; each is called as check(fleet, agents).
ACKNOWLEDGED_CHECKS = [assert_acknowledged_in_some_store,
                       assert_every_stored_upload_in_the_stream_once]


def hold_upload_open(fleet, pki, body):
    """An upload through the balancer with half its body sent; returns the
    connection and the beacon it reached (the one whose handshake count
    moved: health checks do not handshake)."""
    before = [s["handshakes"]["ok"] for s in fleet.stats()]
    conn = tls_connect(fleet.balancer, ctx=client_context(pki, "agent3"))
    path = UP + unique_name("held")
    conn.send(build_request("PUT", path, body=body)[:-len(body) // 2])

    def reached():
        d = [s["handshakes"]["ok"] - b for s, b in zip(fleet.stats(), before)]
        return d if sum(d) else None
    delta = wait_for(reached, 30, "the held upload's handshake")
    assert sorted(delta) == [0] * (len(delta) - 1) + [1], delta
    return conn, path, delta.index(1)


def test_kill9_amid_uploads_loses_nothing_acknowledged(fleet, pki):
    held_body = random.Random(7).randbytes(64 * 1024)
    conn, held_path, victim = hold_upload_open(fleet, pki, held_body)
    agents = [Agent(fleet, pki, name, seed) for seed, name in
              enumerate(("agent1", "agent3", "agent1"))]
    for a in agents:
        a.start()
    try:
        step = 8
        wait_for(lambda: all(a.count() >= step for a in agents), 120, "uploads before the kill")
        fleet.kill9(victim)
        at_kill = [a.count() for a in agents]
        # The upload held on the killed beacon is cut off, never answered.
        with conn:
            try:
                conn.send(build_request("PUT", held_path, body=held_body)[-len(held_body) // 2:])
                got = conn.read_response(30)
            except (ConnectionClosed, ConnectionError, ssl.SSLError) as e:
                got = e
        assert not hasattr(got, "status"), f"an upload on a killed beacon was answered: {got}"
        wait_for(lambda: all(a.count() >= n + step for a, n in zip(agents, at_kill)), 120,
                 "uploads after the kill")
    finally:
        for a in agents:
            a.stop.set()
        for a in agents:
            a.join(120)
    for a in agents:
        assert a.error is None, f"agent thread failed: {a.error!r}"
        assert not a.given_up, f"{a.device} gave up on {a.given_up}: {a.failures[-5:]}"
    # The held upload again, as its agent would: through the balancer.
    path, resp, _, _, client = put(fleet.balancer, client_context(pki, "agent3"), body=held_body)
    assert resp.status == 201, resp
    assert served_by(fleet, path, client) != victim
    fleet.restart(victim)
    held_name = held_path.rsplit("/", 1)[1]
    for b in fleet.beacons:
        assert not [r for r in b.uploads("agent3.example") if r["name"] == held_name], \
            f"{b.dir.name} stored the upload cut off by the kill"
    # The killed beacon had acknowledged uploads of its own before the kill:
    # the checks below read them from its store after the restart.
    acked = {(a.device, n) for a in agents for n in a.acked}
    kept = [r for device in {a.device for a in agents}
            for r in fleet.beacons[victim].uploads(device) if (device, r["name"]) in acked]
    assert kept, f"beacon{victim + 1} stored none of the acknowledged uploads before its kill"
    for check in ACKNOWLEDGED_CHECKS:
        check(fleet, agents)
