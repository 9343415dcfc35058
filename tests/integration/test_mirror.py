"""Content down from a parent (issue 17 items 3 and 4): an edge beacond
mirrors its download directory from a parent beacond ([upstream] sync),
two real processes, the PKI roles of test_upstream.py (the edge's client
certificate agent-ca2 is the parent's listed child).

Progress is waited on through the edge's status ("mirror": rounds,
files, last error), never with a fixed sleep. A round that started after
a change at the parent has ended once rounds_ok has grown by two.
"""

import hashlib
import http.server
import os
import ssl
import threading

import pytest

from helpers import request
from test_upstream import CHILD, fingerprint, wait_for

POLICY = "Policies/Merged/corp_domain/Machine/HOST1.npl"


def parent_config(pki):
    return {"upstream": {"children": fingerprint(pki, CHILD)}}


def edge_config(pki, port, interval="1s"):
    return {"upstream": {"url": f"https://localhost:{port}",
                         "cert": str(pki / f"{CHILD}.pem"), "key": str(pki / f"{CHILD}.key"),
                         "ca": str(pki / "server-ca.pem"), "beacon_id": "edge1",
                         "sync": "on", "sync_interval": interval}}


def mirror(srv):
    import json
    out = srv.beaconctl("--socket", srv.control_socket, "--json", "status").stdout
    return json.loads(out)["mirror"]


def rounds_after(edge, what, n=2, key="rounds_ok"):
    """Waits until `key` has grown by n from now: with n=2, a whole round
    began after this call."""
    start = mirror(edge)[key]
    return wait_for(lambda: (m := mirror(edge))[key] >= start + n and m, what=what)


def write(root, rel, body):
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".new-by-test")
    tmp.write_bytes(body)
    os.replace(tmp, p)  # atomic at the parent too


def get(srv, rel, agent="agent1", headers=()):
    return request(srv, "GET", f"/ManageSoftDL/{rel}", name=agent, headers=headers, timeout=30.0)


def pair(start_server, pki, interval="1s"):
    parent = start_server(parent_config(pki))
    write(parent.download_dir, POLICY, b"<policy version='1'/>\n")
    edge = start_server(edge_config(pki, parent.port, interval))
    wait_for(lambda: mirror(edge)["rounds_ok"] >= 1, what="the first sync round")
    return parent, edge


def test_a_changed_policy_is_served_by_the_edge_then_304(start_server, pki):
    parent, edge = pair(start_server, pki)
    assert (edge.download_dir / POLICY).read_bytes() == b"<policy version='1'/>\n"
    new = b"<policy version='2'>" + os.urandom(64).hex().encode() + b"</policy>\n"
    write(parent.download_dir, POLICY, new)
    rounds_after(edge, "a round after the change")
    r = get(edge, POLICY)
    assert r.status == 200 and r.body == new, r
    # The edge's ETag is its own file's; once settled, an agent holding the
    # new version gets 304.
    r = wait_for(lambda: (r := get(edge, POLICY)).header("ETag") and r, what="a settled ETag")
    assert r.body == new
    again = get(edge, POLICY, headers=[f"If-None-Match: {r.header('ETag')}"])
    assert again.status == 304 and again.body == b"", again
    m = mirror(edge)
    assert m["state"] in ("ok", "syncing") and m["files_synced"] >= 2, m
    stats = edge.beaconctl("--socket", edge.control_socket, "status").stdout.decode()
    assert "upstream sync:" in stats and "last good round" in stats, stats
    assert "mirror: " + POLICY in edge.stderr()


def test_beaconctl_upstream_sync_starts_a_round_at_once(start_server, pki):
    parent, edge = pair(start_server, pki, interval="0")  # on demand only
    assert mirror(edge)["rounds_ok"] == 1
    write(parent.download_dir, "Packages/new.pkg", b"package bytes\n")
    (parent.download_dir / "policy.xml").unlink()
    assert (edge.download_dir / "policy.xml").exists()
    out = edge.beaconctl("--socket", edge.control_socket, "upstream", "sync").stdout.decode()
    assert "sync round" in out, out
    m = wait_for(lambda: (m := mirror(edge))["rounds_ok"] == 2 and m, what="the asked-for round")
    assert m["rounds_failed"] == 0 and m["files_removed"] >= 1, m
    assert (edge.download_dir / "Packages/new.pkg").read_bytes() == b"package bytes\n"
    assert not (edge.download_dir / "policy.xml").exists()
    assert get(edge, "policy.xml").status == 404
    assert "audit: upstream_sync" in edge.stderr()


