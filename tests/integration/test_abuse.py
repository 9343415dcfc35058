"""Abuse limits and TLS policy: each limit refuses what it should and lets
the good agents through; bad key files and weak certificates are refused."""

import os
import shutil
import socket
import ssl
import subprocess
import time

import pytest

from helpers import (BEACOND, HttpConn, build_request, client_context, listen_queue,
                     tls_connect, unique_name)
import certkit
from trustkit import ctl, wait_until

UP = "/ManageSoftRL/Inventories/"


def handshake_ok(server, name="agent1"):
    """True when a full mutual-TLS handshake and one GET (200) succeed;
    False when the server closed the connection before its handshake
    finished, the way every connection limit refuses (at accept: no
    ServerHello, no alert, just the close). Anything else (a timeout, an
    alert, another status) is not a limit's refusal and fails the test."""
    try:
        c = tls_connect(server, name, timeout=10)
    except (ssl.SSLEOFError, ConnectionResetError, BrokenPipeError, ssl.SSLZeroReturnError):
        return False
    with c:
        c.send(build_request("GET", "/ManageSoftDL/policy.xml"))
        resp = c.read_response(timeout=10)
    assert resp.status == 200, resp
    return True


def refusals(server, which):
    """beaconctl stats' count of refusals by one limit."""
    return ctl(server, {"cmd": "stats"})[which]


def admitted_again(server):
    """A timer or a close gives the limit back: the next attempt is
    admitted, eventually (a loaded machine may take longer, never less)."""
    return wait_until(lambda: handshake_ok(server), 30)


def test_connections_per_source_limit(start_server):
    srv = start_server({"server": {"workers": "1"},
                        "limits": {"max_connections_per_source": "2"}})
    held = [tls_connect(srv) for _ in range(2)]
    try:
        for c in held:  # both really are established
            c.send(build_request("GET", "/ManageSoftDL/policy.xml"))
            assert c.read_response().status == 200
        before = refusals(srv, "refused_per_source")
        assert not handshake_ok(srv), "a third connection from one source was admitted"
        assert refusals(srv, "refused_per_source") == before + 1
    finally:
        for c in held:
            c.close()
    assert admitted_again(srv), "the source was not admitted again after its connections closed"


def test_handshake_rate_per_source(start_server):
    srv = start_server({"server": {"workers": "1"},
                        "limits": {"handshake_rate_per_source": "3"}})
    results = [handshake_ok(srv) for _ in range(8)]
    assert results[:3] == [True, True, True], results
    assert not all(results), f"8 connections in a burst all passed a 3/s limit: {results}"
    assert refusals(srv, "refused_rate") == results.count(False), results
    assert admitted_again(srv), "the bucket never refilled"


def test_handshakes_in_progress_cap(start_server):
    """Silent TCP connections hold handshake slots; past the cap a new one
    is not taken (it waits in the listen queue: not accepted, not closed),
    an established upload carries on, and the waiting one is served once a
    slot frees."""
    srv = start_server({"server": {"workers": "1"},
                        "limits": {"max_handshakes_in_progress": "3",
                                   "handshake_timeout": "30s"}})
    established = tls_connect(srv)
    silent = [socket.create_connection((srv.host, srv.port)) for _ in range(3)]
    waiting = None
    try:
        # The three silent connections hold the three slots once accepted.
        assert wait_until(lambda: ctl(srv, {"cmd": "stats"})["connections_accepted"] >= 4, 30)
        waiting = socket.create_connection((srv.host, srv.port), timeout=30)
        assert wait_until(lambda: listen_queue(srv.port) == 1, 30), \
            f"the connection past the cap is not waiting: queue {listen_queue(srv.port)}"
        # The established connection still uploads.
        data = os.urandom(64 * 1024)
        established.send(build_request("PUT", UP + unique_name("during-flood"), body=data))
        assert established.read_response().status == 201
        # ...and the loop that served it left the one past the cap waiting.
        assert listen_queue(srv.port) == 1
        assert ctl(srv, {"cmd": "stats"})["connections_accepted"] == 4
        assert refusals(srv, "refused_handshakes") == 0
        silent[0].close()  # a slot frees: the waiting connection takes it
        ctx = client_context(srv.pki, "agent1")
        with HttpConn(ctx.wrap_socket(waiting, server_hostname="localhost")) as c:
            waiting = None
            c.send(build_request("GET", "/ManageSoftDL/policy.xml"))
            assert c.read_response().status == 200
    finally:
        for s in silent:
            s.close()
        if waiting is not None:
            waiting.close()
        established.close()
    assert refusals(srv, "refused_handshakes") == 0
    assert admitted_again(srv), "handshake slots were not given back"


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
    assert certkit.refusal_alert(srv, ctx) == "bad_certificate"
    assert "SHA-1" in srv.stderr(), srv.stderr()
    assert handshake_ok(srv)


def test_renegotiation_refused(start_server):
    """A TLS 1.2 client that asks to renegotiate gets an alert, not a new
    handshake on the same connection."""
    srv = start_server()
    client = subprocess.Popen(["openssl", "s_client", "-connect", f"{srv.host}:{srv.port}",
                               "-CAfile", str(srv.pki / "server-ca.pem"),
                               "-cert", str(srv.pki / "agent1.pem"),
                               "-key", str(srv.pki / "agent1.key"), "-tls1_2"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
    try:
        # The handshake is done once s_client prints its verdict on us.
        out = b""
        while b"Verify return code" not in out:
            line = client.stdout.readline()
            assert line, f"s_client ended before its handshake finished: {out!r}"
            out += line
        client.stdin.write(b"R\n")  # s_client's "renegotiate" command
        client.stdin.flush()
        rest, _ = client.communicate(timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
    out = (out + rest).decode(errors="replace")
    assert "RENEGOTIATING" in out, out  # the client really asked
    # beacond's wolfSSL has no renegotiation built in: a ClientHello on an
    # established TLS 1.2 connection is an unexpected message, a fatal
    # alert that ends the connection.
    assert "alert unexpected message" in out, out
    assert handshake_ok(srv)


def test_total_connections_limit(start_server):
    """Past max_connections (per worker) a new connection is closed at once;
    the ones already open keep working."""
    srv = start_server({"server": {"workers": "1"}, "limits": {"max_connections": "3"}})
    held = [tls_connect(srv) for _ in range(3)]
    try:
        # A fourth (and fifth) connection are refused.
        assert not handshake_ok(srv), "a connection past max_connections was admitted"
        assert ctl(srv, {"cmd": "stats"})["connections_refused"] == 1
        for c in held:
            c.send(build_request("GET", "/ManageSoftDL/policy.xml"))
            assert c.read_response().status == 200
    finally:
        for c in held:
            c.close()
    assert admitted_again(srv)


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
