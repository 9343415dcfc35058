"""Request smuggling through bodies nothing reads (issue 12).

A GET or HEAD has no use for a body, so beacond never reads one. Before this
was refused, the body stayed in the stream and was parsed as the next
request: a GET whose Content-Length covered a whole PUT got 200, and then
the PUT inside it got 201 and was stored. Now such a request gets 400 with
Connection: close and the connection ends with the body unread (README,
"HTTP/1.1"). Every attack here goes over a raw mutual-TLS client (Python's
ssl), and the store is checked afterwards with `beaconctl uploads list`.

Also: a HEAD's error answer carries no body, so the next response on a
keep-alive connection starts where the client expects it.
"""

import pytest

from helpers import (DOWNLOAD_FILES, build_request, chunked, request, tls_connect,
                     unique_name)

POLICY = "/ManageSoftDL/policy.xml"
REFUSAL = b"GET and HEAD take no body"


def stored_names(server):
    """Every stored upload's name, whoever sent it."""
    return {r["name"] for r in server.uploads()}


def put(name, body=b"smuggled inventory\n"):
    return build_request("PUT", f"/ManageSoftRL/Inventories/{name}", body=body)


def with_body(method, target, framing, body):
    """A GET or HEAD head declaring `body` (Content-Length or chunked), then
    the body: build_request never frames a GET's body itself."""
    if framing == "length":
        return build_request(method, target, [f"Content-Length: {len(body)}"]) + body
    return build_request(method, target, ["Transfer-Encoding: chunked"]) + chunked(body, [7])


def exchange(conn, method):
    """The first answer, whether the server closed after it, and what it
    sent after it."""
    resp = conn.read_response(head_request=(method == "HEAD"))
    closed, rest = conn.wait_closed(10.0)
    return resp, closed, rest


def assert_refused_and_closed(method, resp, closed, rest):
    """The one answer is a 400 that says why and closes; nothing follows it."""
    assert resp.status == 400, f"expected 400 for a {method} with a body, got {resp}"
    assert (resp.header("connection") or "").lower() == "close", resp
    if method == "GET":
        assert REFUSAL in resp.body, resp
    assert closed, f"the connection stayed open after the 400; read {rest!r}"
    assert rest == b"", f"something was answered after the 400: {rest!r}"


@pytest.mark.parametrize("framing", ["length", "chunked"])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_put_inside_get_body_is_never_stored(server, method, framing):
    name = unique_name("smuggled")
    with tls_connect(server) as c:
        c.send(with_body(method, POLICY, framing, put(name)))
        resp, closed, rest = exchange(c, method)
    assert name not in stored_names(server), (
        f"the PUT hidden in the body was stored; the server answered {resp} then {rest!r}")
    assert_refused_and_closed(method, resp, closed, rest)


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_pipelined_get_with_body_then_real_put(server, method):
    """GET-with-body, its body, and a genuine PUT, all in one write: the GET
    is refused and the connection ends there; the PUT behind it is not read
    either (the client sends it again on a new connection, where it is
    stored)."""
    hidden, real = unique_name("hidden"), unique_name("real")
    with tls_connect(server) as c:
        c.send(with_body(method, POLICY, "length", put(hidden)) + put(real))
        resp, closed, rest = exchange(c, method)
    names = stored_names(server)
    assert hidden not in names, f"the hidden PUT was stored; answers: {resp} then {rest!r}"
    assert real not in names, f"the PUT after the refused {method} was read: {rest!r}"
    assert_refused_and_closed(method, resp, closed, rest)
    assert request(server, "PUT", f"/ManageSoftRL/Inventories/{real}",
                   body=b"retried\n").status == 201
    assert real in stored_names(server)


def test_get_with_zero_length_is_served(server):
    """Content-Length: 0 declares no body: an ordinary GET, kept alive."""
    with tls_connect(server) as c:
        c.send(build_request("GET", POLICY, ["Content-Length: 0"]))
        first = c.read_response()
        c.send(build_request("GET", POLICY))
        second = c.read_response()
    assert first.status == 200 and first.body == DOWNLOAD_FILES["policy.xml"], first
    assert second.status == 200 and second.body == DOWNLOAD_FILES["policy.xml"], second


def test_head_error_has_no_body(server):
    """A HEAD of a missing file: 404 with a Content-Length and no body, so the
    next response on the same connection is read from its first byte."""
    with tls_connect(server) as c:
        c.send(build_request("HEAD", "/ManageSoftDL/no-such-file.xml"))
        head = c.read_response(head_request=True)
        assert head.status == 404, head
        c.send(build_request("GET", POLICY))
        nxt = c.read_response()
    assert nxt.status == 200, f"the HEAD's 404 sent a body? next response: {nxt}"
    assert nxt.body == DOWNLOAD_FILES["policy.xml"]
