"""Logging in to NATS (issue 16 item 1: "credentials (user/password or a
creds/nkey file) and TLS to NATS (a CA file; a client certificate too)"),
against a real nats-server that each test configures with authorization
or TLS (natsfix.py).

For each login: the right one drains every upload exactly once; a wrong
one leaves the drain "disconnected" with cnats' or the server's own reason
in beaconctl status, while agents keep getting 201 and the lag counts
every upload that waits. Waits are on the drain's status, never a sleep.
"""

import base64
import json
import os
import urllib.request

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (Encoding, NoEncryption, PrivateFormat,
                                                          PublicFormat)

from helpers import HOST
from natsfix import NatsServer, read_stream, uploads_in
from test_drain import STREAM, drain_config, status, upload, upload_many, wait_drained, wait_for

# The test's own reader logs in as this user where the server has one.
READER = ("reader", "r3ader")


# --- nkeys: an Ed25519 seed in NATS' encoding (github.com/nats-io/nkeys) ---

def _crc16(data):
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def _encode(raw):
    raw += _crc16(raw).to_bytes(2, "little")
    return base64.b32encode(raw).decode().rstrip("=")


def user_nkey():
    """(seed "SU...", public key "U...") of a new user nkey."""
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    pub = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    user, seed_type = 20 << 3, 18 << 3
    prefix = bytes([seed_type | user >> 5, (user & 31) << 3])
    return _encode(prefix + seed), _encode(bytes([user]) + pub)


def nk_decorated(seed):
    """A seed as nk and nsc write it, between BEGIN and END lines."""
    return ("-----BEGIN USER NKEY SEED-----\n" + seed + "\n------END USER NKEY SEED------\n\n"
            "*************************************************************\n")


def nkey_server(tmp_path, *pubs):
    users = ", ".join([f"{{nkey: {p}}}" for p in pubs]
                      + [f'{{user: {READER[0]}, password: "{READER[1]}"}}'])
    ns = NatsServer(tmp_path / "nats-nkey", extra=[f"authorization {{ users = [ {users} ] }}"])
    ns.auth = READER
    return ns.start()


def assert_in_stream_once(srv, ns, sent):
    stored = {r["id"]: r for r in srv.uploads()}
    got = uploads_in(read_stream(ns.port, STREAM, auth=READER))
    assert sorted(got) == sorted(stored), (sorted(got), sorted(stored))
    assert sorted(h["Name"] for h, _ in got.values()) == sorted(sent)
    for h, body in got.values():
        assert body == sent[h["Name"]], h


def assert_refused_but_ingesting(srv, reason, n=3):
    """The drain is down with `reason` (or one of several) in its last
    error, and uploads still get 201 and wait in the lag."""
    st = wait_for(lambda: (s := status(srv))["state"] == "disconnected" and s, 30,
                  "the refused login")
    reasons = (reason,) if isinstance(reason, str) else reason
    assert any(r in st["last_error"].lower() for r in reasons), st
    sent = upload_many(srv, n)
    st = wait_for(lambda: (s := status(srv))["lag_uploads"] == n and s, 30, "the lag")
    assert st["state"] == "disconnected" and st["uploads_acked"] == 0, st
    return sent


def wait_connected(srv):
    try:
        wait_for(lambda: status(srv)["state"] == "connected", 30, "the drain to log in")
    except AssertionError as e:
        raise AssertionError(f"{e}: {status(srv)}") from None


def stream_messages(ns):
    """The stream's message count from the monitor port (no login there)."""
    with urllib.request.urlopen(f"http://{HOST}:{ns.monitor}/jsz?streams=true&accounts=true",
                                timeout=5) as r:
        return json.loads(r.read())["messages"]


# --- user and password ---

def test_user_and_password_right_and_wrong(start_server, tmp_path):
    auth = [f'authorization {{ users = [ {{user: beacon, password: "s3cret"}}, '
            f'{{user: {READER[0]}, password: "{READER[1]}"}} ] }}']
    ns = NatsServer(tmp_path / "nats-auth", extra=auth).start()
    try:
        wrong = start_server(drain_config(ns.url, user="beacon", password="s3cre"))
        assert_refused_but_ingesting(wrong, "authorization violation")
        assert stream_messages(ns) == 0

        right = start_server(drain_config(ns.url, user="beacon", password="s3cret"))
        sent = upload_many(right, 3)
        wait_drained(right)
        assert_in_stream_once(right, ns, sent)
        # The refused beacon is still refused, and still holds all it took.
        assert status(wrong)["lag_uploads"] == 3
    finally:
        ns.stop()


# --- an nkey seed file as [drain] creds ---

