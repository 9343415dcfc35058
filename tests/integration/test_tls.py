"""TLS: protocol versions, the CA names in the CertificateRequest, session
resumption, and the [tls] options."""

import ctypes
import re
import socket
import ssl
import struct
import subprocess
import time
import warnings

import pytest

from helpers import (AGENTS_CA2_NAME, AGENTS_CA_NAME, build_request, ca_names,
                     attempt_upload, client_context, free_port, s_client, tls_connect,
                     unique_name)

VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def pinned(server, v, name="agent1"):
    return client_context(server.pki, name, min_version=VERSIONS[v], max_version=VERSIONS[v])


def http_ok(output):
    return "HTTP/1.1 200" in output


@pytest.mark.parametrize("v", list(VERSIONS))
def test_versions_and_ciphers(server, v):
    with tls_connect(server, ctx=pinned(server, v)) as c:
        assert c.tls.version() == f"TLSv{v}"
        cipher = c.tls.cipher()[0]
        c.send(build_request("GET", "/ManageSoftDL/policy.xml"))
        assert c.read_response().status == 200
    assert "GCM" in cipher or "CHACHA20" in cipher, cipher


@pytest.mark.parametrize("cipher,v", [
    ("ECDHE-ECDSA-AES128-GCM-SHA256", "1.2"),
    ("ECDHE-ECDSA-AES256-GCM-SHA384", "1.2"),
    ("ECDHE-ECDSA-CHACHA20-POLY1305", "1.2"),
])
def test_tls12_aead_suites(server, cipher, v):
    out, rc = s_client(server, "-tls1_2", "-cipher", cipher)
    assert f"Cipher is {cipher}" in out, out
    assert http_ok(out), out


@pytest.mark.parametrize("suite", ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
                                   "TLS_CHACHA20_POLY1305_SHA256"])
def test_tls13_suites(server, suite):
    out, rc = s_client(server, "-tls1_3", "-ciphersuites", suite)
    assert f"Cipher is {suite}" in out, out
    assert http_ok(out), out


@pytest.mark.parametrize("group", ["X25519", "P-256"])
def test_key_exchange_groups(server, group):
    out, rc = s_client(server, "-groups", group)
    assert http_ok(out), out
    shown = {"P-256": "prime256v1"}.get(group, group)
    assert re.search(rf"(Server Temp Key|Peer Temp Key): .*({group}|{shown})", out), out


def test_cbc_suite_refused(server):
    out, rc = s_client(server, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA256")
    assert not http_ok(out), out
    assert "Cipher is (NONE)" in out or rc != 0


@pytest.mark.parametrize("flag", ["-tls1_2", "-tls1_3"])
def test_ca_names_advertised(server, flag):
    out, rc = s_client(server, flag)
    assert http_ok(out), out
    names = ca_names(out)
    assert names is not None, f"no 'Acceptable client certificate CA names' in:\n{out}"
    assert sorted(names) == sorted([AGENTS_CA_NAME, AGENTS_CA2_NAME]), out


@pytest.mark.parametrize("flag", ["-tls1_2", "-tls1_3"])
def test_advertise_none(start_server, flag):
    srv = start_server({"tls": {"advertise": "none"}})
    out, rc = s_client(srv, flag)
    assert ca_names(out) is None, out
    assert "No client certificate CA names sent" in out, out
    assert http_ok(out), out


@pytest.mark.parametrize("flag", ["-tls1_2", "-tls1_3"])
def test_advertise_list(start_server, flag):
    srv = start_server({"tls": {"advertise": "Beacon Demo Agents CA 2"}})
    out, rc = s_client(srv, flag)
    assert ca_names(out) == [AGENTS_CA2_NAME], out
    # advertising fewer names does not mean trusting fewer issuers
    assert http_ok(out), out
    out, rc = s_client(srv, flag, name="agent-ca2")
    assert http_ok(out), out


def test_issuers_as_bundle_file(start_server, pki):
    """[tls] issuers may be one PEM bundle instead of a directory."""
    srv = start_server({"tls": {"issuers": str(pki / "issuers.pem")}})
    for name in ("agent1", "agent-ca2"):
        out, rc = s_client(srv, "-tls1_3", name=name)
        assert http_ok(out), out
    assert sorted(ca_names(s_client(srv, "-tls1_2")[0]) or []) == sorted(
        [AGENTS_CA_NAME, AGENTS_CA2_NAME])
    kind, detail = attempt_upload(srv, "untrusted")
    assert kind != "response", detail


def test_single_issuer_trusts_only_it(start_server, pki):
    """With only agents-ca2 configured, agent1 (agents-ca) is refused."""
    srv = start_server({"tls": {"issuers": str(pki / "agents-ca2.pem")}})
    out, rc = s_client(srv, "-tls1_3", name="agent-ca2")
    assert http_ok(out), out
    kind, detail = attempt_upload(srv, "agent1")
    assert kind != "response", detail
    assert srv.uploads("agent1.example") == []


def test_rsa_server_certificate(start_server, pki, tmp_path):
    key, csr, crt = tmp_path / "rsa.key", tmp_path / "rsa.csr", tmp_path / "rsa.pem"
    ext = tmp_path / "ext.cnf"
    ext.write_text("subjectAltName = DNS:localhost,IP:127.0.0.1\n"
                   "extendedKeyUsage = serverAuth\n")
    subprocess.run(["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", key, "-subj", "/CN=localhost", "-out", csr],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", pki / "server-ca.pem",
                    "-CAkey", pki / "server-ca.key", "-CAcreateserial", "-days", "30",
                    "-extfile", ext, "-out", crt], check=True, capture_output=True)
    srv = start_server({"tls": {"cert": str(crt), "key": str(key)}})
    for flag in ("-tls1_2", "-tls1_3"):
        out, rc = s_client(srv, flag)
        assert "Server public key is 2048 bit" in out, out
        assert "Verify return code: 0 (ok)" in out, out
        assert http_ok(out), out