def test_a_reader_gets_the_old_or_the_new_file_whole(start_server, pki):
    parent, edge = pair(start_server, pki, interval="0")
    rel = "Packages/big.bin"
    versions = set()
    first = os.urandom(3 * 1024 * 1024)
    versions.add(hashlib.sha256(first).hexdigest())
    write(parent.download_dir, rel, first)
    edge.beaconctl("--socket", edge.control_socket, "upstream", "sync")
    wait_for(lambda: (edge.download_dir / rel).exists(), what="the first version at the edge")
    seen, stop = [], threading.Event()

    def reader():
        while not stop.is_set():
            r = get(edge, rel)
            if r.status == 200:
                seen.append(hashlib.sha256(r.body).hexdigest())

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(6):
            body = os.urandom(3 * 1024 * 1024)
            versions.add(hashlib.sha256(body).hexdigest())
            write(parent.download_dir, rel, body)
            before = len(seen)
            edge.beaconctl("--socket", edge.control_socket, "upstream", "sync")
            wait_for(lambda: (edge.download_dir / rel).read_bytes() == body,
                     what=f"version {i} at the edge")
            wait_for(lambda: len(seen) > before, what="a read during the round")
    finally:
        stop.set()
        t.join(120)
    assert seen and set(seen) <= versions, "a read that is neither version whole"
    assert (edge.download_dir / rel).read_bytes() == body


def test_parent_down_the_edge_keeps_serving_then_catches_up(start_server, pki):
    parent, edge = pair(start_server, pki)
    parent.stop()
    write(parent.download_dir, POLICY, b"<policy version='3'/>\n")
    # A round in flight when the parent stopped fails otherwise ("fatal I/O
    # error in TLS layer", seen under load); the rounds after it cannot
    # connect, and that is what the edge must say.
    m = wait_for(lambda: (m := mirror(edge))["rounds_failed"] >= 1 and m["state"] == "failing"
                 and "connect" in m["last_error"] and m, what="a round that cannot connect")
    r = get(edge, POLICY)
    assert r.status == 200 and r.body == b"<policy version='1'/>\n", r
    text = edge.beaconctl("--socket", edge.control_socket, "status").stdout.decode()
    assert "upstream sync error: " in text and "connect" in text, text
    parent.start()
    wait_for(lambda: get(edge, POLICY).body == b"<policy version='3'/>\n",
             what="the edge to catch up")
    wait_for(lambda: mirror(edge)["state"] == "ok", what="a good round")


def test_an_agent_asking_for_the_manifest_gets_403(start_server, pki):
    parent = start_server(parent_config(pki))
    for target in ("/ManageSoftDL-index", "/managesoftdl-INDEX"):
        r = request(parent, "GET", target, name="agent1")
        assert r.status == 403 and b"child beacons" in r.body, r
    r = request(parent, "GET", "/ManageSoftDL-index", name=CHILD)
    assert r.status == 200 and r.body.startswith(b"beacond-manifest 1\n"), r
    assert b" policy.xml\n" in r.body and b" sub/dir/file.bin\n" in r.body, r.body


# ---- a hostile parent ----

class Hostile:
    """A small HTTPS parent answering from a table: target -> raw answer
    bytes (head and body as sent), or a callable giving them."""

    def __init__(self, pki, table):
        self.table = table
        self.asked = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                outer.asked.append(self.path)
                raw = outer.table.get(self.path, b"HTTP/1.1 404 Not Found\r\n"
                                      b"Content-Length: 0\r\n\r\n")
                self.wfile.write(raw)
                self.wfile.flush()
                if b"Connection: close" in raw.split(b"\r\n\r\n")[0] or raw.endswith(b"CUT"):
                    self.close_connection = True

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(pki / "server.pem", pki / "server.key")
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def manifest(*paths):
    body = b"beacond-manifest 1\n" + b"".join(
        b'5 1700000000000000000 "h-%d" %s\n' % (i, p) for i, p in enumerate(paths))
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body


def answer(body, length=None, etag=b'"v"'):
    n = len(body) if length is None else length
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nETag: %s\r\n\r\n" % (n, etag) + body


@pytest.fixture
def hostile(pki):
    made = []

    def factory(table):
        h = Hostile(pki, table)
        made.append(h)
        return h

    yield factory
    for h in made:
        h.close()


def failed_round(edge):
    return wait_for(lambda: (m := mirror(edge))["rounds_failed"] >= 1 and m,
                    what="a failed round")


@pytest.mark.parametrize("path", [b"../../outside/x", b"/tmp/x", b"a/../../x", b"a//b",
                                  b"ok/..", b"a\\b"])
def test_a_hostile_manifest_path_is_refused(start_server, pki, hostile, path):
    h = hostile({"/ManageSoftDL-index": manifest(b"fine.txt", path),
                 "/ManageSoftDL/fine.txt": answer(b"fine\n")})
    edge = start_server(edge_config(pki, h.port), start=False)
    outside = edge.dir / "outside"
    outside.mkdir()
    edge.start()
    m = failed_round(edge)
    assert "manifest line 3 refused" in m["last_error"], m
    assert m["files_synced"] == 0 and m["rounds_ok"] == 0, m
    assert list(outside.iterdir()) == []
    assert not (edge.download_dir / "fine.txt").exists()  # a bad manifest is refused whole
    assert (edge.download_dir / "policy.xml").exists()    # and costs no file
    assert h.asked and all(a == "/ManageSoftDL-index" for a in h.asked), h.asked


