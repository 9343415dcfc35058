"""PROXY protocol on the listener ([server] proxy_protocol, proxy_from):
a balancer's header names the agent, whose address the logs, the access
log and the per-source limits then see; a header from a peer not in
proxy_from, a malformed one or none at all is refused before TLS (no byte
of a ServerHello), counted and logged. And a real HAProxy in front with
send-proxy-v2."""

import re
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from helpers import BACKEND, HttpConn, build_request, client_context, free_port, unique_name
from trustkit import ctl, wait_until

UP = "/ManageSoftRL/Inventories/"
V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v2_header(src, sport, dst="127.0.0.1", dport=443, command=1):
    """A v2 PROXY (command 1) or LOCAL (0) header, TCP over IPv4."""
    addrs = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return V2_SIG + bytes([0x20 | command, 0x11]) + struct.pack("!H", len(addrs)) + addrs


def v1_header(src, sport, dst="127.0.0.1", dport=443):
    return f"PROXY TCP4 {src} {dst} {sport} {dport}\r\n".encode()


def proxied_connect(srv, header, name="agent1", timeout=10.0):
    """A raw socket that sends `header`, then mutual TLS over it."""
    raw = socket.create_connection((srv.host, srv.port), timeout=timeout)
    try:
        raw.sendall(header)
        tls = client_context(srv.pki, name).wrap_socket(raw, server_hostname="localhost")
    except BaseException:
        raw.close()
        raise
    conn = HttpConn(tls)
    conn.tls = tls
    return conn


def closed_before_tls(srv, first_bytes):
    """Sends `first_bytes` and a TLS ClientHello after them (Python's ssl
    over the same socket) and returns the bytes beacond answered before it
    closed: b"" when it closed without a byte of TLS."""
    raw = socket.create_connection((srv.host, srv.port), timeout=10)
    with raw:
        try:
            raw.sendall(first_bytes)
        except ConnectionResetError:
            # Refused at accept: the DPDK stack resets at once (the
            # caller's counter and log line say which refusal it was).
            return b""
        # The ClientHello, from an in-memory TLS client.
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = client_context(srv.pki).wrap_bio(inc, out, server_hostname="localhost")
        with pytest.raises(ssl.SSLWantReadError):
            obj.do_handshake()
        try:
            raw.sendall(out.read())
        except (BrokenPipeError, ConnectionResetError):
            pass
        got = b""
        while True:
            try:
                data = raw.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            got += data
        return got


def proxy_refused(srv):
    return ctl(srv, {"cmd": "stats"})["proxy_refused"]


def upload_through(srv, header, body=b"proxied upload\n"):
    name = unique_name("proxy")
    with proxied_connect(srv, header) as c:
        c.send(build_request("PUT", UP + name, body=body))
        resp = c.read_response()
    assert resp.status == 201, resp
    return name


def access_line(srv, peer, name):
    """The access-log line of the upload `name`, once logged."""
    def find():
        for line in srv.stderr().splitlines():
            if "access:" in line and name in line:
                return line
        return None
    line = wait_until(find, 30)
    assert line, f"no access line for {name}:\n{srv.stderr()[-3000:]}"
    assert f"access: {peer} " in line, line
    return line


# The clients' own networks: loopback, and the DPDK runs' tap network
# (over_dpdk.sh), where a client reaches beacond from 198.18.0.0/15.
CLIENTS = "127.0.0.0/8, 198.18.0.0/15"


def proxied_server(start_server, version="v2", source=CLIENTS, limits=None):
    return start_server({"server": {"workers": "1", "proxy_protocol": version,
                                    "proxy_from": source},
                         "limits": dict(limits or {})})


