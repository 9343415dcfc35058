"""README's TLS claims, each checked against the real beacond with real
clients (openssl s_client, curl):

- "no RSA key exchange ... no SHA-1 or MD5 signatures from clients";
- "identity = ... san-email | san-uri": the first SAN of that type;
- "beacond warns when the [advertised CA name] list passes 16 KiB";
- "Ticket keys rotate (ticket_rotate ...; the previous three stay
  accepted)": a ticket resumes after one rotation and not after four.

Every refusal is asserted by its TLS alert and by the reason beacond logs.
"""

import re
import ssl
import subprocess
import time

import pytest

from helpers import ca_names, client_context, curl_upload, s_client, unique_name
from trustkit import upload

SECLEVEL0 = "DEFAULT@SECLEVEL=0"  # lets the local client use what beacond must refuse


def openssl(*args):
    p = subprocess.run(["openssl", *map(str, args)], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=60)
    assert p.returncode == 0, f"openssl {' '.join(map(str, args))}:\n{p.stdout.decode()}"
    return p.stdout.decode(errors="replace")


def wait_for_log(srv, text, timeout=10.0):
    """True once beacond's log holds `text` (it is written when the
    connection closes, which may come after the client has returned)."""
    deadline = time.monotonic() + timeout
    while text not in srv.stderr():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def alert_received(out):
    """The fatal alert s_client received from beacond ("handshake failure",
    "bad certificate", ...), or None."""
    m = re.search(r"(?:sslv3|tlsv13|tlsv1) alert ([a-z ]+):", out)
    return m.group(1) if m else None


def put_input(name):
    return (f"PUT /ManageSoftRL/Inventories/{name} HTTP/1.1\r\nHost: localhost\r\n"
            f"Content-Length: 3\r\nConnection: close\r\n\r\nabc").encode()


def rsa_ca(tmp_path, name="RSA Agents CA"):
    key, crt = tmp_path / "rsa-ca.key", tmp_path / "rsa-ca.pem"
    openssl("req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
            "-out", crt, "-subj", f"/CN={name}/O=beacond test", "-days", "30",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return crt, key


def issue(tmp_path, ca, cn, *, md="sha256", keyalg=("rsa:2048",), san=None, eku="clientAuth"):
    """A leaf certificate from `ca` (crt, key) signed with digest `md`."""
    tag = unique_name(cn.split(".")[0], "x")[:-2]
    key, csr, crt = tmp_path / f"{tag}.key", tmp_path / f"{tag}.csr", tmp_path / f"{tag}.pem"
    ext = tmp_path / f"{tag}.cnf"
    lines = ["keyUsage = critical,digitalSignature", f"extendedKeyUsage = {eku}"]
    if san:
        lines.append(f"subjectAltName = {san}")
    ext.write_text("\n".join(lines) + "\n")
    openssl("req", "-new", "-newkey", *keyalg, "-nodes", "-keyout", key, "-subj", f"/CN={cn}",
            "-out", csr)
    openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
            "-days", "30", f"-{md}", "-extfile", ext, "-out", crt)
    return crt, key


def s_client_with(srv, crt, key, *args, input=b""):
    """s_client as the client certificate (crt, key); returns its output."""
    cmd = ["openssl", "s_client", "-connect", f"{srv.host}:{srv.port}", "-servername",
           "localhost", "-CAfile", str(srv.pki / "server-ca.pem"), "-ign_eof",
           "-cert", str(crt), "-key", str(key), *map(str, args)]
    p = subprocess.run(cmd, input=input, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=30)
    return p.stdout.decode(errors="replace")


# --------------------------------------------------------------------------
# No RSA key exchange


@pytest.fixture
def rsa_server(start_server, pki, tmp_path):
    """beacond with an RSA server certificate: the only kind an RSA key
    exchange could use, so its refusal is beacond's choice, not a key
    mismatch."""
    crt, key = issue(tmp_path, (pki / "server-ca.pem", pki / "server-ca.key"), "localhost",
                     san="DNS:localhost,IP:127.0.0.1", eku="serverAuth")
    return start_server({"tls": {"cert": str(crt), "key": str(key)}})


