"""Bad HTTP gets a clear status and stores nothing (default limits:
max_target 2k, max_header_bytes 16k, max_headers 64)."""

import pytest

from helpers import build_request, request, tls_connect, unique_name

UP = "/ManageSoftRL/Inventories/"


@pytest.fixture
def nothing_stored(server):
    """Asserts the test stored no upload at all."""
    before = {r["id"] for r in server.uploads()}
    yield
    after = [r for r in server.uploads() if r["id"] not in before]
    assert after == [], f"uploads were stored: {after}"


def raw(server, data, timeout=10.0):
    with tls_connect(server) as c:
        c.send(data)
        return c.read_response(timeout)


@pytest.mark.parametrize("line", [
    b"GARBAGE\r\n\r\n",
    b"PUT\r\n\r\n",
    b"PUT /ManageSoftRL/Inventories/x.ndi\r\n\r\n",
    b"PUT /ManageSoftRL/Inventories/x.ndi HTTP/1.1 extra\r\n\r\n",
    b"PUT  /ManageSoftRL/Inventories/x.ndi HTTP/1.1\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    b"PUT /ManageSoftRL/Inventories/x.ndi HTTP/1.1\r\nno colon here\r\n\r\n",
    b"PUT /ManageSoftRL/Inventories/x.ndi HTTP/1.1\r\nHost: a\r\n"
    b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    b"PUT /ManageSoftRL/Inventories/x.ndi HTTP/1.1\r\nHost: a\r\n"
    b"Content-Length: -1\r\n\r\n",
    b"PUT /ManageSoftRL/Inventories/x.ndi HTTP/1.1\r\nHost: a\r\n"
    b"Content-Length: 12abc\r\n\r\n",
    b"PUT /ManageSoftRL/Inventories/x.ndi HTTP/1.1\r\nHost: a\r\n"
    b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
], ids=["garbage", "method-only", "no-version", "extra-token", "double-space",
        "tls-in-tls", "header-no-colon", "two-lengths", "negative-length",
        "bad-length", "length-and-chunked"])
def test_malformed_is_400(server, nothing_stored, line):
    resp = raw(server, line)
    assert resp.status == 400, resp


def test_bad_chunk_framing_is_400(server, nothing_stored):
    body = b"zz\r\nhello\r\n0\r\n\r\n"
    resp = raw(server, build_request("PUT", UP + unique_name("badchunk"),
                                     ["Transfer-Encoding: chunked"], body))
    assert resp.status == 400, resp


@pytest.mark.parametrize("method,target", [
    ("DELETE", UP + "x.ndi"),
    ("PATCH", UP + "x.ndi"),
    ("GET", UP + "x.ndi"),
    ("DELETE", "/ManageSoftDL/policy.xml"),
    ("PUT", "/ManageSoftDL/policy.xml"),
    ("POST", "/ManageSoftDL/policy.xml"),
])
def test_wrong_method_is_405(server, nothing_stored, method, target):
    body = b"x" if method in ("PUT", "POST", "PATCH") else b""
    hdrs = [f"Content-Length: {len(body)}"] if method == "PATCH" else []
    resp = raw(server, build_request(method, target, hdrs, body))
    assert resp.status == 405, resp
    if target.startswith("/ManageSoftDL/"):
        assert request(server, "GET", target).body.startswith(b"<?xml")


@pytest.mark.parametrize("method", ["PUT", "POST"])
def test_no_length_is_411(server, nothing_stored, method):
    resp = raw(server, build_request(method, UP + unique_name("nolen"),
                                     content_length=False))
    assert resp.status == 411, resp


def test_long_target_is_414(server, nothing_stored):
    target = UP + "a" * 3000 + ".ndi"
    resp = raw(server, build_request("PUT", target, body=b"x"))
    assert resp.status == 414, resp


def test_long_target_below_limit_is_fine(server):
    """A 1.9 KiB target (under max_target 2k) is not refused as too long.
    File names stop at 255 bytes, so the rest is a query string."""
    name = "b" * 250 + ".ndi"
    target = UP + name + "?pad=" + "q" * 1600
    assert 1800 < len(target) < 2048
    resp = raw(server, build_request("PUT", target, body=b"x"))
    assert resp.status == 201, resp
    server.find_upload(name)


def test_name_over_255_bytes_is_400(server, nothing_stored):
    resp = raw(server, build_request("PUT", UP + "c" * 300 + ".ndi", body=b"x"))
    assert resp.status == 400, resp


def test_large_headers_are_431(server, nothing_stored):
    hdrs = [f"X-Filler-{i}: " + "v" * 1000 for i in range(20)]
    resp = raw(server, build_request("PUT", UP + unique_name("bighdr"), hdrs, b"x"))
    assert resp.status == 431, resp


