"""Conditional and partial GET on /ManageSoftDL/ (RFC 9110 sections 8.8, 13,
14) and the hot-file cache (issue 17 items 1 and 2).

Every case runs with two real clients over mutual TLS: curl, and Python's
http.client. Each asserts the exact answer: the status, the validators,
Content-Range, and the bytes.
"""

import email.utils
import hashlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import time

import pytest

from helpers import (BEACOND, DOWNLOAD_FILES, SECRET, build_request, client_context, curl,
                     request, tls_connect)
from trustkit import beaconctl_sock

CLIENTS = ["curl", "http.client"]
POLICY = "/ManageSoftDL/policy.xml"
BIN = "/ManageSoftDL/sub/dir/file.bin"
BIN_BYTES = DOWNLOAD_FILES["sub/dir/file.bin"]


# --------------------------------------------------------------------------
# Two clients, one answer shape: (status, {header: value}, body)


class Answer:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # lower-case name -> value (last one wins)
        self.names = list(headers)
        self.body = body

    def h(self, name):
        return self.headers.get(name.lower())

    def __repr__(self):
        return f"<Answer {self.status} {self.headers} body={self.body[:80]!r}>"


class AgentHTTPS(http.client.HTTPSConnection):
    """http.client with the agent's certificate, checking the server's
    certificate for the name it carries (localhost) while dialling the
    address beacond listens on."""

    def connect(self):
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname="localhost")


def via_http_client(server, method, path, headers):
    conn = AgentHTTPS(server.host, server.port, timeout=20,
                      context=client_context(server.pki, "agent1"))
    try:
        conn.request(method, path, headers=dict(headers))
        resp = conn.getresponse()
        body = resp.read()
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
        return Answer(resp.status, hdrs, body)
    finally:
        conn.close()


def via_curl(server, method, path, headers, tmp_path):
    hdr_file = tmp_path / f"curl-head-{time.monotonic_ns()}"
    body_file = tmp_path / f"curl-body-{time.monotonic_ns()}"
    args = ["-D", hdr_file, "-o", body_file, "-w", "%{http_code}"]
    if method == "HEAD":
        args.append("-I")
    for k, v in headers:
        args += ["-H", f"{k}: {v}"]
    p = curl(server, *args, server.url(path))
    assert p.returncode == 0, p.stderr.decode()
    blocks = hdr_file.read_bytes().decode("latin-1").split("\r\n\r\n")
    lines = [b for b in blocks if b.strip()][-1].split("\r\n")
    hdrs = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    # curl -I writes the head where the body would go: a HEAD has none.
    body = body_file.read_bytes() if body_file.exists() and method != "HEAD" else b""
    status = int(lines[0].split()[1])
    assert status == int(p.stdout), (status, p.stdout)
    return Answer(status, hdrs, body)


def ask(client, server, method, path, headers=(), tmp_path=None):
    if client == "curl":
        return via_curl(server, method, path, headers, tmp_path)
    return via_http_client(server, method, path, headers)


def settle(path):
    """Waits for the file's last change to be more than two seconds old:
    only then does beacond give it validators (the kernel's timestamps are
    coarse, and Last-Modified has whole seconds, so a younger version could
    share them with the next one). Wall-clock time, one-sided bound."""
    st = os.stat(path)
    changed = max(st.st_mtime, st.st_ctime)
    while time.time() < changed + 2.1:
        time.sleep(0.1)


@pytest.fixture
def srv(server):
    for rel in DOWNLOAD_FILES:
        settle(server.download_dir / rel)
    return server


def imf(t):
    return email.utils.formatdate(t, usegmt=True)


def stats(server):
    p = beaconctl_sock(server, "stats")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


# --------------------------------------------------------------------------
# Validators