@pytest.mark.parametrize("suite", ["AES128-GCM-SHA256", "AES256-GCM-SHA384"])
def test_rsa_key_exchange_refused(rsa_server, suite):
    # the control: the same server, key and AES-GCM over ECDHE
    ok, _ = s_client(rsa_server, "-tls1_2", "-cipher", "ECDHE-RSA-" + suite)
    assert f"Cipher is ECDHE-RSA-{suite}" in ok and "HTTP/1.1 200" in ok, ok
    out, rc = s_client(rsa_server, "-tls1_2", "-cipher", suite)
    assert alert_received(out) == "handshake failure", out
    assert "Cipher is (NONE)" in out and "HTTP/1.1" not in out, out
    assert wait_for_log(rsa_server, "can't match cipher suite"), \
        rsa_server.stderr()


# --------------------------------------------------------------------------
# No MD5 (or SHA-1) signed client certificates


@pytest.fixture
def rsa_issuer_server(start_server, pki, tmp_path):
    """beacond that also trusts an RSA issuer (an MD5 signature needs one)."""
    ca = rsa_ca(tmp_path)
    issuers = tmp_path / "issuers"
    issuers.mkdir()
    for p in (pki / "issuers").iterdir():
        (issuers / p.name).write_bytes(p.read_bytes())
    (issuers / "rsa-ca.pem").write_bytes(ca[0].read_bytes())
    return start_server({"tls": {"issuers": str(issuers)}}), ca


@pytest.mark.parametrize("flag", ["-tls1_2", "-tls1_3"])
@pytest.mark.parametrize("md", ["md5", "sha1"])
def test_weak_signed_client_certificate_refused(rsa_issuer_server, tmp_path, flag, md):
    srv, ca = rsa_issuer_server
    weak = issue(tmp_path, ca, f"{md}-agent.example", md=md)
    assert f"{md}WithRSAEncryption" in openssl("x509", "-noout", "-text", "-in", weak[0])
    good = issue(tmp_path, ca, "sha256-agent.example")
    # the control: the same issuer with SHA-256 is admitted
    out = s_client_with(srv, *good, flag, input=put_input(unique_name("sha256")))
    assert "HTTP/1.1 201" in out, out
    out = s_client_with(srv, *weak, flag, "-cipher", SECLEVEL0,
                        input=put_input(unique_name(md)))
    assert alert_received(out) == "bad certificate", out
    assert "HTTP/1.1" not in out, out
    assert wait_for_log(srv, "refused: certificate is signed with SHA-1 or MD5"), srv.stderr()
    assert srv.uploads(f"{md}-agent.example") == []


# --------------------------------------------------------------------------
# No SHA-1 signatures in the handshake


def requested_sigalgs(out):
    m = re.search(r"^Requested Signature Algorithms: (.*)$", out, re.M)
    assert m, f"s_client printed no CertificateRequest signature algorithms:\n{out}"
    return m.group(1).split(":")


@pytest.mark.parametrize("flag", ["-tls1_2", "-tls1_3"])
def test_certificate_request_offers_no_sha1(server, flag):
    """What beacond lets a client sign its CertificateVerify with."""
    out, _ = s_client(server, flag)
    assert "HTTP/1.1 200" in out, out
    algs = requested_sigalgs(out)
    assert "ECDSA+SHA256" in algs, algs
    weak = [a for a in algs if re.search(r"SHA1$|MD5|sha1|md5", a)]
    assert weak == [], algs


def test_sha1_only_client_refused_tls12(server):
    """A TLS 1.2 client that can only verify SHA-1 signatures finds none it
    shares with beacond: the handshake fails."""
    out, _ = s_client(server, "-tls1_2", "-cipher", SECLEVEL0, "-sigalgs", "ECDSA+SHA1:RSA+SHA1")
    assert alert_received(out) == "handshake failure", out
    assert "HTTP/1.1" not in out, out


