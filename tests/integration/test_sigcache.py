"""The cache of passed ECDSA certificate signature checks (issue 18 item 3,
dataplane/tls/sigcache.c).

A returning agent's full handshake skips the verification of its CA's
signature on its certificate, and nothing else: the attacks below each
present something the cache has seen next to something it has not, and
must be refused as they would be without it."""

import base64
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from trustkit import assert_admitted, assert_refused, ctl, make_crl, reload

ONE_WORKER = {"server": {"workers": "1"}}


def counts(srv):
    s = ctl(srv, {"cmd": "stats"})
    return s["sig_cache_hits"], s["sig_cache_misses"]


def fresh_full_handshakes(srv, name, n):
    """n uploads, each on a new connection with a new context: no ticket,
    so each is a full handshake with a certificate check."""
    for _ in range(n):
        assert_admitted(srv, name)


def tampered(pki, tmp_path, name, how):
    """agent's own certificate, edited: 'subject' renames it (agent1 ->
    agent9, same length, its CA's signature kept), 'signature' flips the
    signature's last byte. Returns a client context with the agent's key."""
    der = bytearray(x509.load_pem_x509_certificate(
        (pki / f"{name}.pem").read_bytes()).public_bytes(serialization.Encoding.DER))
    if how == "subject":
        old = name.encode()
        at = der.find(old)
        assert at > 0, "the name is not in the certificate"
        der[at:at + len(old)] = old[:-1] + b"9"
    else:
        der[-1] ^= 0x01
    pem = tmp_path / f"{name}-{how}.pem"
    pem.write_bytes(b"-----BEGIN CERTIFICATE-----\n"
                    + base64.encodebytes(bytes(der))
                    + b"-----END CERTIFICATE-----\n")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(pki / "server-ca.pem"))
    ctx.load_cert_chain(str(pem), str(pki / f"{name}.key"))
    return ctx


def test_a_returning_agent_is_answered_from_the_cache(start_server):
    srv = start_server(ONE_WORKER)
    h0, m0 = counts(srv)
    fresh_full_handshakes(srv, "agent1", 3)
    h1, m1 = counts(srv)
    assert (h1 - h0, m1 - m0) == (2, 1), (h0, m0, h1, m1)


def test_two_workers_share_what_they_verified(start_server):
    """One table for the process: whichever worker takes the connection,
    only the first of ten handshakes runs the check."""
    srv = start_server({"server": {"workers": "2"}})
    fresh_full_handshakes(srv, "agent1", 10)
    hits, misses = counts(srv)
    assert (hits, misses) == (9, 1), (hits, misses)


@pytest.mark.parametrize("how", ["subject", "signature"])
def test_an_edited_certificate_is_not_taken_for_the_cached_one(start_server, tmp_path, how):
    """agent1, known to the cache, renames its own certificate to agent9 (or
    presents it with a damaged signature), keeping its key: the signature
    no longer matches, and beacond refuses it as it would without a cache."""
    srv = start_server(ONE_WORKER)
    fresh_full_handshakes(srv, "agent1", 2)
    hits, _ = counts(srv)
    assert hits == 1
    assert_refused(srv, "agent1", alert="bad_certificate", ctx=tampered(srv.pki, tmp_path, "agent1", how))
    assert counts(srv)[0] == hits, "a tampered certificate was answered from the cache"
    assert_admitted(srv, "agent1")


def test_revoked_after_it_was_cached(start_server, tmp_path):
    """The cache answers for the signature only: revocation is judged at
    every handshake."""
    (tmp_path / "crl").mkdir()
    srv = start_server({**ONE_WORKER, "tls": {"crl_dir": str(tmp_path / "crl")}})
    fresh_full_handshakes(srv, "agent3", 2)
    make_crl(srv.pki, tmp_path / "crl" / "agents.pem", revoke=["agent3"])
    reload(srv, "crl")
    assert_refused(srv, "agent3", alert="certificate_revoked")


def test_issuer_removed_after_it_was_cached(start_server, tmp_path):
    """The issuer's key is one of the cached inputs, but whether it is
    trusted is judged at every handshake: with the agents' CA taken out of
    the issuers, its agent is refused though its signature is cached."""
    issuers = tmp_path / "issuers"
    issuers.mkdir()
    srv = start_server({**ONE_WORKER, "tls": {"issuers": str(issuers)}}, start=False)
    for f in (srv.pki / "issuers").iterdir():
        (issuers / f.name).write_bytes(f.read_bytes())
    srv.start()
    fresh_full_handshakes(srv, "agent1", 2)
    (issuers / "agents-ca.pem").unlink()  # agent1's issuer; agents-ca2.pem stays
    reload(srv, "issuers")
    assert_refused(srv, "agent1", alert="unknown_ca")