def test_one_huge_header_is_431(server, nothing_stored):
    resp = raw(server, build_request("PUT", UP + unique_name("hugehdr"),
                                     ["X-Huge: " + "h" * 20000], b"x"))
    assert resp.status == 431, resp


def test_too_many_headers_are_431(server, nothing_stored):
    hdrs = [f"X-{i}: v" for i in range(100)]
    resp = raw(server, build_request("PUT", UP + unique_name("manyhdr"), hdrs, b"x"))
    assert resp.status == 431, resp


BAD_NAMES = [
    b"..",
    b"%2e%2e",
    b"..%2fx.ndi",
    b"a%2Fb.ndi",
    b"a%2fb.ndi",
    b"a%00b.ndi",
    b"a%01b.ndi",
    b"a%0ab.ndi",
    b"a%0d%0ab.ndi",
    b"a%7fb.ndi",
    b"a%1bb.ndi",
    b"a\x01b.ndi",
    b"a\x7fb.ndi",
    b"%",
    b"a%zzb.ndi",
]


@pytest.mark.parametrize("name", BAD_NAMES, ids=[n.decode("latin-1").encode(
    "unicode_escape").decode() for n in BAD_NAMES])
def test_bad_file_name_is_400(server, nothing_stored, name):
    resp = raw(server, build_request("PUT", UP.encode() + name, body=b"payload"))
    assert resp.status == 400, resp


@pytest.mark.parametrize("tail", [b"../x.ndi", b"a/b.ndi", b"sub/../../x.ndi"])
def test_raw_slash_in_name_is_refused(server, nothing_stored, tail):
    """A raw '/' makes a third path segment: not an upload path at all."""
    resp = raw(server, build_request("PUT", UP.encode() + tail, body=b"payload"))
    assert resp.status in (400, 404), resp


@pytest.mark.parametrize("category", [b"..", b"%2e%2e", b"a%2fb", b"a%00b", b""])
def test_bad_category_is_refused(server, nothing_stored, category):
    resp = raw(server, build_request(
        "PUT", b"/ManageSoftRL/" + category + b"/" + unique_name("cat").encode(),
        body=b"payload"))
    assert resp.status in (400, 404), resp


@pytest.mark.parametrize("method,target", [
    ("PUT", "/foo/bar.ndi"),
    ("GET", "/etc/passwd"),
    ("GET", "/"),
    ("PUT", "/ManageSoftRLx/Inventories/a.ndi"),
    ("GET", "/ManageSoftDLx/policy.xml"),
])
def test_outside_both_trees_is_404(server, nothing_stored, method, target):
    body = b"x" if method == "PUT" else b""
    resp = raw(server, build_request(method, target, body=body))
    assert resp.status == 404, resp


def test_connection_survives_a_404(server):
    """A 404 for a well-formed request keeps the connection usable."""
    with tls_connect(server) as c:
        c.send(build_request("GET", "/ManageSoftDL/missing"))
        assert c.read_response().status == 404
        c.send(build_request("GET", "/ManageSoftDL/policy.xml"))
        assert c.read_response().status == 200


def test_server_fine_after_bad_requests(server):
    name = unique_name("after-bad")
    resp = raw(server, build_request("PUT", UP + name, body=b"still works"))
    assert resp.status == 201, resp
    assert server.upload_bytes(server.find_upload(name)["id"]) == b"still works"


# Every answer carries the same security headers (http/http1.c RESPONSE_HEADERS):
# testssl.sh rated their absence MEDIUM (scripts/tls-scan.sh).
SECURITY_HEADERS = {
    "strict-transport-security": "max-age=31536000",
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",
}


@pytest.mark.parametrize("method,target,body,status", [
    ("PUT", UP + "headers.ndi", b"with security headers\n", 201),
    ("GET", "/ManageSoftDL/policy.xml", b"", 200),
    ("HEAD", "/ManageSoftDL/policy.xml", b"", 200),
    ("GET", "/ManageSoftDL/no-such-file.xml", b"", 404),
    ("GET", "/elsewhere", b"", 404),
    ("DELETE", UP + "x.ndi", b"", 405),
])
def test_security_headers_on_every_answer(server, method, target, body, status):
    if method == "PUT":
        target = UP + unique_name("headers")
    resp = request(server, method, target, body=body)
    assert resp.status == status, resp
    got = {k: resp.header(k) for k in SECURITY_HEADERS}
    assert got == SECURITY_HEADERS, resp
    # Each once: a repeated header is a list a client may read either way.
    names = [k for k, _ in resp.headers]
    assert all(names.count(k) == 1 for k in SECURITY_HEADERS), resp


def test_security_headers_on_a_malformed_request(server, nothing_stored):
    resp = raw(server, b"GARBAGE\r\n\r\n")
    assert resp.status == 400, resp
    assert {k: resp.header(k) for k in SECURITY_HEADERS} == SECURITY_HEADERS, resp