# An empty Certificate: handshake_failure in TLS 1.2, certificate_required
# in TLS 1.3 (README, the alerts of refusals), logged as no certificate.
@pytest.mark.parametrize("flag,alerts,reason", [
    ("-tls1_2", ("handshake failure",), "refused: no client certificate"),
    ("-tls1_3", ("certificate required",), "refused: no client certificate"),
])
def test_sha1_only_client_signer_gets_no_session(server, flag, alerts, reason):
    """A client that can sign only with SHA-1 has nothing beacond accepts:
    it sends no certificate (OpenSSL will not sign with an algorithm the
    CertificateRequest left out) and is refused. A beacond that asked for
    SHA-1 would get a SHA-1 CertificateVerify here and admit it."""
    before = len(server.uploads("agent1.example"))
    out, _ = s_client(server, flag, "-cipher", SECLEVEL0, "-client_sigalgs",
                      "ECDSA+SHA1:RSA+SHA1", input=put_input(unique_name("sha1")))
    assert alert_received(out) in alerts, out
    assert "HTTP/1.1" not in out, out
    assert wait_for_log(server, reason), server.stderr()
    assert len(server.uploads("agent1.example")) == before


# --------------------------------------------------------------------------
# identity = san-email | san-uri


@pytest.mark.parametrize("identity,san,device", [
    ("san-email", "email:device-7@example.org,DNS:dns-7.example", "device-7@example.org"),
    ("san-uri", "DNS:dns-8.example,URI:urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66",
     "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66"),
])
def test_san_identity_stored(start_server, pki, tmp_path, identity, san, device):
    ca = (pki / "agents-ca.pem", pki / "agents-ca.key")
    crt, key = issue(tmp_path, ca, "cn-of-device.example", keyalg=("ec", "-pkeyopt",
                     "ec_paramgen_curve:P-256"), san=san)
    srv = start_server({"tls": {"identity": identity}})
    name = unique_name(identity)
    code, p = curl_upload(srv, crt, key, f"/ManageSoftRL/Inventories/{name}", b"san\n")
    assert code == 201, p.stderr.decode()
    row = srv.find_upload(name, device)
    assert row["device"] == device
    assert srv.upload_bytes(row["id"]) == b"san\n"
    listed = srv.beaconctl("uploads", "list").stdout.decode()
    assert device in listed and name in listed, listed
    assert srv.uploads("cn-of-device.example") == []


@pytest.mark.parametrize("identity,san", [
    ("san-email", "DNS:only-dns.example,URI:urn:x:1"),
    ("san-uri", "email:only-mail@example.org"),
    ("san-uri", None),
])
def test_san_identity_missing_refused(start_server, pki, tmp_path, identity, san):
    ca = (pki / "agents-ca.pem", pki / "agents-ca.key")
    crt, key = issue(tmp_path, ca, "cn-of-nosan.example", keyalg=("ec", "-pkeyopt",
                     "ec_paramgen_curve:P-256"), san=san)
    srv = start_server({"tls": {"identity": identity}})
    for flag in ("-tls1_2", "-tls1_3"):
        out = s_client_with(srv, crt, key, flag, input=put_input(unique_name("nosan")))
        assert alert_received(out) == "bad certificate", out
        assert "HTTP/1.1" not in out, out
    assert wait_for_log(srv, "no usable device identity"), \
        srv.stderr()
    assert srv.uploads() == []


def test_san_uri_with_slash_refused(start_server, pki, tmp_path):
    """A device identity names files and log lines, so '/' is refused in it:
    a URI SAN such as spiffe://org/device/7 cannot be an identity (README
    says so)."""
    ca = (pki / "agents-ca.pem", pki / "agents-ca.key")
    crt, key = issue(tmp_path, ca, "cn-of-spiffe.example", keyalg=("ec", "-pkeyopt",
                     "ec_paramgen_curve:P-256"), san="URI:spiffe://example.org/device/7")
    srv = start_server({"tls": {"identity": "san-uri"}})
    out = s_client_with(srv, crt, key, "-tls1_3", input=put_input(unique_name("spiffe")))
    assert alert_received(out) == "bad certificate", out
    assert wait_for_log(srv, "no usable device identity"), \
        srv.stderr()