@pytest.mark.parametrize("client", CLIENTS)
def test_200_carries_validators(srv, client, tmp_path):
    a = ask(client, srv, "GET", POLICY, tmp_path=tmp_path)
    assert a.status == 200, a
    assert a.body == DOWNLOAD_FILES["policy.xml"]
    etag = a.h("etag")
    assert etag and etag.startswith('"') and etag.endswith('"'), a  # strong
    mtime = os.stat(srv.download_dir / "policy.xml").st_mtime
    assert a.h("last-modified") == imf(int(mtime)), a
    date = email.utils.parsedate_to_datetime(a.h("date")).timestamp()
    assert abs(date - time.time()) < 3600, a  # a real date, not a constant
    assert a.h("accept-ranges") == "bytes", a
    assert a.h("cache-control") == "no-store", a  # the default
    assert a.h("content-length") == str(len(DOWNLOAD_FILES["policy.xml"])), a


@pytest.mark.parametrize("client", CLIENTS)
def test_etag_changes_when_the_file_is_replaced(srv, client, tmp_path):
    path = srv.download_dir / "etag-change.xml"
    path.write_bytes(b"version one\n")
    settle(path)
    first = ask(client, srv, "GET", "/ManageSoftDL/etag-change.xml", tmp_path=tmp_path)
    tmp = srv.download_dir / "etag-change.xml.new"
    tmp.write_bytes(b"version two\n")  # same size
    os.utime(tmp, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns))  # and same mtime
    os.rename(tmp, path)
    settle(path)
    second = ask(client, srv, "GET", "/ManageSoftDL/etag-change.xml", tmp_path=tmp_path)
    assert first.body == b"version one\n" and second.body == b"version two\n"
    assert first.h("etag") != second.h("etag"), (first, second)


# --------------------------------------------------------------------------
# 304


def assert_304(a, etag, last_modified):
    assert a.status == 304, a
    assert a.body == b"", a
    assert a.h("etag") == etag, a
    assert a.h("last-modified") == last_modified, a
    assert a.h("date"), a
    assert a.h("cache-control") == "no-store", a
    assert "content-length" not in a.headers or a.h("content-length") == str(
        len(DOWNLOAD_FILES["policy.xml"])), a


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("form", ["exact", "in-list", "weak", "star"])
def test_if_none_match_304(srv, client, form, tmp_path):
    full = ask(client, srv, "GET", POLICY, tmp_path=tmp_path)
    etag = full.h("etag")
    value = {"exact": etag, "in-list": f'"nope", "also-not", {etag}', "weak": "W/" + etag,
             "star": "*"}[form]
    a = ask(client, srv, "GET", POLICY, [("If-None-Match", value)], tmp_path)
    assert_304(a, etag, full.h("last-modified"))


@pytest.mark.parametrize("client", CLIENTS)
def test_if_none_match_other_tag_is_200(srv, client, tmp_path):
    a = ask(client, srv, "GET", POLICY, [("If-None-Match", '"something-else"')], tmp_path)
    assert a.status == 200, a
    assert a.body == DOWNLOAD_FILES["policy.xml"]


@pytest.mark.parametrize("client", CLIENTS)
def test_if_modified_since(srv, client, tmp_path):
    full = ask(client, srv, "GET", POLICY, tmp_path=tmp_path)
    lm = full.h("last-modified")
    t = email.utils.parsedate_to_datetime(lm).timestamp()
    same = ask(client, srv, "GET", POLICY, [("If-Modified-Since", lm)], tmp_path)
    assert_304(same, full.h("etag"), lm)
    later = ask(client, srv, "GET", POLICY, [("If-Modified-Since", imf(t + 3600))], tmp_path)
    assert later.status == 304, later
    earlier = ask(client, srv, "GET", POLICY, [("If-Modified-Since", imf(t - 1))], tmp_path)
    assert earlier.status == 200, earlier
    assert earlier.body == DOWNLOAD_FILES["policy.xml"]


