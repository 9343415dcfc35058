"""Every certificate the server must refuse is refused with the precise
TLS alert (RFC 8446 6.2) and nothing is stored."""

import ssl
import subprocess

import pytest

from certkit import refusal_alert
from helpers import attempt_upload, client_context, curl_upload, s_client, unique_name

# name of the demo-PKI certificate (None: no client certificate) -> the CN
# its uploads would be filed under
REJECTED = {
    "none": None,
    "untrusted": "untrusted.example",
    "expired": "expired.example",
    "notyet": "notyet.example",
    "noclientauth": "noclientauth.example",
    "nodigsig": "nodigsig.example",
    "agents-ca": "Beacon Demo Agents CA",  # the issuer itself, used as a client cert
}

VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}

# case -> the alert it is refused with. No certificate: wolfSSL's own
# choice, certificate_required where TLS 1.3 has it.
ALERTS = {
    "none": {"1.2": "handshake_failure", "1.3": "certificate_required"},
    "untrusted": "unknown_ca",
    "expired": "certificate_expired",
    "notyet": "certificate_expired",
    "noclientauth": "unsupported_certificate",
    "nodigsig": "unsupported_certificate",
    "agents-ca": "bad_certificate",  # CN with spaces: no usable device identity
}


def expected_alert(case, v):
    a = ALERTS[case]
    return a[v] if isinstance(a, dict) else a


def cert_name(case):
    return None if case == "none" else case


@pytest.fixture
def nothing_stored(server):
    before = {r["id"] for r in server.uploads()}
    yield
    after = [r for r in server.uploads() if r["id"] not in before]
    assert after == [], f"uploads were stored: {after}"


@pytest.mark.parametrize("v", list(VERSIONS))
@pytest.mark.parametrize("case", list(REJECTED))
def test_rejected_python(server, nothing_stored, case, v):
    name = cert_name(case)
    ctx = client_context(server.pki, name, min_version=VERSIONS[v], max_version=VERSIONS[v])
    assert refusal_alert(server, ctx) == expected_alert(case, v)
    if REJECTED[case]:
        assert server.uploads(REJECTED[case]) == []


@pytest.mark.parametrize("case", list(REJECTED))
def test_rejected_curl(server, nothing_stored, case):
    name = cert_name(case)
    cert = key = None
    if name:
        cert, key = server.pki / f"{name}.pem", server.pki / f"{name}.key"
    code, p = curl_upload(server, cert, key,
                          f"/ManageSoftRL/Inventories/{unique_name('reject-curl')}",
                          b"should not be stored\n")
    assert code == 0, f"{case}: curl got HTTP {code}"
    assert p.returncode != 0


@pytest.mark.parametrize("flag", ["-tls1_2", "-tls1_3"])
@pytest.mark.parametrize("case", ["none", "untrusted", "expired", "noclientauth"])
def test_rejected_s_client(server, nothing_stored, case, flag):
    out, rc = s_client(server, flag, name=cert_name(case), input=(
        b"PUT /ManageSoftRL/Inventories/" + unique_name("reject-ossl").encode()
        + b" HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n"
        b"Connection: close\r\n\r\nabc"))
    assert "HTTP/1.1" not in out, out
    # s_client names the alert in words: "alert unknown ca"
    alert = expected_alert(case, "1.3" if flag == "-tls1_3" else "1.2")
    assert "alert " + alert.replace("_", " ") in out, out


@pytest.mark.parametrize("case", ["agent1", "agent2", "agent3", "agent-ca2"])
def test_accepted_certificates(server, case):
    """The control group: the valid certificates of both issuers upload."""
    name = unique_name("accepted")
    code, p = curl_upload(server, server.pki / f"{case}.pem", server.pki / f"{case}.key",
                          f"/ManageSoftRL/Inventories/{name}", b"accepted\n")
    assert code == 201, p.stderr.decode()
    row = server.find_upload(name, f"{case}.example")
    assert server.upload_bytes(row["id"]) == b"accepted\n"


def test_eku_check_configurable(start_server):
    srv = start_server({"tls": {"require_client_auth_eku": "no"}})
    name = unique_name("noeku")
    code, p = curl_upload(srv, srv.pki / "noclientauth.pem", srv.pki / "noclientauth.key",
                          f"/ManageSoftRL/Inventories/{name}", b"eku off\n")
    assert code == 201, p.stderr.decode()
    srv.find_upload(name, "noclientauth.example")
    # the key-usage check is still on
    kind, detail = attempt_upload(srv, "nodigsig")
    assert kind != "response", detail
    assert srv.uploads("nodigsig.example") == []


def test_digital_signature_check_configurable(start_server):
    srv = start_server({"tls": {"require_digital_signature": "no"}})
    name = unique_name("nodigsig")
    code, p = curl_upload(srv, srv.pki / "nodigsig.pem", srv.pki / "nodigsig.key",
                          f"/ManageSoftRL/Inventories/{name}", b"ku off\n")
    assert code == 201, p.stderr.decode()
    srv.find_upload(name, "nodigsig.example")
    kind, detail = attempt_upload(srv, "noclientauth")
    assert kind != "response", detail
    assert srv.uploads("noclientauth.example") == []


def test_expired_still_refused_with_checks_off(start_server):
    """Turning the usage checks off never turns the date check off."""
    srv = start_server({"tls": {"require_client_auth_eku": "no",
                                "require_digital_signature": "no"}})
    for case in ("expired", "notyet", "untrusted"):
        kind, detail = attempt_upload(srv, case)
        assert kind != "response", f"{case}: {detail}"
        assert srv.uploads(f"{case}.example") == []


def make_agent(pki, tmp_path, cn, san):
    """An extra valid agent certificate from agents-ca, CN and SAN apart."""
    key, csr, crt = tmp_path / "x.key", tmp_path / "x.csr", tmp_path / "x.pem"
    ext = tmp_path / "ext.cnf"
    ext.write_text(f"subjectAltName = {san}\n"
                   "keyUsage = critical,digitalSignature\n"
                   "extendedKeyUsage = clientAuth\n")
    subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key,
                    "-subj", f"/CN={cn}", "-out", csr], check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", pki / "agents-ca.pem",
                    "-CAkey", pki / "agents-ca.key", "-CAcreateserial", "-days", "30",
                    "-extfile", ext, "-out", crt], check=True, capture_output=True)
    return crt, key


@pytest.mark.parametrize("identity,device", [
    ("cn", "cn-of-device-7"),
    ("san-dns", "device-7.example"),
])
def test_identity_source(start_server, pki, tmp_path, identity, device):
    crt, key = make_agent(pki, tmp_path, "cn-of-device-7", "DNS:device-7.example")
    srv = start_server({"tls": {"identity": identity}})
    name = unique_name("identity")
    code, p = curl_upload(srv, crt, key, f"/ManageSoftRL/Inventories/{name}", b"who am i\n")
    assert code == 201, p.stderr.decode()
    row = srv.find_upload(name, device)
    assert row["device"] == device
    other = "device-7.example" if identity == "cn" else "cn-of-device-7"
    assert srv.uploads(other) == []