# --------------------------------------------------------------------------
# The warning past 16 KiB of advertised CA names

WARNING = "some Windows clients fail above 16 KiB"


def many_cas(tmp_path, count):
    """`count` self-signed CAs with long subjects (about 290 bytes of DER
    each: wolfSSL cannot encode a name past 330), sharing one key: only
    their names matter here."""
    key = tmp_path / "many.key"
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key)
    out = tmp_path / "many"
    out.mkdir()
    for i in range(count):
        ous = "".join(f"/OU=organisational unit {j} of a long-named test issuer {i:04d}"
                      for j in range(4))
        openssl("req", "-new", "-x509", "-key", key, "-days", "30", "-out", out / f"ca{i:04d}.pem",
                "-subj", f"/CN=Long Issuer {i:04d}/O=beacond test{ous}",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return out


def advertised_bytes(srv):
    m = re.search(r"tls: (\d+) issuer certificates from .*, (\d+) bytes of CA names advertised",
                  srv.stderr())
    assert m, srv.stderr()
    return int(m.group(1)), int(m.group(2))


@pytest.fixture(scope="module")
def big_issuers(tmp_path_factory, pki):
    d = many_cas(tmp_path_factory.mktemp("cas"), 60)
    for p in (pki / "issuers").iterdir():
        (d / p.name).write_bytes(p.read_bytes())
    return d


def test_ca_name_list_over_16k_warns(start_server, big_issuers):
    srv = start_server({"tls": {"issuers": str(big_issuers)}})
    n, size = advertised_bytes(srv)
    assert n == 62 and size > 16 * 1024, (n, size)
    assert WARNING in srv.stderr(), srv.stderr()
    # what the warning is for (README): the CertificateRequest no longer
    # fits one record, and a conforming client gives up
    for flag in ("-tls1_2", "-tls1_3"):
        out, _ = s_client(srv, flag)
        assert "packet length too long" in out and "HTTP/1.1" not in out, out


def test_ca_name_subset_does_not_warn(start_server, big_issuers):
    srv = start_server({"tls": {"issuers": str(big_issuers),
                                "advertise": "Beacon Demo Agents CA, Long Issuer 0001"}})
    n, size = advertised_bytes(srv)
    assert n == 62 and 0 < size < 1024, (n, size)
    assert WARNING not in srv.stderr(), srv.stderr()
    out, _ = s_client(srv, "-tls1_3")
    assert "HTTP/1.1 200" in out, out


def test_ca_name_list_under_16k_does_not_warn(start_server, tmp_path, pki):
    d = many_cas(tmp_path, 48)
    for p in (pki / "issuers").iterdir():
        (d / p.name).write_bytes(p.read_bytes())
    srv = start_server({"tls": {"issuers": str(d)}})
    n, size = advertised_bytes(srv)
    assert n == 50 and 14 * 1024 < size <= 16 * 1024, (n, size)
    assert WARNING not in srv.stderr(), srv.stderr()
    for flag in ("-tls1_2", "-tls1_3"):
        out, _ = s_client(srv, flag)
        assert len(ca_names(out) or []) == 50, out
        assert "HTTP/1.1 200" in out, out


# --------------------------------------------------------------------------
# Automatic ticket rotation

ROTATED = "tickets rotate: ticket keys: new key made"
KEYS_KEPT = 4  # the current key and the previous three


def rotations(srv):
    return srv.stderr().count(ROTATED)


def wait_rotations(srv, n, timeout=30.0):
    deadline = time.monotonic() + timeout
    while rotations(srv) < n:
        assert time.monotonic() < deadline, f"fewer than {n} rotations:\n{srv.stderr()}"
        time.sleep(0.05)


VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def session_at_rotation(srv, ctxs):
    """A ticket per context and the number of rotations before they were
    issued (no rotation fell during their handshakes: their key is known)."""
    for _ in range(20):
        before = rotations(srv)
        sessions = {}
        for v, ctx in ctxs.items():
            kind, resp, info = upload(srv, ctx=ctx)
            assert kind == "response" and resp.status == 201, (kind, resp)
            assert info["session"] is not None and info["session"].has_ticket, v
            sessions[v] = info["session"]
        if rotations(srv) == before:
            return sessions, before
    raise AssertionError("a rotation fell during every try")


def test_ticket_rotation_keeps_three_previous_keys(start_server):
    srv = start_server({"tls": {"ticket_rotate": "3s"}})
    ctxs = {v: client_context(srv.pki, "agent1", min_version=t, max_version=t)
            for v, t in VERSIONS.items()}
    sessions, r0 = session_at_rotation(srv, ctxs)
    # one and three rotations later the tickets' key is still kept: resumed
    for later in (1, KEYS_KEPT - 1):
        wait_rotations(srv, r0 + later)
        for v, ctx in ctxs.items():
            kind, resp, info = upload(srv, ctx=ctx, session=sessions[v])
            assert kind == "response" and resp.status == 201, (kind, resp)
            assert info["reused"] is True, f"TLS {v} ticket from {later} rotations ago not resumed"
        assert rotations(srv) == r0 + later, "a rotation fell during the handshakes: rerun"
    # four rotations later their key is gone: a full handshake, still admitted
    wait_rotations(srv, r0 + KEYS_KEPT)
    for v, ctx in ctxs.items():
        kind, resp, info = upload(srv, ctx=ctx, session=sessions[v])
        assert kind == "response" and resp.status == 201, (kind, resp)
        assert info["reused"] is False, f"TLS {v} ticket from {KEYS_KEPT} rotations ago resumed"


def long_named_ca(tmp_path):
    """A CA whose subject is about 400 bytes of DER: past what wolfSSL
    encodes (WC_ASN_NAME_MAX, 330)."""
    key, crt = tmp_path / "long-ca.key", tmp_path / "long-ca.pem"
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key)
    ous = "".join(f"/OU=organisational unit {j} of the issuer with a very long name" for j in range(6))
    openssl("req", "-new", "-x509", "-key", key, "-days", "30", "-out", crt,
            "-subj", f"/CN=Long Named CA/O=beacond test{ous}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-addext", "subjectKeyIdentifier=hash")
    return crt, key