@pytest.mark.parametrize("client", CLIENTS)
def test_if_modified_since_other_date_forms(srv, client, tmp_path):
    """RFC 850 and asctime dates must be read too (RFC 9110 5.6.7)."""
    lm = ask(client, srv, "GET", POLICY, tmp_path=tmp_path).h("last-modified")
    t = time.gmtime(email.utils.parsedate_to_datetime(lm).timestamp() + 60)
    rfc850 = time.strftime("%A, %d-%b-%y %H:%M:%S GMT", t)
    asctime = time.strftime("%a %b ", t) + f"{t.tm_mday:2d}" + time.strftime(" %H:%M:%S %Y", t)
    for value in (rfc850, asctime):
        a = ask(client, srv, "GET", POLICY, [("If-Modified-Since", value)], tmp_path)
        assert a.status == 304, (value, a)


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("bad", ["yesterday", "Sun, 32 Nov 2094 08:49:37 GMT",
                                 "Sun, 06 Nov 2094 08:49:37 UTC", "", "1700000000"])
def test_bad_if_modified_since_is_ignored(srv, client, bad, tmp_path):
    a = ask(client, srv, "GET", POLICY, [("If-Modified-Since", bad)], tmp_path)
    assert a.status == 200, a
    assert a.body == DOWNLOAD_FILES["policy.xml"]


@pytest.mark.parametrize("client", CLIENTS)
def test_if_none_match_takes_precedence(srv, client, tmp_path):
    """RFC 9110 13.2.2: with If-None-Match present, If-Modified-Since is not
    looked at: a stale tag and a date in the future still get 200."""
    future = imf(time.time() + 86400)
    a = ask(client, srv, "GET", POLICY,
            [("If-None-Match", '"stale"'), ("If-Modified-Since", future)], tmp_path)
    assert a.status == 200, a
    assert a.body == DOWNLOAD_FILES["policy.xml"]


@pytest.mark.parametrize("client", CLIENTS)
def test_head_304(srv, client, tmp_path):
    etag = ask(client, srv, "GET", POLICY, tmp_path=tmp_path).h("etag")
    a = ask(client, srv, "HEAD", POLICY, [("If-None-Match", etag)], tmp_path)
    assert a.status == 304, a


def test_304_keeps_the_connection_in_step(srv):
    """A 304 has no body: the next response on the connection starts right
    after its head."""
    etag = request(srv, "GET", POLICY).header("etag")
    with tls_connect(srv) as c:
        c.send(build_request("GET", POLICY, [f"If-None-Match: {etag}"]))
        first = c.read_response()
        c.send(build_request("GET", BIN))
        nxt = c.read_response()
    assert first.status == 304, first
    assert nxt.status == 200 and nxt.body == BIN_BYTES, nxt


# --------------------------------------------------------------------------
# Preconditions: If-Match and If-Unmodified-Since (RFC 9110 13.1.1, 13.1.4,
# 13.2.2 steps 1 and 2). An agent resuming a download with Range uses them
# to make sure the bytes it adds belong to the version it started with.


def assert_412(a, head=False):
    assert a.status == 412, a
    assert a.body == b"" if head else a.body.startswith(b"412 Precondition Failed"), a


@pytest.mark.parametrize("client", CLIENTS)
def test_if_match(srv, client, tmp_path):
    full = ask(client, srv, "GET", BIN, tmp_path=tmp_path)
    etag = full.h("etag")
    for value in (etag, f'"other", {etag}', "*"):
        a = ask(client, srv, "GET", BIN, [("If-Match", value)], tmp_path)
        assert a.status == 200 and a.body == BIN_BYTES, (value, a)
    # with a range: the part of the version the client names
    a = ask(client, srv, "GET", BIN, [("If-Match", etag), ("Range", "bytes=10-19")], tmp_path)
    assert a.status == 206 and a.body == BIN_BYTES[10:20], a
    # another version, or a weak tag (If-Match compares strongly): no bytes
    for value in ('"another-version"', "W/" + etag, "garbage"):
        a = ask(client, srv, "GET", BIN, [("If-Match", value), ("Range", "bytes=10-19")],
                tmp_path)
        assert_412(a)


