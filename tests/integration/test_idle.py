"""Idle keep-alive connections. After the handshake wolfSSL keeps neither the
client's certificate nor the handshake's state (scripts/setup.sh builds it
without them, to hold per-connection memory down): a connection that sat idle
must still upload under the identity it authenticated with, take TLS 1.3
post-handshake messages, and hand out tickets that resume as that identity;
and a few hundred idle connections must cost the server little memory each."""

import os
import ssl
import subprocess
import time

import pytest

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certkit import Cert, cn, make_cert
from helpers import BEACOND, build_request, client_context, tls_connect, unique_name
from trustkit import ctl, wait_until

VERSIONS = {"1.2": "TLSv1_2", "1.3": "TLSv1_3"}


def put(c, name, data):
    c.send(build_request("PUT", f"/ManageSoftRL/Inventories/{name}", body=data))
    return c.read_response()


def idle(c, seconds):
    """Waits with nothing in flight (reads anything the server sends after
    the handshake, such as TLS 1.3 tickets, without sending a byte)."""
    closed, rest = c.wait_closed(seconds)
    assert not closed, "the server closed an idle keep-alive connection"
    assert rest == b""


def stored_under(server, name, device):
    row = server.find_upload(name, device)
    assert row["device"] == device
    return row


@pytest.mark.parametrize("v", list(VERSIONS))
def test_idle_then_upload_again(server, v):
    """Handshake, idle, upload; idle, upload again: every upload is filed
    under the certificate's identity, on the one connection."""
    ver = getattr(ssl.TLSVersion, VERSIONS[v])
    names = [unique_name(f"idle{v}-{i}") for i in range(3)]
    datas = [os.urandom(n) for n in (100, 20_000, 0)]
    with tls_connect(server, "agent2", min_version=ver, max_version=ver) as c:
        idle(c, 1.5)
        r0 = put(c, names[0], datas[0])
        idle(c, 1.5)
        r1 = put(c, names[1], datas[1])
        idle(c, 0.5)
        r2 = put(c, names[2], datas[2])
        assert c.tls.version() == f"TLSv{v}"
    assert [r.status for r in (r0, r1, r2)] == [201, 201, 201]
    for n, d in zip(names, datas):
        row = stored_under(server, n, "agent2.example")
        assert server.upload_bytes(row["id"]) == d


@pytest.mark.parametrize("v", list(VERSIONS))
def test_ticket_from_idle_connection_resumes_identity(server, v):
    """The ticket of a connection that went idle resumes as its identity."""
    ver = getattr(ssl.TLSVersion, VERSIONS[v])
    ctx = client_context(server.pki, "agent3", min_version=ver, max_version=ver)
    first, second = unique_name(f"tkt{v}-a"), unique_name(f"tkt{v}-b")
    with tls_connect(server, ctx=ctx) as c:
        idle(c, 1.0)
        assert put(c, first, b"first").status == 201
        idle(c, 0.5)
        session = c.tls.session
    assert session is not None
    with tls_connect(server, ctx=ctx, session=session) as c:
        assert c.tls.session_reused, "the ticket did not resume"
        assert put(c, second, b"second").status == 201
    stored_under(server, first, "agent3.example")
    stored_under(server, second, "agent3.example")


