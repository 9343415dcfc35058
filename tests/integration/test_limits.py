"""Body size limit and timeouts, on a server with small limits.

Timers are checked on one side only: a timeout must not fire before its
configured time (a loaded machine can only make it later, never earlier),
and it must fire at all (the client waits a generous 30 s for it; that wait
is a bound on the test, not an assertion on beacond's speed).
"""

import os
import socket
import time

import pytest

# How long a client waits for a timer that must fire; never asserted.
EVENTUALLY = 30

from helpers import build_request, chunked, tls_connect, unique_name

# Every test here but the handshake timer's does a whole TLS handshake
# first, so handshake_timeout stays generous on this server: at 1 s a
# loaded machine's handshake (load 12 on 2 CPUs) once outlasted it, and the
# 1 MiB upload's test saw the close. The handshake timer has a server of
# its own (test_silent_tcp_closed_after_handshake_timeout).
SERVER_CONFIG = {
    "limits": {
        "max_body": "1M",
        "header_timeout": "1s",
        "body_timeout": "1s",
        "idle_timeout": "2s",
        "handshake_timeout": "60s",
    },
}

UP = "/ManageSoftRL/Inventories/"
MIB = 1024 * 1024


@pytest.fixture
def nothing_stored(server):
    before = {r["id"] for r in server.uploads()}
    yield
    after = [r for r in server.uploads() if r["id"] not in before]
    assert after == [], f"uploads were stored: {after}"


def test_body_at_limit_is_stored(server):
    data = os.urandom(MIB)
    name = unique_name("at-limit")
    with tls_connect(server) as c:
        c.send(build_request("PUT", UP + name, body=data))
        resp = c.read_response()
    assert resp.status == 201, resp
    assert server.upload_bytes(server.find_upload(name)["id"]) == data


def test_content_length_over_limit_is_413_before_body(server, nothing_stored):
    """The 413 comes from the head alone: no body byte is sent."""
    head = build_request("PUT", UP + unique_name("too-big"),
                         [f"Content-Length: {2 * MIB}"], b"", content_length=False)
    with tls_connect(server) as c:
        c.send(head)
        resp = c.read_response(timeout=5)
    assert resp.status == 413, resp


def test_expect_over_limit_is_413_not_100(server, nothing_stored):
    head = build_request("PUT", UP + unique_name("too-big-expect"),
                         [f"Content-Length: {MIB + 1}", "Expect: 100-continue"], b"",
                         content_length=False)
    with tls_connect(server) as c:
        c.send(head)
        resp = c.read_response(timeout=5)
    assert resp.status == 413, f"expected 413 instead of 100 Continue, got {resp}"


def test_chunked_over_limit_is_413(server, nothing_stored):
    body = chunked(os.urandom(MIB + 4096), [65536])
    head = build_request("PUT", UP + unique_name("too-big-chunked"),
                         ["Transfer-Encoding: chunked"], b"")
    with tls_connect(server) as c:
        c.send(head)
        # beacond answers 413 at the limit and closes gracefully: FIN after
        # the answer, then it reads and drops what the client still sends
        # (transport_close), so the rest of the body goes through and the
        # 413 is read, not lost to a reset.
        for i in range(0, len(body), 32768):
            c.send(body[i:i + 32768])
        resp = c.read_response(timeout=30)
    assert resp.status == 413, resp


def test_slow_header_is_408_then_close(server, nothing_stored):
    with tls_connect(server) as c:
        c.send(b"PUT " + UP.encode() + b"slow.ndi HTTP/1.1\r\nHost: local")
        assert c.quiet_for(0.7), f"answered before header_timeout (1 s): {c.buf!r}"
        resp = c.read_response(timeout=EVENTUALLY)
        assert resp.status == 408, resp
        closed, _ = c.wait_closed(EVENTUALLY)
    assert closed, "connection stayed open after 408"


