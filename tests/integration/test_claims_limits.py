"""README: "Every limit is in [limits] and counted in /metrics". Each limit
is provoked with real clients against a real beacond (one worker, so each
per-worker figure is the configured one), and the /metrics counter that
stands for it must move by exactly what the clients saw:

- the connection limits: beacond_limit_refusals_total{limit="<its key>"};
- header size and count, target length, body size: 431/431/414/413 in
  beacond_responses_total{class="4xx"};
- the header timeout: beacond_timeouts_total (and a 408).
"""

import socket
import ssl
import time

import pytest

from helpers import build_request, client_context, free_port, listen_queue, tls_connect
from trustkit import http_get, parse_metrics, wait_until

LIMITS = ("max_connections", "max_connections_per_source", "handshake_rate_per_source",
          "max_handshakes_in_progress")


def metrics(srv):
    status, body = http_get(srv.metrics_port, "/metrics")
    assert status == 200, body
    m = parse_metrics(body.decode())
    return {
        **{lim: m[("beacond_limit_refusals_total", f'{{limit="{lim}"}}')] for lim in LIMITS},
        "4xx": m[("beacond_responses_total", '{class="4xx"}')],
        "timeouts": m[("beacond_timeouts_total", "")],
        "open": m[("beacond_connections_open", "")],
    }


def settle(srv, want, timeout=10.0):
    """Waits until the counters in `want` have the values given (they are
    summed from the worker's counters a moment after the event), then
    returns every counter."""
    deadline = time.monotonic() + timeout
    while True:
        m = metrics(srv)
        if all(m[k] == v for k, v in want.items()):
            return m
        assert time.monotonic() < deadline, (f"counters {m}, expected {want}\n"
                                             f"{srv.stderr()[-3000:]}")
        time.sleep(0.05)