@pytest.mark.parametrize("form", ["bare", "decorated"])
def test_nkey_seed_file_logs_in(start_server, tmp_path, form):
    """nats-server lists the user by public nkey only; beacond gets the seed
    file (as `nk -gen user` writes it, bare or decorated) and signs the
    server's nonce with it. Before beacond read seed files, cnats looked for
    a user JWT in it and the drain never connected."""
    seed, pub = user_nkey()
    ns = nkey_server(tmp_path, pub)
    seed_file = tmp_path / "beacon.nk"
    seed_file.write_text(seed + "\n" if form == "bare" else nk_decorated(seed))
    seed_file.chmod(0o600)
    try:
        srv = start_server(drain_config(ns.url, creds=str(seed_file)))
        wait_connected(srv)
        sent = upload_many(srv, 4)
        wait_drained(srv)
        assert_in_stream_once(srv, ns, sent)
    finally:
        ns.stop()


def test_nkey_the_server_does_not_know_is_refused(start_server, tmp_path):
    """A valid seed whose public key the server does not list: the server's
    refusal, and ingest goes on."""
    _, pub = user_nkey()
    other_seed, _ = user_nkey()
    ns = nkey_server(tmp_path, pub)
    seed_file = tmp_path / "stranger.nk"
    seed_file.write_text(other_seed + "\n")
    try:
        srv = start_server(drain_config(ns.url, creds=str(seed_file)))
        assert_refused_but_ingesting(srv, "authorization violation")
        assert stream_messages(ns) == 0
    finally:
        ns.stop()


def test_seed_with_a_bad_checksum_is_not_used(start_server, tmp_path):
    """One character of the seed changed: its CRC16 no longer holds, so it is
    not taken for a seed (a typo must not become some other key), and the
    error says so."""
    seed, pub = user_nkey()
    ns = nkey_server(tmp_path, pub)
    bad = seed[:20] + ("A" if seed[20] != "A" else "B") + seed[21:]
    seed_file = tmp_path / "typo.nk"
    seed_file.write_text(bad + "\n")
    try:
        srv = start_server(drain_config(ns.url, creds=str(seed_file)))
        assert_refused_but_ingesting(srv, "invalid checksum")
        assert stream_messages(ns) == 0
    finally:
        ns.stop()


# --- TLS to NATS: the server's CA, and a client certificate it verifies ---

# With TLS 1.3 the server judges the client's certificate after the client
# has finished its handshake, so cnats sees only the connection closing,
# on its CONNECT's write or where it waited for the server's PONG, as the
# timing falls; the reason is in the server's log, which the tests check.
CLIENT_CERT_REFUSED = ("expected 'pong', got ''", "ssl_write error")


def tls_server(tmp_path, pki):
    tls = [f'tls {{ cert_file: "{pki}/server.pem", key_file: "{pki}/server.key", '
           f'ca_file: "{pki}/agents-ca.pem", verify: true }}']
    return NatsServer(tmp_path / "nats-tls", extra=tls).start()


def test_tls_right_ca_and_client_certificate(start_server, tmp_path, pki):
    ns = tls_server(tmp_path, pki)
    try:
        srv = start_server(drain_config(f"tls://{HOST}:{ns.port}", tls_ca=f"{pki}/server-ca.pem",
                                        tls_cert=f"{pki}/agent1.pem",
                                        tls_key=f"{pki}/agent1.key"))
        upload_many(srv, 3)
        wait_drained(srv)
        assert stream_messages(ns) == 3
    finally:
        ns.stop()


def test_tls_wrong_ca_refuses_the_server(start_server, tmp_path, pki):
    """A CA that did not sign nats-server's certificate (a man in the
    middle's view): beacond refuses the server and says why."""
    ns = tls_server(tmp_path, pki)
    try:
        srv = start_server(drain_config(f"tls://{HOST}:{ns.port}", tls_ca=f"{pki}/rogue-ca.pem",
                                        tls_cert=f"{pki}/agent1.pem",
                                        tls_key=f"{pki}/agent1.key"))
        assert_refused_but_ingesting(srv, "unable to get local issuer certificate")
        assert stream_messages(ns) == 0
    finally:
        ns.stop()


def test_tls_without_a_client_certificate_is_refused_by_the_server(start_server, tmp_path, pki):
    ns = tls_server(tmp_path, pki)
    try:
        srv = start_server(drain_config(f"tls://{HOST}:{ns.port}",
                                        tls_ca=f"{pki}/server-ca.pem"))
        assert_refused_but_ingesting(srv, CLIENT_CERT_REFUSED)
        assert stream_messages(ns) == 0
        assert "TLS handshake error: tls: client didn't provide a certificate" in ns.log.read_text()
    finally:
        ns.stop()


def test_tls_client_certificate_from_an_untrusted_ca_is_refused(start_server, tmp_path, pki):
    ns = tls_server(tmp_path, pki)
    try:
        srv = start_server(drain_config(f"tls://{HOST}:{ns.port}", tls_ca=f"{pki}/server-ca.pem",
                                        tls_cert=f"{pki}/untrusted.pem",
                                        tls_key=f"{pki}/untrusted.key"))
        assert_refused_but_ingesting(srv, CLIENT_CERT_REFUSED)
        assert stream_messages(ns) == 0
        assert ("TLS handshake error: tls: failed to verify client certificate: x509: "
                "certificate signed by unknown authority") in ns.log.read_text()
    finally:
        ns.stop()