@pytest.mark.parametrize("client", CLIENTS)
def test_if_unmodified_since(srv, client, tmp_path):
    lm = ask(client, srv, "GET", BIN, tmp_path=tmp_path).h("last-modified")
    t = email.utils.parsedate_to_datetime(lm).timestamp()
    for value in (lm, imf(t + 3600)):
        a = ask(client, srv, "GET", BIN, [("If-Unmodified-Since", value)], tmp_path)
        assert a.status == 200 and a.body == BIN_BYTES, (value, a)
    assert_412(ask(client, srv, "GET", BIN, [("If-Unmodified-Since", imf(t - 1))], tmp_path))
    # not a date: ignored (13.1.4)
    a = ask(client, srv, "GET", BIN, [("If-Unmodified-Since", "yesterday")], tmp_path)
    assert a.status == 200 and a.body == BIN_BYTES, a


@pytest.mark.parametrize("client", CLIENTS)
def test_if_match_takes_precedence_and_comes_before_if_none_match(srv, client, tmp_path):
    """Step 1 before step 2: a matching If-Match means If-Unmodified-Since is
    not looked at. Step 1 before step 3: a failed If-Match is 412 even where
    If-None-Match alone would give 304."""
    full = ask(client, srv, "GET", BIN, tmp_path=tmp_path)
    etag, lm = full.h("etag"), full.h("last-modified")
    t = email.utils.parsedate_to_datetime(lm).timestamp()
    a = ask(client, srv, "GET", BIN,
            [("If-Match", etag), ("If-Unmodified-Since", imf(t - 86400))], tmp_path)
    assert a.status == 200 and a.body == BIN_BYTES, a
    assert_412(ask(client, srv, "GET", BIN,
                   [("If-Match", '"stale"'), ("If-None-Match", etag)], tmp_path))
    assert_412(ask(client, srv, "HEAD", BIN, [("If-Match", '"stale"')], tmp_path), head=True)


@pytest.mark.parametrize("client", CLIENTS)
def test_fresh_version_fails_if_match_but_star(srv, client, tmp_path):
    """A version changed under two seconds ago has no validator to vouch
    for: a tag or a date the client holds cannot be confirmed (it may be
    the previous version's, changed within the same tick or second)."""
    path = srv.download_dir / "fresh-im.bin"
    path.write_bytes(os.urandom(4096))
    mtime = int(path.stat().st_mtime)
    a = ask(client, srv, "GET", "/ManageSoftDL/fresh-im.bin",
            [("If-Unmodified-Since", imf(mtime + 3600))], tmp_path)
    b = ask(client, srv, "GET", "/ManageSoftDL/fresh-im.bin", [("If-Match", "*")], tmp_path)
    if time.time() - path.stat().st_ctime >= 2.0:
        pytest.skip("the machine took over two seconds to answer; the file settled meanwhile")
    assert_412(a)
    assert b.status == 200 and b.body == path.read_bytes(), b


def test_412_keeps_the_connection_in_step(srv):
    with tls_connect(srv) as c:
        c.send(build_request("GET", BIN, ['If-Match: "stale"']))
        first = c.read_response()
        c.send(build_request("GET", POLICY))
        nxt = c.read_response()
    assert first.status == 412, first
    assert nxt.status == 200 and nxt.body == DOWNLOAD_FILES["policy.xml"], nxt


def test_if_match_missing_file_is_404(srv):
    """RFC 9110 13.2.1: preconditions are ignored where the answer without
    them would not be 2xx: a file that does not exist is 404, even with
    If-Match: *."""
    for value in ('"x"', "*"):
        a = request(srv, "GET", "/ManageSoftDL/no-such-file", headers=[f"If-Match: {value}"])
        assert a.status == 404, a


