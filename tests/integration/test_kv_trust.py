"""Trust for a fleet from a JetStream key-value bucket (issue 16 item 8):
[trust] kv_bucket, against a real nats-server with JetStream (natsfix.py).

The bucket is made and written from the test in raw NATS protocol, as an
operator's `nats kv` would: KV_<bucket> stream, a put is a publish to
$KV.<bucket>.<key>, a delete a publish with the KV-Operation: DEL header.
Each change is waited on through the beacon's own log line for it (the
reload named kv:<key>) and its reload counters, never a fixed sleep.
"""

import json
import os
import shutil
import subprocess

import pytest

from helpers import BEACOND
from natsfix import NatsClient, NatsServer
from trustkit import (assert_admitted, assert_refused, corrupt_crl_signature, ctl, make_crl,
                      reload, wait_until)

BUCKET = "fleet_trust"


class KvClient(NatsClient):
    """NatsClient plus a publish that waits for JetStream's ack."""

    def publish(self, subject, body, headers=None):
        self.n += 1
        inbox = f"_INBOX.test.{self.n}"
        if headers:
            hdr = ("NATS/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                   + "\r\n").encode()
            self.sock.sendall(f"HPUB {subject} {inbox} {len(hdr)} {len(hdr) + len(body)}\r\n"
                              .encode() + hdr + body + b"\r\n")
        else:
            self.sock.sendall(f"PUB {subject} {inbox} {len(body)}\r\n".encode() + body + b"\r\n")
        while True:
            line = self._line()
            if line == b"PING":
                self.sock.sendall(b"PONG\r\n")
                continue
            parts = line.split()
            if parts and parts[0] in (b"MSG", b"HMSG"):
                data = self._exact(int(parts[-1]))
                if parts[1].decode() == inbox:
                    if parts[0] == b"HMSG":
                        data = data[int(parts[-2]):]
                    ack = json.loads(data)
                    assert "error" not in ack, ack
                    return ack


def kv_create(port, bucket=BUCKET):
    """The stream `nats kv add` makes for a bucket."""
    c = NatsClient(port)
    try:
        r = c.request(f"$JS.API.STREAM.CREATE.KV_{bucket}", {
            "name": f"KV_{bucket}", "subjects": [f"$KV.{bucket}.>"], "retention": "limits",
            "max_msgs_per_subject": 1, "discard": "new", "storage": "file", "num_replicas": 1,
            "allow_rollup_hdrs": True, "deny_delete": True, "deny_purge": False,
            "allow_direct": True, "max_consumers": -1, "max_msgs": -1, "max_bytes": -1,
            "max_age": 0, "duplicate_window": 120000000000})
        assert "error" not in r, r
    finally:
        c.close()


def kv_put(nats, key, value, bucket=BUCKET):
    c = KvClient(nats.port)
    try:
        return c.publish(f"$KV.{bucket}.{key}", value)
    finally:
        c.close()


def kv_delete(nats, key, bucket=BUCKET):
    c = KvClient(nats.port)
    try:
        return c.publish(f"$KV.{bucket}.{key}", b"", {"KV-Operation": "DEL"})
    finally:
        c.close()


@pytest.fixture
def nats(tmp_path):
    srv = NatsServer(tmp_path / "nats").start()
    kv_create(srv.port)
    yield srv
    srv.stop()


@pytest.fixture
def beacon(tmp_path, pki, start_server, nats):
    """Factory: a beacond watching the bucket, with its own crl_dir (CRLs
    given as (name, bytes)); returns it once its watch has read the bucket."""

    def factory(crls=()):
        d = tmp_path / f"beacon-{len(os.listdir(tmp_path))}"
        (d / "crl").mkdir(parents=True)
        for name, data in crls:
            (d / "crl" / name).write_bytes(data)
        shutil.copy(pki / "server.key", d / "server.key")
        os.chmod(d / "server.key", 0o600)
        srv = start_server({
            "server": {"watch": "no"},
            "tls": {"issuers": str(pki / "issuers"), "cert": str(pki / "server.pem"),
                    "key": str(d / "server.key"), "crl_dir": str(d / "crl")},
            "trust": {"kv_bucket": BUCKET, "kv_nats": nats.url},
        })
        assert wait_until(lambda: "watching for changes" in srv.stderr(), 30), srv.stderr()
        return srv

    return factory


def applied(srv, key, n=1):
    """Waits for the n-th reload of kv:<key> to take effect: its "reload
    kv:<key>: trust snapshot N" line, written once the snapshot is in
    force. "no longer in the bucket" comes before its snapshot is made (a
    loaded CI run connected between the two and was refused), so it does
    not count."""
    def taken():
        err = srv.stderr()
        return (err.count(f"reload kv:{key}: ")
                - err.count(f"reload kv:{key}: no longer in the bucket"))
    ok = wait_until(lambda: taken() >= n, 30)
    assert ok, f"kv:{key} not applied {n} times:\n{srv.stderr()[-3000:]}"


def refused(srv, key, n=1):
    ok = wait_until(lambda: srv.stderr().count(
        f"reload kv:{key} refused, the running trust stays in force: kv:{key}") >= n, 30)
    assert ok, f"kv:{key} not refused {n} times:\n{srv.stderr()[-3000:]}"


def reload_counts(srv):
    s = ctl(srv, {"cmd": "stats"})
    return s["reload_successes"], s["reload_failures"]


def kv_counts(srv):
    s = ctl(srv, {"cmd": "stats"})
    return s["trust_kv_applied"], s["trust_kv_refused"], s["trust_kv_connected"]


@pytest.fixture(scope="module")
def crls(pki, tmp_path_factory):
    d = tmp_path_factory.mktemp("kvcrl")
    return {
        "agent3": make_crl(pki, d / "agent3.pem", revoke=["agent3"]).read_bytes(),
        "agent3_der": make_crl(pki, d / "agent3.der", revoke=["agent3"], der=True).read_bytes(),
        "agent2": make_crl(pki, d / "agent2.pem", revoke=["agent2"]).read_bytes(),
        "rogue": make_crl(pki, d / "rogue.pem", revoke=["agent3"], ca="rogue-ca").read_bytes(),
        "bad_sig": corrupt_crl_signature(d / "agent3.pem", d / "bad.der").read_bytes(),
    }


def test_kv_crl_revokes_on_two_beacons(beacon, nats, crls):
    a, b = beacon(), beacon()
    for srv in (a, b):
        assert_admitted(srv, "agent3")
    kv_put(nats, "crl.agents", crls["agent3"])
    for srv in (a, b):
        applied(srv, "crl.agents")
        assert_refused(srv, "agent3", alert="certificate_revoked")
        assert_admitted(srv, "agent1")
    # DER as well as PEM, replacing the value under the same key.
    kv_put(nats, "crl.agents", crls["agent3_der"])
    for srv in (a, b):
        applied(srv, "crl.agents", 2)
        assert_refused(srv, "agent3", alert="certificate_revoked")
    # A deleted key takes its CRL out.
    kv_delete(nats, "crl.agents")
    for srv in (a, b):
        applied(srv, "crl.agents", 3)
        assert_admitted(srv, "agent3")
        srv.assert_alive()


BAD_CRLS = [
    pytest.param(lambda c: b"-----BEGIN X509 CRL-----\nnot base64 at all!\n"
                 b"-----END X509 CRL-----\n", id="malformed-pem"),
    pytest.param(lambda c: b"\x30\x82\x01\x00" + os.urandom(64), id="malformed-der"),
    pytest.param(lambda c: c["rogue"], id="signed-by-untrusted-ca"),
    pytest.param(lambda c: c["bad_sig"], id="bad-signature"),
]


@pytest.mark.parametrize("bad", BAD_CRLS)
def test_kv_bad_crl_refused_old_trust_stays(beacon, nats, crls, bad):
    srv = beacon()
    kv_put(nats, "crl.agents", crls["agent3"])
    applied(srv, "crl.agents")
    assert_refused(srv, "agent3", alert="certificate_revoked")
    ok0, failed0 = reload_counts(srv)
    assert kv_counts(srv) == (1, 0, 1)
    gen0 = ctl(srv, {"cmd": "status"})["snapshot_generation"]
    # Over the good value's key, and under a key of its own.
    kv_put(nats, "crl.agents", bad(crls))
    refused(srv, "crl.agents")
    kv_put(nats, "crl.other", bad(crls))
    refused(srv, "crl.other")
    assert reload_counts(srv) == (ok0, failed0 + 2)
    assert kv_counts(srv) == (1, 2, 1)
    assert ctl(srv, {"cmd": "status"})["snapshot_generation"] == gen0
    assert_admitted(srv, "agent1")
    assert_refused(srv, "agent3", alert="certificate_revoked")
    # The refused values are not kept for later: a file reload builds
    # from the last good ones and passes.
    reload(srv, "all")
    assert_refused(srv, "agent3", alert="certificate_revoked")
    assert_admitted(srv, "agent1")
    srv.assert_alive()


def test_kv_blocklist_blocks_and_delete_restores(beacon, nats):
    srv = beacon()
    assert_admitted(srv, "agent3")
    kv_put(nats, "blocklist", b"# from the fleet\ndevice:agent3.example\n")
    applied(srv, "blocklist")
    assert_refused(srv, "agent3", alert="access_denied")
    assert_admitted(srv, "agent1")
    # A bad block list is refused like a bad file: the old one stays.
    _, failed0 = reload_counts(srv)
    kv_put(nats, "blocklist", b"device:agent1.example\nsha256:nothex\n")
    refused(srv, "blocklist")
    assert reload_counts(srv)[1] == failed0 + 1
    assert_admitted(srv, "agent1")
    assert_refused(srv, "agent3", alert="access_denied")
    kv_delete(nats, "blocklist")
    applied(srv, "blocklist", 2)
    assert_admitted(srv, "agent3")
    srv.assert_alive()


def test_kv_beside_crl_dir(beacon, nats, crls):
    srv = beacon(crls=[("agent2.crl", crls["agent2"])])
    assert_refused(srv, "agent2", alert="certificate_revoked")
    assert_admitted(srv, "agent3")
    kv_put(nats, "crl.agents", crls["agent3"])
    applied(srv, "crl.agents")
    assert_refused(srv, "agent2", alert="certificate_revoked")
    assert_refused(srv, "agent3", alert="certificate_revoked")
    # A file reload keeps the bucket's CRL.
    reload(srv, "crl")
    assert_refused(srv, "agent3", alert="certificate_revoked")
    kv_delete(nats, "crl.agents")
    applied(srv, "crl.agents", 2)
    assert_refused(srv, "agent2", alert="certificate_revoked")
    assert_admitted(srv, "agent3")


def test_kv_nats_down_trust_stays_then_reconnects(beacon, nats, crls):
    srv = beacon()
    kv_put(nats, "crl.agents", crls["agent3"])
    applied(srv, "crl.agents")
    assert kv_counts(srv)[2] == 1
    nats.kill()
    assert wait_until(lambda: kv_counts(srv)[2] == 0, 60), srv.stderr()[-3000:]
    assert_refused(srv, "agent3", alert="certificate_revoked")
    assert_admitted(srv, "agent1")
    nats.start()
    assert wait_until(lambda: kv_counts(srv)[2] == 1, 60), srv.stderr()[-3000:]
    kv_put(nats, "blocklist", b"device:agent1.example\n")
    applied(srv, "blocklist")
    assert_refused(srv, "agent1", alert="access_denied")
    assert_refused(srv, "agent3", alert="certificate_revoked")
    srv.assert_alive()


@pytest.mark.parametrize("lines,reason", [
    (["kv_bucket = fleet"], "[trust] kv_bucket is set but neither [trust] kv_nats nor [drain] "
     "nats names a NATS server"),
    (["kv_nats = nats://127.0.0.1:4222", "kv_bucket = fleet.trust"],
     "[trust] kv_bucket: 'fleet.trust' is not a bucket name"),
    (["kv_bucket = fleet", "kv_nats = http://127.0.0.1:4222"],
     "[trust] kv_nats: 'http://127.0.0.1:4222' is not a comma-separated list"),
])
def test_bad_kv_value_names_file_and_line(start_server, lines, reason):
    srv = start_server(start=False)
    conf = srv.conf.read_text().splitlines() + ["[trust]"] + lines
    srv.conf.write_text("\n".join(conf) + "\n")
    p = subprocess.run([str(BEACOND), "-t", "-c", str(srv.conf)], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30)
    err = p.stderr.decode()
    assert p.returncode != 0
    assert f"{srv.conf}:{len(conf)}: " in err and reason in err, err


def test_kv_bucket_made_anew_while_away_drops_its_old_keys(beacon, nats, crls):
    """NATS comes back with the bucket empty (its store lost, or the bucket
    removed and added again): no delete marker tells of the old keys, and
    the beacon takes them out when its watch reads the bucket anew."""
    srv = beacon()
    kv_put(nats, "crl.agents", crls["agent3"])
    applied(srv, "crl.agents")
    assert_refused(srv, "agent3", alert="certificate_revoked")
    nats.kill()
    assert wait_until(lambda: kv_counts(srv)[2] == 0, 60), srv.stderr()[-3000:]
    shutil.rmtree(nats.dir / "js")
    nats.start()
    kv_create(nats.port)
    applied(srv, "crl.agents", 2)
    assert "reload kv:crl.agents: no longer in the bucket" in srv.stderr()
    assert_admitted(srv, "agent3")
    srv.assert_alive()


def kv_beacon_config(pki, d, nats, **trust):
    (d / "crl").mkdir(parents=True)
    shutil.copy(pki / "server.key", d / "server.key")
    os.chmod(d / "server.key", 0o600)
    return {"server": {"watch": "no"},
            "tls": {"issuers": str(pki / "issuers"), "cert": str(pki / "server.pem"),
                    "key": str(d / "server.key"), "crl_dir": str(d / "crl")},
            "trust": {"kv_bucket": BUCKET, "kv_nats": nats.url, **trust}}


def test_kv_unreachable_at_start_does_not_serve_with_file_trust_alone(
        tmp_path, pki, start_server, nats, crls):
    """The attack: agent3 is revoked only in the bucket, and NATS is out of
    reach while a beacon starts. Serving with the files' trust would admit
    agent3 until the bucket is read; beacond refuses to start instead,
    naming the bucket and why, once [trust] kv_wait has passed."""
    kv_put(nats, "crl.agents", crls["agent3"])
    nats.stop()
    srv = start_server(kv_beacon_config(pki, tmp_path / "b", nats, kv_wait="1s"), start=False)
    with pytest.raises(AssertionError) as e:
        srv.start()
    srv.proc = None  # it exited as it should: nothing for the fixture to stop
    assert "exited with status 1 during start-up" in str(e.value), str(e.value)
    assert (f"trust kv {BUCKET}: the bucket was not read within [trust] kv_wait (1000 ms): "
            in srv.stderr()), srv.stderr()
    assert "not serving with the files' trust alone" in srv.stderr()


def test_kv_read_before_serving_revokes_from_the_first_connection(
        tmp_path, pki, start_server, nats, crls):
    kv_put(nats, "crl.agents", crls["agent3"])
    srv = start_server(kv_beacon_config(pki, tmp_path / "b", nats))
    assert_refused(srv, "agent3", alert="certificate_revoked")
    assert_admitted(srv, "agent1")


def test_kv_wait_0_serves_at_once_then_applies_the_bucket(tmp_path, pki, start_server, nats,
                                                          crls):
    """kv_wait = 0 is the operator's choice of availability: the files'
    trust serves while NATS is away, the bucket applies once it is read."""
    kv_put(nats, "crl.agents", crls["agent3"])
    nats.stop()
    srv = start_server(kv_beacon_config(pki, tmp_path / "b", nats, kv_wait="0"))
    assert_admitted(srv, "agent3")
    nats.start()
    applied(srv, "crl.agents")
    assert_refused(srv, "agent3", alert="certificate_revoked")
