"""Abuse limits and TLS policy: each limit refuses what it should and lets
the good agents through; bad key files and weak certificates are refused."""

import os
import shutil
import socket
import ssl
import subprocess
import time

import pytest

from helpers import BEACOND, build_request, tls_connect, unique_name

UP = "/ManageSoftRL/Inventories/"


def handshake_ok(server, name="agent1"):
    """True when a full mutual-TLS handshake and one GET succeed."""
    try:
        with tls_connect(server, name, timeout=5) as c:
            c.send(build_request("GET", "/ManageSoftDL/policy.xml"))
            return c.read_response(timeout=5).status == 200
    except (ssl.SSLError, OSError, ConnectionError, Exception):
        return False


def test_connections_per_source_limit(start_server):
    srv = start_server({"server": {"workers": "1"},
                        "limits": {"max_connections_per_source": "2"}})
    held = [tls_connect(srv) for _ in range(2)]
    try:
        for c in held:  # both really are established
            c.send(build_request("GET", "/ManageSoftDL/policy.xml"))
            assert c.read_response().status == 200
        assert not handshake_ok(srv), "a third connection from one source was admitted"
    finally:
        for c in held:
            c.close()
    time.sleep(0.3)
    assert handshake_ok(srv), "the source was not admitted again after its connections closed"


def test_handshake_rate_per_source(start_server):
    srv = start_server({"server": {"workers": "1"},
                        "limits": {"handshake_rate_per_source": "3"}})
    results = [handshake_ok(srv) for _ in range(8)]
    assert results[:3] == [True, True, True], results
    assert not all(results), f"8 connections in a burst all passed a 3/s limit: {results}"
    time.sleep(1.5)  # the bucket refills
    assert handshake_ok(srv)


def test_handshakes_in_progress_cap(start_server):
    """Silent TCP connections hold handshake slots; past the cap new ones
    are closed at once, and an established upload carries on."""
    srv = start_server({"server": {"workers": "1"},
                        "limits": {"max_handshakes_in_progress": "3",
                                   "handshake_timeout": "30s"}})
    established = tls_connect(srv)
    silent = [socket.create_connection((srv.host, srv.port)) for _ in range(3)]
    try:
        time.sleep(0.3)
        assert not handshake_ok(srv), "a handshake past the cap was admitted"
        # The established connection still uploads.
        data = os.urandom(64 * 1024)
        established.send(build_request("PUT", UP + unique_name("during-flood"), body=data))
        assert established.read_response().status == 201
    finally:
        for s in silent:
            s.close()
        established.close()
    time.sleep(0.3)
    assert handshake_ok(srv), "handshake slots were not given back"


def test_loose_key_permissions_refused(start_server, tmp_path):
    key = tmp_path / "server.key"
    srv = start_server(start=False)
    shutil.copy(srv.pki / "server.key", key)
    os.chmod(key, 0o644)
    conf = srv.conf.read_text().replace(str(srv.pki / "server.key"), str(key))
    srv.conf.write_text(conf)
    p = subprocess.run([str(BEACOND), "-t", "-c", str(srv.conf)], capture_output=True, timeout=30)
    assert p.returncode != 0
    assert b"0644" in p.stderr and str(key).encode() in p.stderr, p.stderr
    os.chmod(key, 0o600)
    p = subprocess.run([str(BEACOND), "-t", "-c", str(srv.conf)], capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr


def test_sha1_signed_client_certificate_refused(start_server, tmp_path, pki):
    """A certificate the trusted CA signed with SHA-1 is refused."""
    key, csr, crt = tmp_path / "sha1.key", tmp_path / "sha1.csr", tmp_path / "sha1.pem"
    ext = tmp_path / "ext.cnf"
    ext.write_text("keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n")
    subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout",
                    "-out", str(key)], check=True, capture_output=True)
    subprocess.run(["openssl", "req", "-new", "-key", str(key), "-subj", "/CN=sha1.example",
                    "-out", str(csr)], check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(pki / "agents-ca.pem"),
                    "-CAkey", str(pki / "agents-ca.key"), "-CAcreateserial", "-sha1",
                    "-days", "30", "-extfile", str(ext), "-out", str(crt)],
                   check=True, capture_output=True)
    srv = start_server()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki / "server-ca.pem")
    # The client side must agree to send a SHA-1 certificate at all.
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.load_cert_chain(crt, key)
    ok = True
    try:
        with tls_connect(srv, ctx=ctx, timeout=5) as c:
            c.send(build_request("GET", "/ManageSoftDL/policy.xml"))
            ok = c.read_response(timeout=5).status == 200
    except Exception:
        ok = False
    assert not ok, "a SHA-1-signed client certificate was admitted"
    assert "SHA-1" in srv.stderr(), srv.stderr()
    assert handshake_ok(srv)


def test_renegotiation_refused(start_server):
    """A TLS 1.2 client that asks to renegotiate gets an alert, not a new
    handshake on the same connection."""
    srv = start_server()
    script = "sleep 1; echo R; sleep 2"
    cmd = (f"({script}) | openssl s_client -connect {srv.host}:{srv.port} "
           f"-CAfile {srv.pki / 'server-ca.pem'} -cert {srv.pki / 'agent1.pem'} "
           f"-key {srv.pki / 'agent1.key'} -tls1_2")
    out = subprocess.run(["bash", "-c", cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         timeout=20).stdout.decode(errors="replace")
    assert "RENEGOTIATING" in out, out  # the client really asked
    assert "alert" in out, out
    assert handshake_ok(srv)


def test_total_connections_limit(start_server):
    """Past max_connections (per worker) a new connection is closed at once;
    the ones already open keep working."""
    srv = start_server({"server": {"workers": "1"}, "limits": {"max_connections": "3"}})
    held = [tls_connect(srv) for _ in range(3)]
    try:
        # A fourth (and fifth) connection are refused.
        assert not handshake_ok(srv), "a connection past max_connections was admitted"
        for c in held:
            c.send(build_request("GET", "/ManageSoftDL/policy.xml"))
            assert c.read_response().status == 200
    finally:
        for c in held:
            c.close()
    time.sleep(0.3)
    assert handshake_ok(srv)


def test_privileges_dropped(start_server, tmp_path):
    """[server] user: after binding, beacond runs as that user."""
    import pwd
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody'")
    if os.geteuid() != 0:
        pytest.skip("needs root to start as root")
    # pytest's own temporary folders are 0700 root all the way up: the data
    # directory goes where `nobody` can reach it, as /var/lib/beacond is.
    import tempfile
    data_dir = tempfile.mkdtemp(prefix="beacond-nobody-")
    srv = start_server({"server": {"user": "nobody", "data_dir": data_dir}})
    status = open(f"/proc/{srv.proc.pid}/status").read()
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert uid_line.split()[1:] == [str(nobody.pw_uid)] * 4, uid_line
    assert "running as nobody" in srv.stderr()
    assert handshake_ok(srv)
    # The store stays writable: the data directory was handed over.
    data = os.urandom(300_000)
    with tls_connect(srv) as c:
        c.send(build_request("PUT", UP + unique_name("as-nobody"), body=data))
        assert c.read_response().status == 201
    srv.stop()
    shutil.rmtree(data_dir, ignore_errors=True)
