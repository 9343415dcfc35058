"""Agents' retries are not duplicates (issue 16 item 3).

An agent that lost its 201 sends the same file again: beacond answers 201
with the first upload's id and stores nothing new, when the device,
category, name and body (SHA-256) match an upload committed within
[store] dedupe_window. Anything else is a new upload: a retry must never be
answered with, or suppress, another device's upload."""

import hashlib
import json
import os
import re
import ssl
import subprocess
import threading
import time

from helpers import build_request, tls_connect, unique_name
from trustkit import beaconctl_sock

# The module's server runs with the default window (24h).


def put(server, name, data, *, agent="agent1", category="Inventories"):
    """One upload on a fresh connection: (status, upload id from Location,
    body). The id in the body must agree with the Location header."""
    with tls_connect(server, agent) as c:
        c.send(build_request("PUT", f"/ManageSoftRL/{category}/{name}", body=data))
        resp = c.read_response(30.0)
    if resp.status != 201:
        return resp.status, None, resp.body
    loc = resp.header("Location")
    m = re.fullmatch(r"/uploads/(\d+)", loc or "")
    assert m, f"201 without an upload Location: {resp!r}"
    body = resp.body.decode()
    assert body == f"201 Created: upload {m.group(1)}, {len(data)} bytes\n", body
    return 201, int(m.group(1)), body


def put_ok(server, name, data, **kw):
    status, upload_id, body = put(server, name, data, **kw)
    assert status == 201, (status, body)
    return upload_id


def records(server, name, device=None):
    return [r for r in server.uploads(device) if r["name"] == name]


def stat(server, key):
    p = beaconctl_sock(server, "stats")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)[key]


