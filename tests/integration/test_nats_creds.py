"""Logging in to NATS with a .creds file (issue 16 item 1: "credentials
(user/password or a creds/nkey file)"), against a real nats-server in
operator mode: it trusts an operator JWT, knows one account (JetStream on)
from a preload, and admits any user whose JWT that account signed and who
proves, by signing the server's nonce, that it holds the JWT's key. The
operator, accounts, users and .creds files are made by natsjwt.py (nsc is
not installed); the test's own reader logs in with a user JWT of its own.

A good .creds file drains every upload exactly once and serves
beacon-consume and the trust bucket; a user JWT signed by an account the
operator never issued, or a seed that is not the JWT's key, leaves the
drain "disconnected" with the server's refusal, while agents keep getting
201 and the lag counts every upload that waits.
"""

import os
import signal
import subprocess
import time

import pytest

from natsjwt import JwtNatsClient, NKey, Operator, creds_text, read_stream_jwt, user_jwt
from natsfix import uploads_in
from test_consume import CONSUME, files_under
from test_drain import STREAM, drain_config, status, upload_many, wait_drained, wait_for
from test_kv_trust import BUCKET, KvClient, applied
from test_nats_auth import assert_refused_but_ingesting, stream_messages, wait_connected
from trustkit import assert_admitted, assert_refused, make_crl, wait_until


@pytest.fixture
def operator():
    return Operator()


@pytest.fixture
def ns(operator, tmp_path):
    # debug: the server's log then says why it refused a login, not only
    # that it did, so that each refusal test can tell which check failed.
    srv = operator.server(tmp_path / "nats-op", extra=["debug: true"]).start()
    yield srv
    srv.stop()


def write_creds(path, jwt_text, seed):
    path.write_text(creds_text(jwt_text, seed))
    path.chmod(0o600)
    return str(path)


def good_creds(operator, tmp_path, name="beacon"):
    jwt_text, key = operator.user(name)
    return write_creds(tmp_path / f"{name}.creds", jwt_text, key.seed)


def assert_in_stream_once(srv, ns, sent):
    stored = {r["id"]: r for r in srv.uploads()}
    got = uploads_in(read_stream_jwt(ns, STREAM))
    assert sorted(got) == sorted(stored), (sorted(got), sorted(stored))
    assert sorted(h["Name"] for h, _ in got.values()) == sorted(sent)
    for h, body in got.values():
        assert body == sent[h["Name"]], h
        assert h["Nats-Msg-Id"] == f"b1.{h['Upload-Id']}"
    return got


def test_creds_file_logs_in_and_drains_every_upload_once(start_server, operator, ns, tmp_path):
    creds = good_creds(operator, tmp_path)
    srv = start_server(drain_config(ns.url, creds=creds))
    wait_connected(srv)
    sent = upload_many(srv, 5)
    wait_drained(srv)
    assert_in_stream_once(srv, ns, sent)
    st = status(srv)
    assert st["uploads_acked"] == 5 and st["lag_uploads"] == 0, st


def test_beacon_consume_with_the_same_creds_reads_the_stream(start_server, operator, ns,
                                                             tmp_path):
    creds = good_creds(operator, tmp_path)
    srv = start_server(drain_config(ns.url, creds=creds))
    sent = upload_many(srv, 4)
    wait_drained(srv)
    out = tmp_path / "out"
    out.mkdir()
    p = subprocess.run([CONSUME, "--nats", ns.url, "--creds", creds, "--dir", str(out),
                        "--ack-wait", "2", "--once"], capture_output=True, timeout=120)
    err = p.stderr.decode(errors="replace")
    assert p.returncode == 0, err
    assert "4 written, 0 older skipped, 0 refused, 0 bad checksum" in err, err
    files, other = files_under(out)
    assert other == [], other
    # test_consume.expected_files reads the stream without a login, which
    # this server refuses; every name here is new, so each path has one upload.
    want = {}
    for h, body in uploads_in(read_stream_jwt(ns, STREAM)).values():
        want[f"{h['Device']}/{h['Category']}/{h['Name']}"] = body
    assert files == want
    assert sorted(b for b in files.values()) == sorted(sent.values())


