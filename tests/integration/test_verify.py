"""Client-certificate verification against attacks (issue 12): each test
makes the certificates of one attack with certkit.py, runs it against a
real beacond with Python's ssl (and openssl s_client), and asserts the
exact TLS alert of the refusal (RFC 8446 6.2) and that nothing was stored.

- revocation by an issuer whose name wolfSSL re-encodes (IA5String DC
  attributes, as AD CS makes them), and crl_stale = refuse for it;
- a revoked intermediate CA, sent by the client or configured as an issuer;
- an intermediate CA sent by the client and signed with SHA-1;
- chain errors (untrusted issuer, self-signed, expired) with a usage check
  turned off;
- identities with a NUL, control bytes, over 255 bytes, several CNs or
  several SANs;
- the refusal log line and the /status list name whose certificate it was.
"""

import re
import ssl
import subprocess
import time
import urllib.request

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import certkit
from certkit import DAY, NOW, Cert, client_ctx, cn, make_ca, make_cert, make_crl, name
from helpers import build_request, free_port, new_server, tls_connect
from trustkit import reload, upload

VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}

try:  # the ASN.1 string types (a private enum in every cryptography release)
    from cryptography.x509.name import _ASN1Type as ASN1
except ImportError:  # pragma: no cover
    ASN1 = None


@pytest.fixture(scope="module")
def servers(tmp_path_factory, pki):
    """beacond with a config: one server per distinct config, shared by the
    module's tests (each checks what its own attempt stored), all stopped
    at the end of the module."""
    started = {}

    def start(config):
        key = repr(sorted((sec, sorted((k, str(v)) for k, v in kv.items()))
                          for sec, kv in config.items()))
        if key not in started:
            srv = new_server(tmp_path_factory.mktemp("verify"), pki, config)
            srv.start()
            started[key] = srv
        return started[key]

    yield start
    for srv in started.values():
        srv.stop()


def agents_ca(pki):
    """The demo PKI's trusted agents CA, to sign attack certificates with."""
    cert = x509.load_pem_x509_certificate((pki / "agents-ca.pem").read_bytes())
    key = serialization.load_pem_private_key((pki / "agents-ca.key").read_bytes(), None)
    return Cert(cert, key)


def attempt(srv, tmp_path, leaf, version, chain=(), stem="client", weak_chain=False):
    """What the server answered `leaf` (an alert name, or 'http 201'); a
    refusal (anything but an HTTP answer) must have stored nothing."""
    crt, key = leaf.write(tmp_path, stem, chain)
    before = len(srv.uploads())
    got = certkit.refusal_alert(srv, client_ctx(crt, key, srv.pki / "server-ca.pem",
                                                VERSIONS[version], weak_chain=weak_chain))
    if not got.startswith("http"):
        after = srv.uploads()
        assert len(after) == before, f"refused ({got}) but stored: {after[before:]}"
    return got