def test_issuer_name_too_long_to_advertise(start_server, pki, tmp_path):
    """One issuer whose name wolfSSL cannot encode used to add -1 to the
    advertised size (the log showed 18446744073709551486 bytes and the 16
    KiB warning) and went out as garbage in every CertificateRequest, so
    that no client could connect. Now it is trusted but not named."""
    ca = long_named_ca(tmp_path)
    issuers = tmp_path / "issuers"
    issuers.mkdir()
    for p in (pki / "issuers").iterdir():
        (issuers / p.name).write_bytes(p.read_bytes())
    (issuers / "long-ca.pem").write_bytes(ca[0].read_bytes())
    srv = start_server({"tls": {"issuers": str(issuers)}})
    n, size = advertised_bytes(srv)
    assert n == 3 and size == 120, (n, size)  # the two demo agents CAs' names
    assert '"Long Named CA": its subject name is too long to advertise' in srv.stderr()
    assert WARNING not in srv.stderr(), srv.stderr()
    for flag in ("-tls1_2", "-tls1_3"):
        out, _ = s_client(srv, flag)
        assert "HTTP/1.1 200" in out, out
        assert len(ca_names(out) or []) == 2, out
    # still trusted: its agents upload
    crt, key = issue(tmp_path, ca, "long-agent.example", keyalg=("ec", "-pkeyopt",
                     "ec_paramgen_curve:P-256"))
    name = unique_name("long")
    code, p = curl_upload(srv, crt, key, f"/ManageSoftRL/Inventories/{name}", b"long\n")
    assert code == 201, p.stderr.decode()
    srv.find_upload(name, "long-agent.example")