def untrusted_account_creds(operator, tmp_path):
    """A user JWT signed by an account key the operator never issued: the
    server finds no such account."""
    rogue_account = NKey("account")
    key = NKey("user")
    return write_creds(tmp_path / "rogue.creds", user_jwt(rogue_account, key.public), key.seed)


def foreign_seed_creds(operator, tmp_path):
    """A good user JWT with another user's seed: the nonce's signature does
    not verify against the JWT's key."""
    jwt_text, _ = operator.user("beacon")
    _, other = operator.user("other")
    return write_creds(tmp_path / "foreign.creds", jwt_text, other.seed)


@pytest.mark.parametrize("make, server_reason", [
    (untrusted_account_creds, "Account JWT lookup error: account missing"),
    (foreign_seed_creds, "Signature not verified"),
], ids=["untrusted-account", "seed-not-the-jwt-key"])
def test_bad_creds_are_refused_and_ingest_goes_on(start_server, operator, ns, tmp_path, make,
                                                  server_reason):
    creds = make(operator, tmp_path)
    srv = start_server(drain_config(ns.url, creds=creds))
    assert_refused_but_ingesting(srv, "authorization violation")
    assert stream_messages(ns) == 0
    assert server_reason in ns.log.read_text(), ns.log.read_text()[-3000:]


class JwtKvClient(KvClient):
    """test_kv_trust's KvClient, logged in with a user JWT."""
    __init__ = JwtNatsClient.__init__


def kv_bucket_as(ns):
    """The bucket's stream, as test_kv_trust.kv_create makes it, by the
    server's reader user (this server admits no one without a JWT)."""
    c = JwtKvClient(ns.port, *ns.jwt_reader)
    try:
        r = c.request(f"$JS.API.STREAM.CREATE.KV_{BUCKET}", {
            "name": f"KV_{BUCKET}", "subjects": [f"$KV.{BUCKET}.>"], "retention": "limits",
            "max_msgs_per_subject": 1, "discard": "new", "storage": "file", "num_replicas": 1,
            "allow_rollup_hdrs": True, "deny_delete": True, "allow_direct": True})
        assert "error" not in r, r
    finally:
        c.close()


def test_trust_bucket_read_with_creds(start_server, operator, ns, pki, tmp_path):
    """[trust] kv_bucket logs in with [drain] creds: a CRL put into the
    bucket revokes, so the watch did read the bucket through that login."""
    kv_bucket_as(ns)
    creds = good_creds(operator, tmp_path)
    d = tmp_path / "beacon"
    (d / "crl").mkdir(parents=True)
    srv = start_server({
        "server": {"watch": "no"},
        "tls": {"issuers": str(pki / "issuers"), "cert": str(pki / "server.pem"),
                "key": str(pki / "server.key"), "crl_dir": str(d / "crl")},
        "trust": {"kv_bucket": BUCKET, "kv_nats": ns.url},
        "drain": {"creds": creds},
    })
    assert wait_until(lambda: "watching for changes" in srv.stderr(), 30), srv.stderr()
    assert_admitted(srv, "agent3")
    c = JwtKvClient(ns.port, *ns.jwt_reader)
    try:
        c.publish(f"$KV.{BUCKET}.crl.agents",
                  make_crl(pki, tmp_path / "agent3.pem", revoke=["agent3"]).read_bytes())
    finally:
        c.close()
    applied(srv, "crl.agents")
    assert_refused(srv, "agent3", alert="certificate_revoked")
    assert_admitted(srv, "agent1")