def test_a_name_through_a_symlink_is_not_followed(start_server, pki, hostile):
    h = hostile({"/ManageSoftDL-index": manifest(b"link/x", b"leaf"),
                 "/ManageSoftDL/link/x": answer(b"xxxxx"),
                 "/ManageSoftDL/leaf": answer(b"leaf!")})
    edge = start_server(edge_config(pki, h.port), start=False)
    outside = edge.dir / "outside"
    outside.mkdir()
    (outside / "target").write_bytes(b"untouched")
    (edge.download_dir / "link").symlink_to(outside)
    (edge.download_dir / "leaf").symlink_to(outside / "target")
    edge.start()
    m = failed_round(edge)
    assert "link/x: its directory: Too many levels of symbolic links" in m["last_error"], m
    assert sorted(p.name for p in outside.iterdir()) == ["target"]
    assert (outside / "target").read_bytes() == b"untouched"
    # The symlink named itself is replaced by the file, not written through.
    leaf = edge.download_dir / "leaf"
    wait_for(lambda: not leaf.is_symlink(), what="the leaf symlink replaced")
    assert leaf.read_bytes() == b"leaf!"
    # The round removed the planted link (the parent does not list it), so
    # the retry makes a real directory there.
    wait_for(lambda: (edge.download_dir / "link" / "x").is_file()
             and not (edge.download_dir / "link").is_symlink(), what="link/x as a real file")
    assert (edge.download_dir / "link" / "x").read_bytes() == b"xxxxx"
    assert sorted(p.name for p in outside.iterdir()) == ["target"]
    assert (outside / "target").read_bytes() == b"untouched"


def test_a_file_turned_directory_at_the_parent_converges(start_server, pki):
    parent, edge = pair(start_server, pki)
    write(parent.download_dir, "Packages/thing", b"a file\n")
    rounds_after(edge, "the file at the edge")
    assert (edge.download_dir / "Packages/thing").read_bytes() == b"a file\n"
    (parent.download_dir / "Packages/thing").unlink()
    write(parent.download_dir, "Packages/thing/inside", b"now a directory\n")
    wait_for(lambda: (edge.download_dir / "Packages/thing").is_dir()
             and (edge.download_dir / "Packages/thing/inside").exists(), what="the directory")
    assert (edge.download_dir / "Packages/thing/inside").read_bytes() == b"now a directory\n"


@pytest.mark.parametrize("case", ["short", "long", "5xx"])
def test_a_bad_body_leaves_the_old_file(start_server, pki, hostile, case):
    raw = {"short": answer(b"12345", length=4096) + b"CUT",
           "long": answer(b"0123456789" * 10, length=20),
           "5xx": b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n"}[case]
    h = hostile({"/ManageSoftDL-index": manifest(b"policy.xml"),
                 "/ManageSoftDL/policy.xml": raw})
    edge = start_server(edge_config(pki, h.port), start=False)
    old = (edge.download_dir / "policy.xml").read_bytes()
    edge.start()
    m = failed_round(edge)
    want = {"short": "body cut short", "long": "body longer than its Content-Length",
            "5xx": "parent answered 503 Busy"}[case]
    assert want in m["last_error"], m
    assert (edge.download_dir / "policy.xml").read_bytes() == old
    r = get(edge, "policy.xml")
    assert r.status == 200 and r.body == old, r
    assert not [p for p in edge.download_dir.rglob(".beacon-mirror-*")]
    # Retried with backoff: the failures go on, the file stays.
    wait_for(lambda: mirror(edge)["rounds_failed"] >= 2, what="a retried round")
    assert (edge.download_dir / "policy.xml").read_bytes() == old


def test_sync_without_a_parent_is_refused_at_start(start_server, pki):
    import subprocess
    srv = start_server({"upstream": {"sync": "on"}}, start=False)
    p = subprocess.run(srv.command(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=60)
    out = p.stdout.decode()
    assert p.returncode != 0 and "[upstream] sync needs url" in out, out
    assert "beacond.conf:" in out, out  # the file and line


def test_a_tree_past_the_manifest_bound_gets_500_and_the_edge_keeps_its_files(start_server,
                                                                               pki):
    """100000 files is the bound: one more and the parent refuses the list
    whole (a list cut short would make the edge delete the rest)."""
    parent = start_server(parent_config(pki))
    many = parent.download_dir / "many"
    many.mkdir()
    for i in range(100000 - 2 + 1):  # beside policy.xml and sub/dir/file.bin
        os.close(os.open(many / str(i), os.O_CREAT | os.O_WRONLY, 0o644))
    r = request(parent, "GET", "/ManageSoftDL-index", name=CHILD, timeout=60.0)
    assert r.status == 500 and b"too large for one manifest" in r.body, r
    assert "download manifest refused" in parent.stderr()
    edge = start_server(edge_config(pki, parent.port))
    m = wait_for(lambda: (m := mirror(edge))["rounds_failed"] >= 1 and m, what="a failed round")
    assert "manifest: parent answered 500" in m["last_error"], m
    assert (edge.download_dir / "policy.xml").exists()
    os.unlink(many / "0")  # at the bound: listed
    r = request(parent, "GET", "/ManageSoftDL-index", name=CHILD, timeout=60.0)
    assert r.status == 200 and r.body.count(b"\n") == 1 + 100000, r.status