def test_trickled_header_is_408(server, nothing_stored):
    """header_timeout bounds the whole head, not the gap between bytes: a
    head sent a byte every 0.1 s (each gap a tenth of the 1 s timeout) that
    would take 30 s to finish is answered 408 while bytes are still to come."""
    head = build_request("PUT", UP + unique_name("trickle"), ["X-Pad: " + "p" * 300], b"x")
    sent = 0
    with tls_connect(server) as c:
        got = None
        for i in range(len(head) - 3):
            try:
                c.send(head[i:i + 1])
            except OSError:
                break
            sent = i + 1
            c.sock.settimeout(0.1)
            try:
                data = c.sock.recv(65536)
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                break
            c.buf += data
            if not data or b"\r\n\r\n" in c.buf:
                break
        got = c.read_response(timeout=EVENTUALLY)
    assert got.status == 408, got
    assert sent < len(head) - 3, "the whole head trickled in without a 408"


def test_slow_body_is_408(server, nothing_stored):
    head = build_request("PUT", UP + unique_name("slow-body"),
                         ["Content-Length: 100"], b"", content_length=False)
    with tls_connect(server) as c:
        c.send(head + b"0123456789")
        assert c.quiet_for(0.7), f"answered before body_timeout (1 s): {c.buf!r}"
        resp = c.read_response(timeout=EVENTUALLY)
        assert resp.status == 408, resp
        closed, _ = c.wait_closed(EVENTUALLY)
    assert closed, "connection stayed open after 408"


def test_idle_keep_alive_closed(server):
    with tls_connect(server) as c:
        c.send(build_request("GET", "/ManageSoftDL/policy.xml"))
        assert c.read_response().status == 200
        assert c.quiet_for(1.5), f"closed or answered before idle_timeout (2 s): {c.buf!r}"
        closed, rest = c.wait_closed(EVENTUALLY)
    assert closed, f"idle keep-alive connection still open after {EVENTUALLY} s (idle_timeout 2 s)"
    assert rest == b"" or rest.startswith(b"HTTP/1.1 408"), rest


def test_answer_from_head_restarts_the_wait(server):
    """A keep-alive request answered from its head (a 404) ends that
    request: the connection then waits under idle_timeout (2 s), not under
    the old head's header_timeout (1 s), so no 408 comes while it sits
    quiet, and the next request is served."""
    with tls_connect(server) as c:
        c.send(build_request("GET", "/ManageSoftDL/no-such-file.xml"))
        assert c.read_response().status == 404
        assert c.quiet_for(1.5), f"answered while idle, before idle_timeout (2 s): {c.buf!r}"
        c.send(build_request("GET", "/ManageSoftDL/policy.xml"))
        assert c.read_response().status == 200


def test_active_keep_alive_not_closed(server):
    """Requests spaced below idle_timeout keep one connection going, even
    though the connection lives longer than header_timeout."""
    with tls_connect(server) as c:
        for _ in range(4):
            c.send(build_request("GET", "/ManageSoftDL/policy.xml"))
            assert c.read_response().status == 200
            time.sleep(0.6)


def test_silent_tcp_closed_after_handshake_timeout(start_server):
    server = start_server({"limits": {"handshake_timeout": "1s"}})
    with socket.create_connection((server.host, server.port), timeout=10) as s:
        # Order, not duration: the test's 0.7 s mark passes before the close.
        s.settimeout(0.7)
        try:
            early = s.recv(100)
            pytest.fail(f"closed or answered before handshake_timeout (1 s): {early!r}")
        except (socket.timeout, TimeoutError):
            pass
        s.settimeout(EVENTUALLY)
        while True:  # an alert may come first; then the close
            try:
                if s.recv(100) == b"":
                    break
            except ConnectionResetError:
                break
            except (socket.timeout, TimeoutError):
                pytest.fail(f"silent TCP connection still open after {EVENTUALLY} s "
                            "(handshake_timeout 1 s)")


def test_server_fine_after_limits(server):
    name = unique_name("after-limits")
    with tls_connect(server) as c:
        c.send(build_request("PUT", UP + name, body=b"ok"))
        assert c.read_response().status == 201
    assert server.upload_bytes(server.find_upload(name)["id"]) == b"ok"