@pytest.mark.parametrize("flag", ["-tls1_2", "-tls1_3"])
def test_resumption_s_client(server, tmp_path, flag):
    sess = tmp_path / "sess.pem"
    out1, _ = s_client(server, flag, "-sess_out", sess)
    assert http_ok(out1), out1
    assert "New, " in out1
    assert sess.exists() and sess.stat().st_size > 0, "no session saved (no ticket?)"
    # several resumptions: with two workers, a ticket must resume on either
    for _ in range(3):
        out2, _ = s_client(server, flag, "-sess_in", sess)
        assert "Reused, " in out2, out2
        assert http_ok(out2), out2


@pytest.mark.parametrize("v", list(VERSIONS))
def test_resumption_python(server, v):
    ctx = pinned(server, v)
    with tls_connect(server, ctx=ctx) as c:
        c.send(build_request("GET", "/ManageSoftDL/policy.xml"))
        assert c.read_response().status == 200
        assert not c.tls.session_reused
        session = c.tls.session
    assert session is not None and session.has_ticket, "server issued no session ticket"
    for _ in range(3):
        name = unique_name(f"resumed-{v}")
        with tls_connect(server, ctx=ctx, session=session) as c:
            assert c.tls.session_reused, f"TLS {v} session not resumed"
            # the resumed connection still knows its device identity
            c.send(build_request("PUT", f"/ManageSoftRL/Inventories/{name}", body=b"resumed"))
            assert c.read_response().status == 201
        row = server.find_upload(name, "agent1.example")
        assert server.upload_bytes(row["id"]) == b"resumed"


def test_ticket_from_other_server_not_resumed(server, start_server):
    """Tickets are encrypted with this server's keys: another beacond (with
    its own start-up keys) does a full handshake."""
    other = start_server()
    ctx = pinned(server, "1.3")
    with tls_connect(server, ctx=ctx) as c:
        c.send(build_request("GET", "/ManageSoftDL/policy.xml"))
        assert c.read_response().status == 200
        session = c.tls.session
    with tls_connect(other, ctx=ctx, session=session) as c:
        assert not c.tls.session_reused
        c.send(build_request("GET", "/ManageSoftDL/policy.xml"))
        assert c.read_response().status == 200