# --------------------------------------------------------------------------
# Range


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("spec,first,last", [
    ("bytes=0-9", 0, 9),
    ("bytes=100-", 100, len(BIN_BYTES) - 1),
    ("bytes=-10", len(BIN_BYTES) - 10, len(BIN_BYTES) - 1),
    ("bytes=16000-99999999", 16000, len(BIN_BYTES) - 1),
    ("bytes=-99999999", 0, len(BIN_BYTES) - 1),
    ("BYTES = 5-5".replace(" ", ""), 5, 5),
])
def test_single_range_206(srv, client, spec, first, last, tmp_path):
    a = ask(client, srv, "GET", BIN, [("Range", spec)], tmp_path)
    assert a.status == 206, a
    assert a.h("content-range") == f"bytes {first}-{last}/{len(BIN_BYTES)}", a
    assert a.h("content-length") == str(last - first + 1), a
    assert a.body == BIN_BYTES[first:last + 1]
    assert a.h("etag"), a


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("spec", ["bytes=0-5,10-15", "bytes=abc", "bytes=5-2", "items=0-5",
                                  "bytes=", "bytes=--5", "bytes=0-5 x", "bytes 0-5"])
def test_several_or_bad_ranges_get_the_whole_file(srv, client, spec, tmp_path):
    a = ask(client, srv, "GET", BIN, [("Range", spec)], tmp_path)
    assert a.status == 200, a
    assert "content-range" not in a.headers, a
    assert a.body == BIN_BYTES


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("spec", [f"bytes={len(BIN_BYTES)}-", "bytes=99999999999999999999999-",
                                  "bytes=-0"])
def test_unsatisfiable_range_416(srv, client, spec, tmp_path):
    a = ask(client, srv, "GET", BIN, [("Range", spec)], tmp_path)
    assert a.status == 416, a
    assert a.h("content-range") == f"bytes */{len(BIN_BYTES)}", a
    assert BIN_BYTES[:64] not in a.body


@pytest.mark.parametrize("client", CLIENTS)
def test_head_ignores_range_and_sends_gets_head(srv, client, tmp_path):
    """HEAD sends exactly GET's header fields (Date aside: the second may
    turn between the two); a Range is for GET only (RFC 9110 14.2)."""
    get = ask(client, srv, "GET", BIN, tmp_path=tmp_path)
    head = ask(client, srv, "HEAD", BIN, [("Range", "bytes=0-9")], tmp_path)
    assert head.status == 200 and head.body == b"", head
    drop = {"date"}
    assert {k: v for k, v in head.headers.items() if k not in drop} == \
        {k: v for k, v in get.headers.items() if k not in drop}, (get, head)


@pytest.mark.parametrize("client", CLIENTS)
def test_if_range(srv, client, tmp_path):
    full = ask(client, srv, "GET", BIN, tmp_path=tmp_path)
    etag, lm = full.h("etag"), full.h("last-modified")
    lm_t = email.utils.parsedate_to_datetime(lm).timestamp()
    cases = [
        (etag, 206),
        ('"another-version"', 200),
        ("W/" + etag, 200),  # If-Range wants strong comparison
        (lm, 206),
        (imf(lm_t + 1), 200),  # a date must equal Last-Modified
        ("garbage", 200),
    ]
    for value, want in cases:
        a = ask(client, srv, "GET", BIN, [("Range", "bytes=10-19"), ("If-Range", value)],
                tmp_path)
        assert a.status == want, (value, a)
        assert a.body == (BIN_BYTES[10:20] if want == 206 else BIN_BYTES), value