def test_expired_jwt_refused_then_a_rotated_file_is_used_without_restart(
        start_server, operator, ns, tmp_path):
    """A user JWT past its exp is refused (the server says so);
    the operator then writes fresh creds over the same file, and the drain
    logs in with them on its next try, without a restart or reload, and
    drains what waited."""
    jwt_text, key = operator.user("beacon", exp=time.time() - 3600)
    creds = write_creds(tmp_path / "beacon.creds", jwt_text, key.seed)
    srv = start_server(drain_config(ns.url, creds=creds))
    sent = assert_refused_but_ingesting(srv, "authorization violation")
    assert stream_messages(ns) == 0
    assert "User JWT no longer valid: &{Issues:[claim is expired]}" in ns.log.read_text(), ns.log.read_text()[-3000:]

    fresh = tmp_path / "fresh.creds"
    write_creds(fresh, *(lambda j, k: (j, k.seed))(*operator.user("beacon")))
    os.replace(fresh, creds)  # as an operator's tooling would: atomically
    wait_connected(srv)
    wait_drained(srv)
    assert_in_stream_once(srv, ns, sent)


def test_jwt_expiring_while_connected_then_rotated(start_server, operator, ns, tmp_path):
    """The server drops a connection when its user JWT expires, and refuses
    the same JWT after. Uploads meanwhile get 201 and wait; once the
    operator writes fresh creds over the file the drain is back without a
    restart, and every upload, from before and after, is in the stream once."""
    jwt_text, key = operator.user("beacon", exp=time.time() + 4)
    creds = write_creds(tmp_path / "beacon.creds", jwt_text, key.seed)
    srv = start_server(drain_config(ns.url, creds=creds))
    wait_connected(srv)
    sent = upload_many(srv, 2)
    wait_drained(srv)
    # Wall-clock time passing is the event here: the JWT's exp.
    wait_for(lambda: "Client connection closed: Authentication Expired" in ns.log.read_text(),
             60, "the JWT to expire")
    # Uploads that reach cnats while it reconnects: the server is stopped
    # (SIGSTOP) so that its reconnect waits, and they are handed to cnats
    # ("published") but cannot go out yet.
    ns.proc.send_signal(signal.SIGSTOP)
    try:
        sent.update(upload_many(srv, 2, prefix="g"))
        wait_for(lambda: status(srv)["uploads_published"] == 4, 30, "the drain to publish")
    finally:
        ns.proc.send_signal(signal.SIGCONT)
    # The server refuses the expired JWT twice and cnats closes the
    # connection for good, dropping those messages' acks unsent. The drain
    # must notice, not wait for them, and try to log in anew: refused.
    st = wait_for(lambda: ((s := status(srv))["state"] == "disconnected"
                           and "authorization violation" in s["last_error"].lower() and s),
                  60, "the drain to find its login refused")
    assert st["lag_uploads"] == 2, st
    assert "User JWT no longer valid: &{Issues:[claim is expired]}" in ns.log.read_text()

    fresh = tmp_path / "fresh.creds"
    j, k = operator.user("beacon")
    write_creds(fresh, j, k.seed)
    os.replace(fresh, creds)
    wait_connected(srv)
    wait_drained(srv)
    assert_in_stream_once(srv, ns, sent)


def test_jwt_expiring_while_idle_shows_and_recovers(start_server, operator, ns, tmp_path):
    """With nothing to send when the JWT expires and cnats gives the
    connection up, the drain's state does not go on saying "connected": it
    reports the refusal, and logs in with renewed creds by itself."""
    jwt_text, key = operator.user("beacon", exp=time.time() + 3)
    creds = write_creds(tmp_path / "beacon.creds", jwt_text, key.seed)
    srv = start_server(drain_config(ns.url, creds=creds))
    wait_connected(srv)
    wait_for(lambda: "Client connection closed: Authentication Expired" in ns.log.read_text(),
             60, "the JWT to expire")
    st = wait_for(lambda: ((s := status(srv))["state"] == "disconnected"
                           and "authorization violation" in s["last_error"].lower() and s),
                  60, "the drain to report the refused login")
    assert st["lag_uploads"] == 0, st
    fresh = tmp_path / "fresh.creds"
    j, k = operator.user("beacon")
    write_creds(fresh, j, k.seed)
    os.replace(fresh, creds)
    wait_connected(srv)
    sent = upload_many(srv, 2)
    wait_drained(srv)
    assert_in_stream_once(srv, ns, sent)