def tls11_client_ok_control(server):
    """Proves the local client really offers TLS 1.1: it completes a TLS 1.1
    handshake with an openssl s_server configured for TLS 1.1."""
    port = free_port()
    pki = server.pki
    srv = subprocess.Popen(
        ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-tls1_1",
         "-cipher", "DEFAULT@SECLEVEL=0", "-cert", pki / "server.pem",
         "-key", pki / "server.key", "-naccept", "1", "-quiet"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        out = ""
        for _ in range(50):
            p = subprocess.run(
                ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_1",
                 "-cipher", "DEFAULT@SECLEVEL=0", "-CAfile", pki / "server-ca.pem"],
                input=b"", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
            out = p.stdout.decode(errors="replace")
            if "Connection refused" not in out and "connect:errno" not in out:
                break
            time.sleep(0.1)
        return out
    finally:
        srv.kill()
        srv.wait()


def test_tls11_refused_s_client(server):
    control = tls11_client_ok_control(server)
    assert "Cipher is ECDHE" in control, f"local openssl cannot do TLS 1.1:\n{control}"
    out, rc = s_client(server, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
    assert rc != 0, out
    assert "no protocols available" not in out, out
    assert "Cipher is (NONE)" in out, out
    assert "HTTP/1.1" not in out, out


@pytest.mark.parametrize("v", ["1.0", "1.1"])
def test_old_tls_refused_python(server, v):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ver = {"1.0": ssl.TLSVersion.TLSv1, "1.1": ssl.TLSVersion.TLSv1_1}[v]
        ctx = client_context(server.pki, "agent1", min_version=ver, max_version=ver,
                             ciphers="DEFAULT@SECLEVEL=0")
    before = len(server.uploads("agent1.example"))
    kind, detail = attempt_upload(server, "agent1", ctx=ctx)
    assert kind == "handshake", f"TLS {v} client got {kind}: {detail}"
    assert len(server.uploads("agent1.example")) == before


def test_ecdsa_server_certificate(server):
    out, rc = s_client(server, "-tls1_3")
    assert re.search(r"Server public key is 256 bit", out), out
    assert "Verify return code: 0 (ok)" in out, out


def _only_segments_from(sock, port):
    """A classic BPF filter: the socket queues only IPv4 TCP from `port`.
    Without it every frame on lo is queued, and another test's big upload
    beside this one (a busy machine, parallel workers) overflows the queue:
    the segments this test counts are dropped before it reads them."""
    prog = [
        (0x28, 0, 0, 12),      # ldh [12]            ethertype
        (0x15, 0, 6, 0x0800),  # jeq IPv4, else drop
        (0x30, 0, 0, 23),      # ldb [23]            IP protocol
        (0x15, 0, 4, 6),       # jeq TCP, else drop
        (0xB1, 0, 0, 14),      # ldxb 4*([14]&0xf)   IP header length
        (0x48, 0, 0, 14),      # ldh [x+14]          TCP source port
        (0x15, 0, 1, port),    # jeq port, else drop
        (0x06, 0, 0, 0x40000),  # ret: keep the frame
        (0x06, 0, 0, 0),       # ret: drop
    ]
    code = b"".join(struct.pack("HBBI", *ins) for ins in prog)
    buf = ctypes.create_string_buffer(code)
    fprog = struct.pack("HL", len(prog), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)


SO_ATTACH_FILTER = 26


def _server_data_segments(sock, port):
    """Payload sizes of the TCP segments from `port` that a packet socket on
    lo has captured, in order (each frame once: its incoming copy)."""
    sizes = []
    while True:
        try:
            frame, addr = sock.recvfrom(70000)
        except BlockingIOError:
            return sizes
        if addr[2] == socket.PACKET_OUTGOING or len(frame) < 34 or frame[12:14] != b"\x08\x00":
            continue
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        if ip[9] != 6:
            continue
        total = int.from_bytes(ip[2:4], "big")
        tcp = ip[ihl:]
        if int.from_bytes(tcp[0:2], "big") != port:
            continue
        payload = total - ihl - (tcp[12] >> 4) * 4
        if payload > 0:
            sizes.append(payload)


@pytest.mark.parametrize("v", list(VERSIONS))
def test_response_and_close_notify_share_a_segment(server, v):
    """Output leaves once per connection per worker turn: a response that
    closes its connection goes out with its close_notify in one segment, so
    a whole upload costs the server three data segments (its flight; the
    end of its handshake; the answer), not four."""
    # Protocol 0: the socket takes nothing until bound, after its filter.
    cap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        _only_segments_from(cap, server.port)
        cap.bind(("lo", 0x0003))  # ETH_P_ALL (Python swaps it to network order)
        cap.setblocking(False)
        with tls_connect(server, ctx=pinned(server, v)) as c:
            c.send(build_request("PUT", "/ManageSoftRL/inventory/" + unique_name(),
                                 ("Connection: close",), b"x" * 1000))
            r = c.read_response()
            assert r.status == 201, r
            assert c.tls.recv(1) == b""  # close_notify arrived with the answer
        # Every segment read above passed the capture on its way (lo hands a
        # copy to packet sockets as it sends): no wait needed.
        sizes = _server_data_segments(cap, server.port)
    finally:
        cap.close()
    assert 2 <= len(sizes) <= 3, sizes