@pytest.mark.parametrize("client", CLIENTS)
def test_fresh_version_has_no_validators_and_never_gets_304(srv, client, tmp_path):
    """A file changed under two seconds ago could be replaced again within
    the same second (Last-Modified) or the same timestamp tick (ETag): an
    agent holding it would then get 304 for the old bytes. So it gets no
    ETag and no Last-Modified, If-Modified-Since its own mtime is still
    200, and If-Range cannot pick a part of it."""
    path = srv.download_dir / "fresh.bin"
    path.write_bytes(os.urandom(4096))
    mtime = int(path.stat().st_mtime)
    a = ask(client, srv, "GET", "/ManageSoftDL/fresh.bin", tmp_path=tmp_path)
    b = ask(client, srv, "GET", "/ManageSoftDL/fresh.bin", [("If-Modified-Since", imf(mtime))],
            tmp_path)
    c = ask(client, srv, "GET", "/ManageSoftDL/fresh.bin",
            [("Range", "bytes=0-9"), ("If-Range", imf(mtime))], tmp_path)
    if time.time() - path.stat().st_ctime >= 2.0:
        pytest.skip("the machine took over two seconds to answer; the file settled meanwhile")
    assert b.status == 200 and b.body == path.read_bytes(), b
    assert a.status == 200 and a.h("etag") is None and a.h("last-modified") is None, a
    assert c.status == 200 and c.body == path.read_bytes(), c
    # Settled, the same file has both, and the same date is a 304.
    settle(path)
    d = ask(client, srv, "GET", "/ManageSoftDL/fresh.bin", [("If-Modified-Since", imf(mtime))],
            tmp_path)
    assert d.status == 304 and d.h("last-modified") == imf(mtime), d


def test_repeated_range_fields_are_ignored(srv):
    resp = request(srv, "GET", BIN, headers=["Range: bytes=0-9", "Range: bytes=10-19"])
    assert resp.status == 200 and resp.body == BIN_BYTES, resp


# --------------------------------------------------------------------------
# Cache-Control is configurable


@pytest.mark.parametrize("client", CLIENTS)
def test_cache_control_configurable(start_server, client, tmp_path):
    s = start_server({"download": {"cache_control": "private, max-age=60"}})
    settle(s.download_dir / "policy.xml")
    a = ask(client, s, "GET", POLICY, tmp_path=tmp_path)
    assert a.status == 200 and a.h("cache-control") == "private, max-age=60", a
    b = ask(client, s, "GET", POLICY, [("If-None-Match", a.h("etag"))], tmp_path)
    assert b.status == 304 and b.h("cache-control") == "private, max-age=60", b
    # Errors keep no-store: they are no file's answer.
    c = ask(client, s, "GET", "/ManageSoftDL/absent.xml", tmp_path=tmp_path)
    assert c.status == 404 and c.h("cache-control") == "no-store", c


def test_cache_control_with_a_control_character_is_refused(start_server):
    """A CR in the value would split the header line: the configuration is
    refused, naming the key (beacond -t, the check that start runs)."""
    s = start_server(start=False)
    s.conf.write_bytes(s.config_text.encode() + b"\n[download]\ncache_control = a\rX-Evil: 1\n")
    p = subprocess.run([str(BEACOND), "-t", "-c", str(s.conf)], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30)
    assert p.returncode != 0
    assert b"[download] cache_control: control character" in p.stderr, p.stderr


# --------------------------------------------------------------------------
# The hot-file cache

CACHE_CONFIG = {"server": {"workers": "1"},
                "download": {"cache_size": "32M", "cache_file_max": "8M"}}


def get_bytes(server, path):
    resp = request(server, "GET", path, timeout=30)
    assert resp.status == 200, resp
    return resp.body


def test_hot_file_served_from_memory(start_server):
    """The second request admits a file, the third is a hit: counted, and
    the same bytes."""
    s = start_server(CACHE_CONFIG)
    settle(s.download_dir / "sub/dir/file.bin")
    before = stats(s)["download_cache_hits"]
    for _ in range(2):
        assert get_bytes(s, BIN) == BIN_BYTES
    assert stats(s)["download_cache_hits"] == before
    assert stats(s)["download_cache_bytes"] >= len(BIN_BYTES)
    for _ in range(3):
        assert get_bytes(s, BIN) == BIN_BYTES
    assert stats(s)["download_cache_hits"] == before + 3