def admin_up(srv, timeout=20.0):
    """The admin HTTP side starts after the TLS listener: wait for it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return metrics(srv)
        except OSError:  # URLError: refused until it listens
            assert time.monotonic() < deadline, f"no /metrics:\n{srv.stderr()[-3000:]}"
            time.sleep(0.05)


def limited_server(start_server, **limits):
    port = free_port()
    srv = start_server({"server": {"workers": "1", "metrics": f"127.0.0.1:{port}"},
                        "limits": {k: str(v) for k, v in limits.items()}})
    srv.metrics_port = port
    admin_up(srv)
    return srv


def refused_at_once(srv, sock):
    """True when beacond closes a fresh connection before any TLS: the
    handshake on it ends in EOF or a reset, with no ServerHello."""
    ctx = client_context(srv.pki, "agent1")
    try:
        tls = ctx.wrap_socket(sock, server_hostname="localhost")
    except (ssl.SSLEOFError, ConnectionResetError, BrokenPipeError):
        return True
    except ssl.SSLError as e:
        if "EOF" in str(e) or "UNEXPECTED_EOF" in str(e):
            return True
        raise
    tls.close()
    return False


def raw_connect(srv):
    return socket.create_connection((srv.host, srv.port), timeout=10)


def established(srv):
    """A mutual-TLS connection that stays open (handshake done)."""
    c = tls_connect(srv)
    c.send(build_request("GET", "/ManageSoftDL/policy.xml"))
    assert c.read_response().status == 200
    return c


def others_unchanged(before, after, moved):
    for k in LIMITS + ("4xx", "timeouts"):
        if k not in moved:
            assert after[k] == before[k], f"{k} moved: {before} -> {after}"


def test_max_connections_counted(start_server):
    srv = limited_server(start_server, max_connections=2)
    m0 = metrics(srv)
    held = [established(srv), established(srv)]
    try:
        settle(srv, {"open": 2})
        assert refused_at_once(srv, raw_connect(srv)), "a third connection was served"
        m1 = settle(srv, {"max_connections": m0["max_connections"] + 1})
        others_unchanged(m0, m1, {"max_connections"})
    finally:
        for c in held:
            c.close()


def test_max_connections_per_source_counted(start_server):
    srv = limited_server(start_server, max_connections_per_source=2)
    m0 = metrics(srv)
    held = [established(srv), established(srv)]
    try:
        for _ in range(3):
            assert refused_at_once(srv, raw_connect(srv)), "over the per-source limit, served"
        m1 = settle(srv, {"max_connections_per_source": m0["max_connections_per_source"] + 3})
        others_unchanged(m0, m1, {"max_connections_per_source"})
    finally:
        for c in held:
            c.close()
    # the source's connections closed: it is served again
    settle(srv, {"open": 0})
    established(srv).close()


def test_handshake_rate_per_source_counted(start_server):
    """Ten connections at once against 2 a second (a bucket of 2, less what
    the readiness probe took): those beyond the bucket are closed at once,
    and each one is counted."""
    srv = limited_server(start_server, handshake_rate_per_source=2)
    m0 = metrics(srv)
    socks = [raw_connect(srv) for _ in range(10)]
    refused = sum(refused_at_once(srv, s) for s in socks)
    assert 1 <= refused <= 9, f"{refused} of 10 refused at 2 a second (burst 2)"
    m1 = settle(srv, {"handshake_rate_per_source": m0["handshake_rate_per_source"] + refused})
    others_unchanged(m0, m1, {"handshake_rate_per_source"})


def test_max_handshakes_in_progress_counted(start_server):
    """Past the cap a connection is not refused but left in the listen
    queue: the limit's refusal counter does not move, and the connection
    is served once a slot frees."""
    srv = limited_server(start_server, max_handshakes_in_progress=2)
    m0 = metrics(srv)
    silent = [raw_connect(srv), raw_connect(srv)]  # handshakes that never start
    try:
        settle(srv, {"open": 2})
        third = raw_connect(srv)
        assert wait_until(lambda: listen_queue(srv.port) == 1, 10), "a third handshake was let in"
        m1 = settle(srv, {"open": 2})
        others_unchanged(m0, m1, set())
        silent[0].close()
        assert not refused_at_once(srv, third), "the waiting connection was refused"
        m2 = settle(srv, {"open": 1})
        others_unchanged(m0, m2, set())
    finally:
        for s in silent:
            s.close()
    settle(srv, {"open": 0})
    established(srv).close()  # established ones do not count against it


@pytest.mark.parametrize("limit,request_,status", [
    ("max_header_bytes", ("GET", "/ManageSoftDL/policy.xml", ["X-Pad: " + "a" * 3000]), 431),
    ("max_headers", ("GET", "/ManageSoftDL/policy.xml", [f"X-H{i}: v" for i in range(20)]),
     431),
    ("max_target", ("GET", "/ManageSoftDL/" + "p" * 600, []), 414),
    ("max_body", ("PUT", "/ManageSoftRL/Inventories/big.ndi", ["Content-Length: 5000"]), 413),
])
def test_request_limits_counted(start_server, limit, request_, status):
    srv = limited_server(start_server, max_header_bytes="2k", max_headers=16, max_target=512,
                         max_body=4096)
    m0 = metrics(srv)
    method, target, headers = request_
    with tls_connect(srv) as c:
        c.send(build_request(method, target, headers, None, content_length=False))
        resp = c.read_response()
    assert resp.status == status, (limit, resp)
    m1 = settle(srv, {"4xx": m0["4xx"] + 1})
    others_unchanged(m0, m1, {"4xx"})


def test_header_timeout_counted(start_server):
    srv = limited_server(start_server, header_timeout="1s")
    m0 = metrics(srv)
    with tls_connect(srv) as c:
        c.send(b"GET /ManageSoftDL/policy.xml HTTP/1.1\r\nHost: x\r\n")  # never ends
        resp = c.read_response(timeout=30)
    assert resp.status == 408, resp
    m1 = settle(srv, {"timeouts": m0["timeouts"] + 1, "4xx": m0["4xx"] + 1})
    others_unchanged(m0, m1, {"timeouts", "4xx"})


def test_limit_series_have_help(start_server):
    srv = limited_server(start_server)
    status, body = http_get(srv.metrics_port, "/metrics")
    text = body.decode()
    assert "# HELP beacond_limit_refusals_total " in text, text
    assert "# TYPE beacond_limit_refusals_total counter" in text, text