def wait_for(what, check, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_retry_gets_first_id(server):
    name = unique_name("retry")
    data = os.urandom(5000)
    before_total = len(server.uploads())
    before = stat(server, "store_uploads_deduplicated")
    first = put_ok(server, name, data)
    again = put_ok(server, name, data)
    assert again == first
    rows = records(server, name)
    assert [r["id"] for r in rows] == [first]
    assert len(server.uploads()) == before_total + 1
    assert server.upload_bytes(first) == data
    assert stat(server, "store_uploads_deduplicated") == before + 1
    shown = server.beaconctl("uploads", "show", first).stdout.decode()
    assert f"sha256:      {hashlib.sha256(data).hexdigest()}" in shown, shown
    assert rows[0]["sha256"] == hashlib.sha256(data).hexdigest()


def test_big_retry(server, big_file):
    """A body that streams through many buffer halves hashes the same."""
    name = unique_name("big-retry")
    data = big_file.read_bytes()
    first = put_ok(server, name, data)
    assert put_ok(server, name, data) == first
    assert [r["id"] for r in records(server, name)] == [first]


def test_dropped_201_then_retry(server):
    """The agent sends the whole body and closes before reading the 201;
    its retry is answered with the id of the upload that did commit."""
    name = unique_name("dropped")
    data = os.urandom(20000)
    # TLS 1.2: its session ticket comes inside the handshake. A TLS 1.3
    # ticket arrives after it and would sit unread in this socket, and
    # closing a socket with unread bytes sends RST, which may discard the
    # body before beacond reads it. Here close() sends FIN behind the whole
    # body, or RST only once the 201 (sent after the commit) is in.
    c = tls_connect(server, max_version=ssl.TLSVersion.TLSv1_2)
    c.send(build_request("PUT", f"/ManageSoftRL/Inventories/{name}", body=data))
    c.close()
    committed = wait_for("the dropped upload's commit", lambda: records(server, name))
    assert len(committed) == 1
    assert put_ok(server, name, data) == committed[0]["id"]
    assert [r["id"] for r in records(server, name)] == [committed[0]["id"]]


def test_other_device_same_name_and_content(server):
    """Device B's identical file is B's own upload, before and after A's."""
    name = unique_name("two-devices")
    data = os.urandom(3000)
    a = put_ok(server, name, data, agent="agent1")
    b = put_ok(server, name, data, agent="agent2")
    assert b != a
    assert put_ok(server, name, data, agent="agent1") == a
    assert put_ok(server, name, data, agent="agent2") == b
    assert [r["id"] for r in records(server, name, "agent1.example")] == [a]
    assert [r["id"] for r in records(server, name, "agent2.example")] == [b]
    assert server.upload_bytes(b) == data


def test_same_name_other_content(server):
    name = unique_name("other-content")
    a = put_ok(server, name, b"version one\n")
    b = put_ok(server, name, b"version two\n")
    assert b != a
    assert sorted(r["id"] for r in records(server, name)) == sorted([a, b])


def test_same_content_other_category_or_name(server):
    data = os.urandom(1000)
    name = unique_name("place")
    a = put_ok(server, name, data, category="Inventories")
    b = put_ok(server, name, data, category="UsageData")
    other = unique_name("place")
    c = put_ok(server, other, data)
    assert len({a, b, c}) == 3
    assert len(records(server, name)) == 2
    assert len(records(server, other)) == 1


def test_empty_body_retry(server):
    name = unique_name("empty")
    first = put_ok(server, name, b"")
    assert put_ok(server, name, b"") == first
    assert len(records(server, name)) == 1


def parallel_puts(server, name, data, n):
    results, errors = [None] * n, []
    barrier = threading.Barrier(n)

    def one(i):
        try:
            with tls_connect(server) as c:
                barrier.wait(30)
                c.send(build_request("PUT", f"/ManageSoftRL/Inventories/{name}", body=data))
                resp = c.read_response(30.0)
            results[i] = (resp.status, resp.header("Location"))
        except Exception as e:  # reported below, with the others
            errors.append(repr(e))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return results


def test_parallel_identical_uploads_one_record(start_server):
    """N identical uploads at once over N connections, on two workers: one
    record, and every answer carries its id. A long group wait puts uploads
    sent together into one group commit, so the match inside one LMDB
    transaction is checked too."""
    srv = start_server({"server": {"workers": "2"}, "store": {"group_wait": "300ms"}})
    for round_ in range(3):
        name = unique_name(f"parallel{round_}")
        data = os.urandom(4000 + round_ * 100000)
        results = parallel_puts(srv, name, data, 8)
        assert all(s == 201 for s, _ in results), results
        rows = records(srv, name)
        assert len(rows) == 1, rows
        assert {loc for _, loc in results} == {f"/uploads/{rows[0]['id']}"}, results
        assert srv.upload_bytes(rows[0]["id"]) == data


def test_window_zero_stores_every_upload(start_server):
    srv = start_server({"store": {"dedupe_window": "0"}})
    name = unique_name("off")
    data = b"the same inventory\n"
    a = put_ok(srv, name, data)
    b = put_ok(srv, name, data)
    assert a != b
    assert sorted(r["id"] for r in records(srv, name)) == sorted([a, b])
    assert stat(srv, "store_uploads_deduplicated") == 0
    row = records(srv, name)[0]
    assert row["sha256"] is None


def dedupe_entries(srv):
    """Entries of the index's `dedupe` database (two per upload remembered)."""
    p = subprocess.run(["mdb_stat", "-s", "dedupe", str(srv.data_dir / "index")],
                       capture_output=True, text=True, timeout=30)
    m = re.search(r"Entries: (\d+)", p.stdout)
    assert m, (p.returncode, p.stdout, p.stderr)
    return int(m.group(1))


def test_after_the_window_a_new_record(start_server):
    """Past the window the same upload is new, and what the window has
    left behind is forgotten by the next commit (the database does not
    grow with every upload ever made)."""
    srv = start_server({"store": {"dedupe_window": "2s"}})
    name = unique_name("window")
    data = os.urandom(2000)
    sent = time.monotonic()
    first = put_ok(srv, name, data)
    others = [put_ok(srv, unique_name("window-other"), os.urandom(100)) for _ in range(5)]
    # The window counts from the first upload's commit, before its 201:
    # well past 2 s after the request began, it is over.
    time.sleep(max(0.0, sent + 3.5 - time.monotonic()))
    again = put_ok(srv, name, data)
    assert again != first and again not in others
    assert sorted(r["id"] for r in records(srv, name)) == sorted([first, again])
    # The commit of `again` forgot the six expired uploads; at most its
    # own entries are left.
    assert dedupe_entries(srv) <= 2


def test_retry_after_kill9(start_server):
    """kill -9 between the first commit and the retry: the retry after the
    restart still gets the first id."""
    srv = start_server()
    name = unique_name("crash")
    data = os.urandom(70000)
    first = put_ok(srv, name, data)
    srv.proc.kill()
    srv.proc.wait(10)
    srv.proc = None
    srv._stderr_file.close()
    srv.start()
    assert put_ok(srv, name, data) == first
    assert [r["id"] for r in records(srv, name)] == [first]
    # New uploads after the restart take new ids, past the retry's.
    other = put_ok(srv, unique_name("crash-next"), data)
    assert other > first


def test_retry_of_an_upload_retention_removed(start_server):
    """A retry whose first upload retention has removed is stored again:
    it is never answered with an id that no longer names anything."""
    srv = start_server({"store": {"retain_bytes": "1M"}})
    name = unique_name("retained")
    data = os.urandom(600 * 1024)
    first = put_ok(srv, name, data)
    put_ok(srv, unique_name("pushes-out"), os.urandom(600 * 1024))
    wait_for("retention to remove the first upload", lambda: not records(srv, name))
    again = put_ok(srv, name, data)
    assert again != first
    assert [r["id"] for r in records(srv, name)] == [again]
    assert srv.upload_bytes(again) == data