def test_v2_header_names_the_agent(start_server):
    srv = proxied_server(start_server, "v2")
    name = upload_through(srv, v2_header("198.18.5.5", 40001))
    access_line(srv, "198.18.5.5:40001", name)
    assert srv.find_upload(name), "the upload was not stored"
    # A refusal is logged under the claimed address too: no certificate.
    raw = socket.create_connection((srv.host, srv.port), timeout=10)
    raw.sendall(v2_header("198.18.5.6", 40002))
    with pytest.raises(ssl.SSLError):
        with client_context(srv.pki, None).wrap_socket(raw, server_hostname="localhost") as t:
            t.sendall(build_request("GET", "/ManageSoftDL/policy.xml"))
            t.recv(100)
    assert wait_until(lambda: any("198.18.5.6:40002" in l and "access:" not in l
                                  for l in srv.stderr().splitlines()), 30), srv.stderr()[-2000:]


def test_v2_local_keeps_the_balancers_address(start_server):
    srv = proxied_server(start_server, "v2")
    c = proxied_connect(srv, v2_header("0.0.0.0", 0, command=0))
    name = unique_name("local")
    with c:
        c.send(build_request("PUT", UP + name, body=b"health\n"))
        assert c.read_response().status == 201
        local = c.tls.getsockname()
    access_line(srv, f"{local[0]}:{local[1]}", name)


def test_v1_header_names_the_agent(start_server):
    srv = proxied_server(start_server, "v1")
    name = upload_through(srv, v1_header("198.18.5.5", 40003))
    access_line(srv, "198.18.5.5:40003", name)
    # v2 where only v1 is taken: refused before TLS
    before = proxy_refused(srv)
    assert closed_before_tls(srv, v2_header("198.18.5.5", 40004)) == b""
    assert proxy_refused(srv) == before + 1


def test_any_takes_both(start_server):
    srv = proxied_server(start_server, "any")
    a = upload_through(srv, v1_header("198.18.5.7", 40005))
    b = upload_through(srv, v2_header("198.18.5.8", 40006))
    access_line(srv, "198.18.5.7:40005", a)
    access_line(srv, "198.18.5.8:40006", b)


@pytest.mark.parametrize("first_bytes, reason", [
    (b"PROXY TCP4 198.18.5.5 127.0.0.1 99999 443\r\n", "v1 port"),
    (b"PROXY TCP4 198.18.5.5\r\n", "v1 line not"),
    (b"PROXY " + b"A" * 200, "v1 line without CRLF"),
    (V2_SIG + b"\x21\x11\xff\xff", "v2 length over"),
    (V2_SIG + b"\x31\x11\x00\x0c" + b"\0" * 12, "v2 version"),
    (V2_SIG + b"\x21\x12\x00\x0c" + b"\0" * 12, "v2 not TCP"),
    (b"", "no PROXY header"),  # a plain TLS client: its ClientHello is refused
])
def test_malformed_header_closed_before_tls(start_server, first_bytes, reason):
    srv = proxied_server(start_server, "any")
    before = proxy_refused(srv)
    assert closed_before_tls(srv, first_bytes) == b"", "beacond answered a bad header"
    assert proxy_refused(srv) == before + 1
    assert wait_until(lambda: f"bad PROXY header: {reason}" in srv.stderr(), 30), \
        srv.stderr()[-2000:]


def test_peer_not_in_proxy_from_is_refused(start_server):
    srv = proxied_server(start_server, "v2", source="10.0.0.0/8, fd00::/8")
    before = proxy_refused(srv)
    assert closed_before_tls(srv, v2_header("198.18.5.5", 40007)) == b""
    # Over DPDK a refusal at accept can be counted twice: the stack's SYN
    # cookies open a connection on each valid ACK, and the client's data
    # segment after the reset is one more.
    assert proxy_refused(srv) - before in ((1,) if BACKEND == "kernel" else (1, 2))
    assert wait_until(lambda: "not in [server] proxy_from" in srv.stderr(), 30)
    assert "198.18.5.5" not in srv.stderr(), "a refused peer's claim reached the log"