def cache_it(s, rel):
    settle(s.download_dir / rel)
    before = stats(s)["download_cache_hits"]
    for _ in range(3):
        get_bytes(s, "/ManageSoftDL/" + rel)
    assert stats(s)["download_cache_hits"] == before + 1, "not cached"


@pytest.mark.parametrize("how", ["rename", "in-place-same-size"])
def test_changed_file_is_served_new_not_stale(start_server, how):
    s = start_server(CACHE_CONFIG)
    path = s.download_dir / "changing.bin"
    old, new = os.urandom(5000), os.urandom(5000)
    path.write_bytes(old)
    cache_it(s, "changing.bin")
    if how == "rename":
        tmp = s.download_dir / "changing.bin.tmp"
        tmp.write_bytes(new)
        os.rename(tmp, path)
    else:
        with open(path, "r+b") as f:
            f.write(new)
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert get_bytes(s, "/ManageSoftDL/changing.bin") == new


def test_removed_file_is_404_not_cached(start_server):
    s = start_server(CACHE_CONFIG)
    path = s.download_dir / "gone.bin"
    path.write_bytes(b"here for now\n")
    cache_it(s, "gone.bin")
    path.unlink()
    assert request(s, "GET", "/ManageSoftDL/gone.bin").status == 404


def slow_get_while_replaced(s, rel, old, new):
    """Starts a GET with a tiny receive window, replaces the file by rename
    once the first bytes arrived, then reads the rest. Returns the body."""
    ctx = client_context(s.pki, "agent1")
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.settimeout(60)
    raw.connect((s.host, s.port))
    tls = ctx.wrap_socket(raw, server_hostname="localhost")
    try:
        tls.sendall(build_request("GET", "/ManageSoftDL/" + rel))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = tls.recv(4096)
            assert chunk, data
            data += chunk
        head, body = data.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200"), head
        length = int([ln.split(b":", 1)[1] for ln in head.split(b"\r\n")
                      if ln.lower().startswith(b"content-length:")][0])
        assert length == len(old)
        assert len(body) < length // 2, "the server sent most of it before the swap"
        tmp = s.download_dir / (rel + ".swap")
        tmp.write_bytes(new)
        os.rename(tmp, s.download_dir / rel)
        while len(body) < length:
            chunk = tls.recv(65536)
            assert chunk, f"closed after {len(body)} of {length}"
            body += chunk
        return body
    finally:
        tls.close()


@pytest.mark.parametrize("cached", [True, False])
def test_file_replaced_mid_response_is_sent_whole(start_server, cached):
    """A file renamed over while a slow client reads it: that client gets
    the old bytes whole (same hash), the next one the new. cached: from
    the hot-file cache (4 MiB, under cache_file_max); else a 12 MiB file
    streamed from its open fd."""
    s = start_server(CACHE_CONFIG)
    size = 4 * 1024 * 1024 if cached else 12 * 1024 * 1024
    old, new = os.urandom(size), os.urandom(size)
    (s.download_dir / "swap.bin").write_bytes(old)
    if cached:
        cache_it(s, "swap.bin")
    body = slow_get_while_replaced(s, "swap.bin", old, new)
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(old).hexdigest()
    assert get_bytes(s, "/ManageSoftDL/swap.bin") == new


# --------------------------------------------------------------------------
# Still only the download tree


def test_symlink_out_of_the_tree_is_404(srv):
    (srv.download_dir / "escape.txt").symlink_to("../secret.txt")
    (srv.download_dir / "passwd").symlink_to("/etc/passwd")
    for name in ("escape.txt", "passwd"):
        resp = request(srv, "GET", f"/ManageSoftDL/{name}")
        assert resp.status == 404, resp
        assert SECRET.strip() not in resp.body and b"root:" not in resp.body