def test_key_update_after_idle(server):
    """A TLS 1.3 client that idles, then updates its keys (asking the server
    to update too) before its next request, is answered under the new keys."""
    get = b"GET /ManageSoftDL/policy.xml HTTP/1.1\r\nHost: localhost\r\n\r\n"
    last = (b"GET /ManageSoftDL/policy.xml HTTP/1.1\r\nHost: localhost\r\n"
            b"Connection: close\r\n\r\n")
    client = subprocess.Popen(["openssl", "s_client", "-connect", f"{server.host}:{server.port}",
                               "-CAfile", str(server.pki / "server-ca.pem"),
                               "-cert", str(server.pki / "agent1.pem"),
                               "-key", str(server.pki / "agent1.key"), "-tls1_3"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
    out = b""

    def read_until(marker, times=1):
        nonlocal out
        while out.count(marker) < times:
            line = client.stdout.readline()
            assert line, f"s_client ended before {marker!r}: {out.decode(errors='replace')}"
            out += line

    try:
        client.stdin.write(get)
        client.stdin.flush()
        read_until(b"</policy>")  # the first answer, whole
        time.sleep(2)  # the idle time this test is about, not a wait for an event
        client.stdin.write(b"K\n")  # s_client: update keys, and ask the server to
        client.stdin.flush()
        read_until(b"KEYUPDATE")
        client.stdin.write(last)
        client.stdin.flush()
        # s_client ends at its input's end: the answer first.
        read_until(b"</policy>", 2)
        rest, _ = client.communicate(timeout=30)
        out += rest
    finally:
        if client.poll() is None:
            client.kill()
    text = out.decode(errors="replace")
    assert text.count("HTTP/1.1 200 OK") == 2, text


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


# Server RSS growth per idle established mutual-TLS connection, measured by
# this test on one worker: about 9 KiB (TLS 1.2 9.4, TLS 1.3 8.6) with
# scripts/setup.sh's trimmed wolfSSL; 66 to 70 KiB with the --enable-all
# build that kept the client's certificate. Repeated runs give the same
# figure to 0.1 KiB, so the bound is far above noise and far below the old
# build.
IDLE_CONNS = 300
MAX_KIB_PER_IDLE_CONN = 20


@pytest.mark.skipif(BEACOND.exists() and b"__asan_init" in BEACOND.read_bytes(),
                    reason="AddressSanitizer's redzones and quarantine are not beacond's memory")
@pytest.mark.parametrize("v", list(VERSIONS))
def test_idle_connection_memory(start_server, v):
    """RSS growth of the server per idle, established mutual-TLS connection
    (after a few warm-up connections, so start-up allocations do not count)."""
    srv = start_server({"server": {"workers": "1"}})
    assert wait_until(srv.control_socket.exists, 10), "no control socket"
    ver = getattr(ssl.TLSVersion, VERSIONS[v])
    ctx = client_context(srv.pki, "agent1", min_version=ver, max_version=ver)
    done = f"handshakes_tls{v.replace('.', '')}"

    def established(n):
        return wait_until(lambda: ctl(srv, {"cmd": "stats"})[done] >= n, 30)

    conns = []
    try:
        for _ in range(20):
            conns.append(tls_connect(srv, ctx=ctx))
        assert established(len(conns)), "warm-up handshakes did not complete"
        before = rss_kib(srv.proc.pid)
        for _ in range(IDLE_CONNS):
            conns.append(tls_connect(srv, ctx=ctx))
        assert established(len(conns)), "handshakes did not complete"
        assert ctl(srv, {"cmd": "stats"})["connections_open"] == len(conns)
        per_conn = (rss_kib(srv.proc.pid) - before) / IDLE_CONNS
    finally:
        for c in conns:
            c.close()
    print(f"TLS {v}: {per_conn:.1f} KiB of server RSS per idle connection")
    assert per_conn < MAX_KIB_PER_IDLE_CONN, (
        f"{per_conn:.1f} KiB of server RSS per idle mutual-TLS connection "
        f"(bound {MAX_KIB_PER_IDLE_CONN} KiB)")


def agents_ca(pki):
    return Cert(x509.load_pem_x509_certificate((pki / "agents-ca.pem").read_bytes()),
                serialization.load_pem_private_key((pki / "agents-ca.key").read_bytes(), None))


# Issue 18 item 6 measured the OpenSSL client with one certificate per
# agent. A server that kept anything per client certificate (a decoded
# copy, a cache entry that grows with the fleet) would show it here and not
# in the test above, whose 320 connections share one certificate. This test
# measured 9.1 KiB per connection at its 300 connections (the heap's first
# growth counts for more at 300: perf/idle-openssl.py measures 6.3 to 7.0
# with 2,000 and 8,000); the bound is the one above, far below the 66 KiB
# of a server that kept each client's certificate.
@pytest.mark.skipif(BEACOND.exists() and b"__asan_init" in BEACOND.read_bytes(),
                    reason="AddressSanitizer's redzones and quarantine are not beacond's memory")
def test_idle_memory_one_certificate_per_agent(start_server, tmp_path):
    """RSS growth per idle TLS 1.3 connection from OpenSSL clients, each
    with its own certificate (the warm-up as above)."""
    srv = start_server({"server": {"workers": "1"}})
    assert wait_until(srv.control_socket.exists, 10), "no control socket"
    ca = agents_ca(srv.pki)
    ctxs = []
    for i in range(20 + IDLE_CONNS):
        crt, key = make_cert(cn(f"idle-agent-{i}.example"), ca).write(tmp_path, f"a{i}")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(str(srv.pki / "server-ca.pem"))
        ctx.load_cert_chain(str(crt), str(key))
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_3
        ctxs.append(ctx)

    def established(n):
        return wait_until(lambda: ctl(srv, {"cmd": "stats"})["handshakes_tls13"] >= n, 30)

    conns = []
    try:
        for ctx in ctxs[:20]:
            conns.append(tls_connect(srv, ctx=ctx))
        assert established(len(conns)), "warm-up handshakes did not complete"
        before = rss_kib(srv.proc.pid)
        for ctx in ctxs[20:]:
            conns.append(tls_connect(srv, ctx=ctx))
        assert established(len(conns)), "handshakes did not complete"
        assert ctl(srv, {"cmd": "stats"})["connections_open"] == len(conns)
        per_conn = (rss_kib(srv.proc.pid) - before) / IDLE_CONNS
        # the last one is still admitted as its own agent
        name = unique_name("idle-agent")
        assert put(conns[-1], name, b"x").status == 201
        stored_under(srv, name, f"idle-agent-{len(ctxs) - 1}.example")
    finally:
        for c in conns:
            c.close()
    print(f"one certificate per agent: {per_conn:.1f} KiB of server RSS per idle connection")
    assert per_conn < MAX_KIB_PER_IDLE_CONN, (
        f"{per_conn:.1f} KiB of server RSS per idle mutual-TLS connection "
        f"(bound {MAX_KIB_PER_IDLE_CONN} KiB)")