def test_per_source_limit_applies_to_the_claimed_address(start_server):
    srv = proxied_server(start_server, "v2", limits={"max_connections_per_source": "1"})
    held = [proxied_connect(srv, v2_header("198.18.5.5", 40010)),
            proxied_connect(srv, v2_header("198.18.5.9", 40011))]
    try:
        for c in held:  # both are admitted although from one real peer
            c.send(build_request("GET", "/ManageSoftDL/policy.xml"))
            assert c.read_response().status == 200
        before = ctl(srv, {"cmd": "stats"})["refused_per_source"]
        assert closed_before_tls(srv, v2_header("198.18.5.5", 40012)) == b""
        assert ctl(srv, {"cmd": "stats"})["refused_per_source"] == before + 1
        assert wait_until(lambda: "198.18.5.5:40012: refused by the per-source limits"
                          in srv.stderr(), 30), srv.stderr()[-2000:]
    finally:
        for c in held:
            c.close()


def test_config_refuses_proxy_without_proxy_from(start_server):
    srv = start_server({"server": {"proxy_protocol": "v2"}}, start=False)
    p = subprocess.run(srv.command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    assert p.returncode != 0
    assert f"{srv.conf}:" in p.stderr.decode(), p.stderr  # file:line
    assert "proxy_protocol is on but proxy_from names no peer" in p.stderr.decode(), p.stderr


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy not installed")
def test_haproxy_send_proxy_v2(start_server, tmp_path):
    srv = proxied_server(start_server, "v2")
    hport = free_port()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(f"""global
    maxconn 100
defaults
    mode tcp
    timeout connect 10s
    timeout client 60s
    timeout server 60s
frontend fe
    bind 127.0.0.1:{hport}
    default_backend be
backend be
    server s1 {srv.host}:{srv.port} send-proxy-v2
""")
    hap = subprocess.Popen(["haproxy", "-f", str(cfg), "-db"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
    try:
        def listening():
            try:
                socket.create_connection(("127.0.0.1", hport), timeout=1).close()
                return True
            except OSError:
                return False
        assert wait_until(listening, 30), "haproxy did not listen"
        name = unique_name("haproxy")
        body = Path(tempfile.mkstemp(dir=tmp_path)[1])
        body.write_bytes(b"through haproxy\n")
        p = subprocess.run(
            ["curl", "-sS", "--max-time", "60", "--cacert", str(srv.pki / "server-ca.pem"),
             "--cert", str(srv.pki / "agent1.pem"), "--key", str(srv.pki / "agent1.key"),
             "-T", str(body), "-o", "/dev/null", "-w", "%{http_code} %{local_port}",
             f"https://127.0.0.1:{hport}{UP}{name}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=90)
        code, local_port = p.stdout.decode().split()
        assert code == "201", p.stderr
        # beacond sees curl's own address and port, not haproxy's
        access_line(srv, f"127.0.0.1:{local_port}", name)
    finally:
        hap.terminate()
        hap.wait(timeout=10)


def test_refusal_flood_does_not_flood_the_log(start_server):
    """Every connection from a peer outside proxy_from is a refusal anyone
    can cause: they are all counted, but the log takes at most 10 lines a
    second per worker, the rest summed up on the next line."""
    srv = proxied_server(start_server, "v2", source="10.0.0.0/8")
    before = proxy_refused(srv)
    n = 300

    def knock(_):
        try:
            with socket.create_connection((srv.host, srv.port), timeout=10) as s:
                s.recv(1)
        except OSError:
            pass
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=50) as pool:
        list(pool.map(knock, range(n)))
    assert wait_until(lambda: proxy_refused(srv) - before >= n, 30), proxy_refused(srv)
    text = srv.stderr()
    lines = text.count("not in [server] proxy_from")
    left_out = sum(int(m) for m in re.findall(r"\[(\d+) such lines left out before this one\]",
                                               text))
    assert lines + left_out <= n, (lines, left_out)
    assert lines < n, f"{lines} log lines for {n} refused connections: no budget"