def wait_for(pred, what, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# --------------------------------------------------------------------------
# Revocation under an issuer name wolfSSL would re-encode


@pytest.fixture(scope="module")
def dc_pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("dc-pki")
    ca = make_ca(name((NameOID.DOMAIN_COMPONENT, "com"), (NameOID.DOMAIN_COMPONENT, "example"),
                      (NameOID.COMMON_NAME, "Example Issuing CA")))
    good = make_cert(cn("dc-good.example"), ca)
    revoked = make_cert(cn("dc-revoked.example"), ca)
    (d / "ca.pem").write_bytes(ca.pem())
    (d / "crl").mkdir()
    (d / "crl" / "ca.crl").write_bytes(make_crl(ca, [revoked]))
    (d / "stale").mkdir()
    (d / "stale" / "ca.crl").write_bytes(
        make_crl(ca, [], last_update=NOW - 3 * DAY, next_update=NOW - DAY))
    return {"dir": d, "ca": ca, "good": good, "revoked": revoked}


@pytest.fixture(scope="module")
def dc_server(servers, dc_pki):
    return servers({"tls": {"issuers": dc_pki["dir"] / "ca.pem",
                            "crl_dir": dc_pki["dir"] / "crl"}})


@pytest.mark.parametrize("v", list(VERSIONS))
def test_revoked_under_domain_component_issuer(dc_server, dc_pki, tmp_path, v):
    assert attempt(dc_server, tmp_path, dc_pki["good"], v) == "http 201"
    assert attempt(dc_server, tmp_path, dc_pki["revoked"], v) == "certificate_revoked"
    assert dc_server.uploads("dc-revoked.example") == []


@pytest.mark.parametrize("flag", ["-tls1_2", "-tls1_3"])
def test_revoked_alert_seen_by_s_client(dc_server, dc_pki, tmp_path, flag):
    crt, key = dc_pki["revoked"].write(tmp_path, "revoked")
    p = subprocess.run(["openssl", "s_client", "-connect", f"{dc_server.host}:{dc_server.port}",
                        "-servername", "localhost", "-CAfile", str(dc_server.pki / "server-ca.pem"),
                        "-cert", str(crt), "-key", str(key), "-ign_eof", flag],
                       input=b"PUT /ManageSoftRL/Inventories/sc.ndi HTTP/1.1\r\nHost: x\r\n"
                       b"Content-Length: 3\r\nConnection: close\r\n\r\nabc",
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    out = p.stdout.decode(errors="replace")
    assert "alert certificate revoked" in out, out
    assert "HTTP/1.1" not in out, out


@pytest.mark.parametrize("v", list(VERSIONS))
def test_stale_crl_refused_under_domain_component_issuer(servers, dc_pki, tmp_path, v):
    srv = servers({"tls": {"issuers": dc_pki["dir"] / "ca.pem",
                           "crl_dir": dc_pki["dir"] / "stale", "crl_stale": "refuse"}})
    # The CRL is past its nextUpdate: nobody's status is known.
    assert attempt(srv, tmp_path, dc_pki["good"], v) == "certificate_unknown"


@pytest.mark.parametrize("v", list(VERSIONS))
def test_revoked_under_an_issuer_name_too_long_for_wolfssl(servers, tmp_path_factory, tmp_path,
                                                          v):
    """wolfSSL cannot re-encode an issuer name over about 330 bytes; when
    the lookup hashed its re-encoding, such a name hashed to all zeros,
    found no CRL, and a revoked certificate got 201 (with advertise =
    none, which keeps the name out of the CertificateRequest)."""
    d = tmp_path_factory.mktemp("long-name-pki")
    ca = make_ca(name((NameOID.COMMON_NAME, "Long Name Issuing CA"),
                      (NameOID.ORGANIZATIONAL_UNIT_NAME, "u" * 60),
                      (NameOID.ORGANIZATIONAL_UNIT_NAME, "v" * 60),
                      (NameOID.ORGANIZATIONAL_UNIT_NAME, "w" * 60),
                      (NameOID.ORGANIZATIONAL_UNIT_NAME, "x" * 60),
                      (NameOID.ORGANIZATIONAL_UNIT_NAME, "y" * 60),
                      (NameOID.ORGANIZATION_NAME, "z" * 60)))
    assert len(ca.cert.subject.public_bytes()) > 400
    good = make_cert(cn("long-good.example"), ca)
    revoked = make_cert(cn("long-revoked.example"), ca)
    (d / "ca.pem").write_bytes(ca.pem())
    (d / "crl").mkdir()
    (d / "crl" / "ca.crl").write_bytes(make_crl(ca, [revoked]))
    srv = servers({"tls": {"issuers": d / "ca.pem", "crl_dir": d / "crl", "advertise": "none"}})
    assert attempt(srv, tmp_path, good, v) == "http 201"
    assert attempt(srv, tmp_path, revoked, v) == "certificate_revoked"


# --------------------------------------------------------------------------
# A revoked intermediate CA


@pytest.fixture(scope="module")
def chain_pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("chain-pki")
    root = make_ca(name((NameOID.COMMON_NAME, "Verify Test Root CA"),
                        (NameOID.ORGANIZATION_NAME, "beacond tests")))
    inter = make_ca(name((NameOID.COMMON_NAME, "Verify Test Intermediate CA"),
                         (NameOID.ORGANIZATION_NAME, "beacond tests")), root, path_len=0)
    leaf = make_cert(cn("behind-intermediate.example"), inter)
    (d / "root.pem").write_bytes(root.pem())
    (d / "both.pem").write_bytes(root.pem() + inter.pem())
    for sub, revoked in (("revokes-inter", [inter]), ("revokes-none", [])):
        (d / sub).mkdir()
        (d / sub / "root.crl").write_bytes(make_crl(root, revoked))
    return {"dir": d, "root": root, "inter": inter, "leaf": leaf}


@pytest.mark.parametrize("v", list(VERSIONS))
def test_intermediate_sent_by_client_revoked(servers, chain_pki, tmp_path, v):
    d = chain_pki["dir"]
    ok = servers({"tls": {"issuers": d / "root.pem", "crl_dir": d / "revokes-none"}})
    assert attempt(ok, tmp_path, chain_pki["leaf"], v, chain=[chain_pki["inter"]]) == "http 201"
    srv = servers({"tls": {"issuers": d / "root.pem", "crl_dir": d / "revokes-inter"}})
    assert attempt(srv, tmp_path, chain_pki["leaf"], v,
                   chain=[chain_pki["inter"]]) == "certificate_revoked"
    assert "CA certificate at depth 1 is revoked" in srv.stderr()


@pytest.mark.parametrize("v", list(VERSIONS))
def test_intermediate_signed_with_sha1_refused(servers, chain_pki, tmp_path, v):
    """The root signs the client's intermediate with SHA-1: a forgeable
    signature, refused at depth 1 as at depth 0 (README: no SHA-1 or MD5
    signatures from clients). The same chain with SHA-256 is admitted."""
    d, root = chain_pki["dir"], chain_pki["root"]
    srv = servers({"tls": {"issuers": d / "root.pem", "crl_dir": d / "revokes-none"}})
    for sig_hash, want in ((hashes.SHA256(), "http 201"), (hashes.SHA1(), "bad_certificate")):
        inter = make_ca(name((NameOID.COMMON_NAME, "Verify Test Intermediate CA"),
                             (NameOID.ORGANIZATION_NAME, "beacond tests")), root, path_len=0,
                        sig_hash=sig_hash)
        leaf = make_cert(cn("behind-sha1-intermediate.example"), inter)
        assert attempt(srv, tmp_path, leaf, v, chain=[inter], weak_chain=True) == want
    assert "CA certificate at depth 1 is signed with SHA-1 or MD5" in srv.stderr()


@pytest.mark.parametrize("v", list(VERSIONS))
def test_intermediate_configured_as_issuer_revoked(servers, chain_pki, tmp_path, v):
    d = chain_pki["dir"]
    ok = servers({"tls": {"issuers": d / "both.pem", "crl_dir": d / "revokes-none"}})
    assert attempt(ok, tmp_path, chain_pki["leaf"], v) == "http 201"
    srv = servers({"tls": {"issuers": d / "both.pem", "crl_dir": d / "revokes-inter"}})
    assert attempt(srv, tmp_path, chain_pki["leaf"], v) == "certificate_revoked"
    assert "issuing CA 'CN=Verify Test Intermediate CA, O=beacond tests'" in srv.stderr()


@pytest.mark.parametrize("v", list(VERSIONS))
def test_intermediate_revoked_after_the_session_began(tmp_path, pki, chain_pki, v):
    """A configured intermediate revoked by its root after a device's full
    handshake: the device's ticket no longer resumes (the full handshake
    it falls back to gets certificate_revoked) and its connection that was
    open across the reload gets 403 at its next request."""
    d = chain_pki["dir"]
    crl_dir = tmp_path / "crl"
    crl_dir.mkdir()
    (crl_dir / "root.crl").write_bytes((d / "revokes-none" / "root.crl").read_bytes())
    srv = new_server(tmp_path / "srv", pki, {"server": {"watch": "no"},
                                             "tls": {"issuers": d / "both.pem",
                                                     "crl_dir": crl_dir}})
    srv.start()
    try:
        crt, key = chain_pki["leaf"].write(tmp_path, "leaf")
        ctx = client_ctx(crt, key, srv.pki / "server-ca.pem", VERSIONS[v])
        kind, detail, info = upload(srv, ctx=ctx)
        assert kind == "response" and detail.status == 201, (kind, detail)
        with tls_connect(srv, ctx=ctx, session=info["session"]) as held:
            assert held.tls.session_reused, "the session was not resumed"
            held.send(build_request("PUT", "/ManageSoftRL/Inventories/before.ndi", body=b"x"))
            assert held.read_response().status == 201
            (crl_dir / "root.crl").write_bytes((d / "revokes-inter" / "root.crl").read_bytes())
            reload(srv, "crl")
            held.send(build_request("PUT", "/ManageSoftRL/Inventories/after.ndi", body=b"x"))
            resp = held.read_response()
            assert resp.status == 403 and b"revoked" in resp.body, resp
        # The ticket does not resume: the full handshake is refused.
        assert certkit.refusal_alert(srv, ctx, session=info["session"]) == \
            "certificate_revoked"
        assert [r["name"] for r in srv.uploads()].count("after.ndi") == 0
    finally:
        srv.stop()


# --------------------------------------------------------------------------
# Chain errors are never waived by a usage check that is turned off

# check turned off -> a certificate that fails only that check (and so
# made wolfSSL overwrite the chain error with a usage error)
USAGE_OFF = {
    "require_client_auth_eku": dict(eku=(ExtendedKeyUsageOID.SERVER_AUTH,)),
    "require_digital_signature": dict(digital_signature=False),
}

# chain problem -> the alert it must get
CHAIN_CASES = {
    "self-signed": "unknown_ca",
    "untrusted-issuer": "unknown_ca",
    "expired": "certificate_expired",
    "not-yet-valid": "certificate_expired",
}


def chain_attack_cert(pki, case, usage):
    subject = cn("agent1.example")  # an existing device's identity
    if case == "self-signed":
        return make_cert(subject, None, **usage)
    if case == "untrusted-issuer":
        rogue = make_ca(cn("Beacon Demo Agents CA"))  # the trusted CA's name, not its key
        return make_cert(subject, rogue, **usage)
    if case == "expired":
        return make_cert(subject, agents_ca(pki), not_before=NOW - 10 * DAY,
                         not_after=NOW - DAY, **usage)
    return make_cert(subject, agents_ca(pki), not_before=NOW + DAY, not_after=NOW + 10 * DAY,
                     **usage)


@pytest.mark.parametrize("v", list(VERSIONS))
@pytest.mark.parametrize("case", list(CHAIN_CASES))
@pytest.mark.parametrize("check", list(USAGE_OFF))
def test_chain_error_not_waived_with_usage_check_off(servers, pki, tmp_path, check, case, v):
    srv = servers({"tls": {check: "no"}})
    leaf = chain_attack_cert(pki, case, USAGE_OFF[check])
    assert attempt(srv, tmp_path, leaf, v) == CHAIN_CASES[case]


@pytest.mark.parametrize("check", list(USAGE_OFF))
def test_usage_check_off_still_admits_a_valid_chain(servers, pki, tmp_path, check):
    """The control group: the same usages on a valid chain are admitted."""
    srv = servers({"tls": {check: "no"}})
    leaf = make_cert(cn("usage-off.example"), agents_ca(pki), **USAGE_OFF[check])
    assert attempt(srv, tmp_path, leaf, "1.3") == "http 201"
    assert [r["device"] for r in srv.uploads("usage-off.example")] == ["usage-off.example"]


@pytest.mark.parametrize("v", list(VERSIONS))
@pytest.mark.parametrize("check", list(USAGE_OFF))
def test_wrong_usage_alert(servers, pki, tmp_path, check, v):
    srv = servers({"tls": {}})
    leaf = make_cert(cn("wrong-usage.example"), agents_ca(pki), **USAGE_OFF[check])
    assert attempt(srv, tmp_path, leaf, v) == "unsupported_certificate"


@pytest.mark.parametrize("v", list(VERSIONS))
def test_blocked_gets_access_denied(servers, pki, tmp_path_factory, tmp_path, v):
    leaf = make_cert(cn("blocked-device.example"), agents_ca(pki))
    listing = tmp_path_factory.mktemp("blocklist") / "blocked"
    listing.write_text(f"sha256:{leaf.fingerprint()}\n")
    srv = servers({"tls": {"blocklist": listing}})
    assert attempt(srv, tmp_path, leaf, v) == "access_denied"


# --------------------------------------------------------------------------
# Identities: never cut, never guessed

BAD_CN = {
    "nul": name((NameOID.COMMON_NAME, "agent1.example\x00.attacker.example")),
    "newline": name((NameOID.COMMON_NAME, "agent1.example\nrefused: forged log line")),
    "over-255-bytes": name((NameOID.COMMON_NAME, "agent1.example" + "x" * 300)),
    "two-cns": name((NameOID.COMMON_NAME, "attacker.example"),
                    (NameOID.COMMON_NAME, "agent1.example")),
    "c1-control": name((NameOID.COMMON_NAME, "agent1.example\u0085x")),
    "non-ascii": name((NameOID.COMMON_NAME, "agent1.exampl\u00e9")),
}


@pytest.mark.parametrize("v", list(VERSIONS))
@pytest.mark.parametrize("case", list(BAD_CN))
def test_bad_common_name_refused(servers, pki, tmp_path, case, v):
    srv = servers({"tls": {"identity": "cn"}})
    leaf = make_cert(BAD_CN[case], agents_ca(pki))
    assert attempt(srv, tmp_path, leaf, v) == "bad_certificate"


BAD_SAN = {
    "san-dns": {
        "nul": [x509.DNSName("agent1.example\x00.attacker.example")],
        "two": [x509.DNSName("attacker.example"), x509.DNSName("agent1.example")],
        "over-255-bytes": [x509.DNSName("a" * 300 + ".example")],
    },
    "san-email": {
        "nul": [x509.RFC822Name("agent1@example.com\x00.attacker.example")],
        "two": [x509.RFC822Name("a@example.com"), x509.RFC822Name("agent1@example.com")],
    },
    "san-uri": {
        "nul": [x509.UniformResourceIdentifier("urn:agent1\x00.attacker")],
        "two": [x509.UniformResourceIdentifier("urn:a"),
                x509.UniformResourceIdentifier("urn:agent1")],
    },
}


@pytest.mark.parametrize("identity,case", [(i, c) for i in BAD_SAN for c in BAD_SAN[i]])
def test_bad_san_identity_refused(servers, pki, tmp_path, identity, case):
    srv = servers({"tls": {"identity": identity}})
    leaf = make_cert(cn("cn-is-not-the-identity"), agents_ca(pki), san=BAD_SAN[identity][case])
    for v in VERSIONS:
        assert attempt(srv, tmp_path, leaf, v) == "bad_certificate", v


GOOD_IDENTITY = {
    "san-email": ([x509.RFC822Name("agent7@example.com"), x509.DNSName("other.example")],
                  "agent7@example.com"),
    "san-uri": ([x509.UniformResourceIdentifier("urn:device:agent7")], "urn:device:agent7"),
    "san-dns": ([x509.DNSName("agent7.example"), x509.RFC822Name("x@example.com")],
                "agent7.example"),
}


@pytest.mark.parametrize("identity", list(GOOD_IDENTITY))
def test_san_identity_taken_whole(servers, pki, tmp_path, identity):
    srv = servers({"tls": {"identity": identity}})
    san, device = GOOD_IDENTITY[identity]
    leaf = make_cert(cn("cn-is-not-the-identity"), agents_ca(pki), san=san)
    assert attempt(srv, tmp_path, leaf, "1.3") == "http 201"
    assert [r["device"] for r in srv.uploads(device)] == [device]


@pytest.mark.skipif(ASN1 is None, reason="cryptography without _ASN1Type")
def test_bmpstring_common_name_read(servers, pki, tmp_path):
    srv = servers({"tls": {"identity": "cn"}})
    leaf = make_cert(name((NameOID.COMMON_NAME, "agent-bmp.example", ASN1.BMPString)),
                     agents_ca(pki))
    assert attempt(srv, tmp_path, leaf, "1.2") == "http 201"
    assert [r["device"] for r in srv.uploads("agent-bmp.example")] == ["agent-bmp.example"]


# --------------------------------------------------------------------------
# Whose certificate: the refusal log line and /status


def serial_text(cert):
    h = format(cert.cert.serial_number, "X")
    return h if len(h) % 2 == 0 else "0" + h


def test_refusal_named_in_log_and_status(servers, dc_pki, pki, tmp_path):
    mport = free_port()
    srv = servers({"tls": {"issuers": dc_pki["dir"] / "ca.pem",
                           "crl_dir": dc_pki["dir"] / "crl"},
                   "server": {"metrics": f"127.0.0.1:{mport}"}})
    revoked = dc_pki["revoked"]
    assert attempt(srv, tmp_path, revoked, "1.3") == "certificate_revoked"
    fields = ['subject "CN=dc-revoked.example"',
              'issuer "DC=com, DC=example, CN=Example Issuing CA"',
              f"serial {serial_text(revoked)}", f"sha256 {revoked.fingerprint().upper()}",
              "certificate is revoked (revoked)", "device dc-revoked.example ",
              "notAfter " + revoked.cert.not_valid_after.strftime("%Y-%m-%dT%H:%M:%SZ")]
    line_re = re.compile(r"\b127\.0\.0\.1:\d+: refused: .*$", re.M)

    def refusal_line():
        return [ln for ln in line_re.findall(srv.stderr()) if "dc-revoked" in ln]
    wait_for(refusal_line, "the refusal log line")
    line = refusal_line()[0]
    for f in fields:
        assert f in line, f"{f!r} not in {line!r}"

    # A name with a NUL and a newline shows them escaped: it cannot cut or
    # split the line.
    forged = make_cert(name((NameOID.COMMON_NAME, "agent1.example\x00\nrefused: fake")),
                       agents_ca(pki))
    assert attempt(srv, tmp_path, forged, "1.3") == "unknown_ca"  # not this server's issuer
    wait_for(lambda: "agent1.example\\x00\\x0arefused: fake" in srv.stderr(),
             "the escaped name in the log")
    assert "\nrefused: fake" not in srv.stderr()

    with urllib.request.urlopen(f"http://127.0.0.1:{mport}/status", timeout=10) as r:
        page = r.read().decode()
    rows = re.findall(r'<tr class="refusal">(.*?)</tr>', page)
    assert len(rows) == 2, page
    assert "agent1.example\\x00\\x0arefused: fake" in rows[0]  # newest first
    row = rows[1]
    for f in ["127.0.0.1:", "revoked", "certificate is revoked", "CN=dc-revoked.example",
              "DC=com, DC=example, CN=Example Issuing CA", serial_text(revoked),
              revoked.fingerprint().upper()]:
        assert f in row, f"{f!r} not in the /status row {row!r}"