def test_cached_dir_swapped_for_a_symlink_out_is_404(start_server):
    """A cached file whose directory is then replaced by a symlink to a
    directory outside the tree holding a file of the same name: the cache
    must not serve it (its identity differs), nor the fresh open
    (RESOLVE_BENEATH)."""
    s = start_server(CACHE_CONFIG)
    inside = s.download_dir / "pol"
    inside.mkdir()
    (inside / "p.xml").write_bytes(b"<inside/>\n")
    outside = s.dir / "outside"
    outside.mkdir()
    (outside / "p.xml").write_bytes(SECRET)
    cache_it(s, "pol/p.xml")
    os.rename(inside, s.dir / "pol.old")
    (s.download_dir / "pol").symlink_to(outside)
    resp = request(s, "GET", "/ManageSoftDL/pol/p.xml")
    assert resp.status == 404, resp
    assert SECRET.strip() not in resp.body


@pytest.mark.parametrize("target", ["/ManageSoftDL/../secret.txt",
                                    "/ManageSoftDL/%2e%2e/secret.txt",
                                    "/ManageSoftDL//etc/passwd",
                                    "/ManageSoftDL/%2Fetc%2Fpasswd"])
def test_traversal_with_conditionals_still_refused(srv, target):
    """The same refusals as without the new fields (400 for a refused name,
    as test_download.py), also when a Range or a validator rides along."""
    resp = request(srv, "GET", target,
                   headers=["Range: bytes=0-", "If-None-Match: *"])
    assert resp.status == 400, resp
    assert SECRET.strip() not in resp.body and b"root:" not in resp.body


# --------------------------------------------------------------------------
# Per-device policy files: one openat2 a miss, none a hit


class Strace:
    """strace attached to every thread of beacond, recording the syscalls
    that name files. Ready once it said it attached ("Process N attached
    with M threads", one line for all); the record is whole once it
    detached (a traced syscall is written before the thread goes on, so
    before beacond could answer)."""

    def __init__(self, pid, out):
        self.out = out
        self.proc = subprocess.Popen(
            ["strace", "-f", "-e", "trace=openat,openat2,open,newfstatat,statx", "-o", str(out),
             "-p", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        line = self.proc.stderr.readline()
        if "attached" not in line:
            self.proc.kill()
            pytest.skip(f"strace cannot attach here: {line.strip()}")

    def stop(self):
        """Detaches; returns every line recorded."""
        self.proc.terminate()
        self.proc.wait(30)
        return self.out.read_text().splitlines()


def test_policy_file_one_openat2_a_miss_none_a_hit(start_server, tmp_path):
    """Hundreds of thousands of per-device policy files: each request opens
    its file once, with openat2 (RESOLVE_BENEATH), never a path walk of our
    own; a hot file is checked with one fstatat and not opened at all."""
    if not shutil.which("strace"):
        pytest.skip("strace is not installed")
    s = start_server(CACHE_CONFIG)
    rel = "Policies/Merged/corp_domain/Machine/HOST-0001.npl"
    path = s.download_dir / rel
    path.parent.mkdir(parents=True)
    path.write_bytes(b"<policy host='HOST-0001'/>\n")
    settle(path)
    tr = Strace(s.proc.pid, tmp_path / "strace.out")
    for _ in range(3):
        assert get_bytes(s, "/ManageSoftDL/" + rel) == path.read_bytes()
    recorded = tr.stop()
    calls = [c for c in recorded if "HOST-0001.npl" in c]
    opens = [c for c in calls if "open" in c]
    stats_ = [c for c in calls if "stat" in c]
    # first two: a miss each (the second admits it); third: a hit
    assert len(opens) == 2, calls
    assert all("openat2(" in c and "RESOLVE_BENEATH" in c for c in opens), calls
    assert len(stats_) == 1 and ("newfstatat(" in stats_[0] or "statx(" in stats_[0]), calls
    walk = [c for c in recorded if "corp_domain" in c and "HOST-0001.npl" not in c]
    assert not walk, f"a walk of the path's directories: {walk}"
