"""The NATS JetStream drain (issue 16 items 1, 2 and 4), against a real
nats-server that each test starts (natsfix.py) on a loopback port.

For every fault the end state is checked the same way (assert_exactly_once):
the stream holds as many uploads as the store, no Nats-Msg-Id twice, and
every upload's body (reassembled from its chunks where it was chunked)
matches its Length and CRC32 headers and the bytes the agent sent.

Readiness and progress are waited on through beaconctl --json status (the
drain's state and lag) and its counters, never with a fixed sleep.
"""

import json
import subprocess
import os
import signal
import socket
import threading
import time
import urllib.request
import zlib

import pytest

from helpers import BEACOND, HOST, free_port, mount_tmpfs, request, umount, unique_name
from natsfix import NatsServer, read_stream, stream_info, uploads_in
from trustkit import http_get

STREAM = "BEACON_UPLOADS"


def drain_config(url, **extra):
    kv = {"nats": url, "beacon_id": "b1", "window": "16"}
    kv.update(extra)
    return {"drain": kv}


def status(srv):
    out = srv.beaconctl("--socket", srv.control_socket, "--json", "status").stdout
    return json.loads(out)["drain"]


def wait_for(pred, timeout=60, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)  # polling the status, not standing in for it


def upload(srv, name, body, category="Inventories"):
    r = request(srv, "PUT", f"/ManageSoftRL/{category}/{name}", body, timeout=30.0)
    return r.status


def upload_many(srv, n, size=2000, prefix="f"):
    sent = {}
    for _ in range(n):
        name = unique_name(prefix)
        body = os.urandom(size)
        assert upload(srv, name, body) == 201
        sent[name] = body
    return sent


def wait_drained(srv, timeout=90):
    return wait_for(lambda: (s := status(srv))["lag_uploads"] == 0 and s["state"] == "connected"
                    and s, timeout, "the drain to catch up")


def assert_exactly_once(srv, nats, sent):
    """The stream holds every stored upload once, bodies intact."""
    stored = {r["id"]: r for r in srv.uploads()}
    in_stream = uploads_in(read_stream(nats.port, STREAM, auth=getattr(nats, "auth", None)))
    assert sorted(in_stream) == sorted(stored), (
        f"store has {len(stored)} uploads, stream {len(in_stream)}: "
        f"missing {sorted(set(stored) - set(in_stream))[:10]}, "
        f"extra {sorted(set(in_stream) - set(stored))[:10]}")
    for uid, (headers, body) in in_stream.items():
        assert headers["Name"] == stored[uid]["name"]
        assert headers["Nats-Msg-Id"] == f"b1.{uid}"
        if headers["Name"] in sent:
            assert body == sent[headers["Name"]], f"upload {uid}: body differs from what was sent"
    return in_stream


@pytest.fixture
def nats(tmp_path):
    ns = NatsServer(tmp_path / "nats")
    yield ns
    ns.stop()


def test_nats_absent_at_start_uploads_still_201_then_drains(start_server, nats):
    srv = start_server(drain_config(nats.url))
    sent = upload_many(srv, 12)
    st = wait_for(lambda: (s := status(srv))["state"] == "disconnected" and s, 30,
                  "the drain to report the missing server")
    assert "connect" in st["last_error"], st
    assert st["lag_uploads"] == 12 and st["lag_bytes"] == 12 * 2000, st
    text = srv.beaconctl("--socket", srv.control_socket, "status").stdout.decode()
    assert "drain:               disconnected (nats), lag 12 uploads" in text, text

    nats.start()
    wait_drained(srv)
    assert_exactly_once(srv, nats, sent)
    metrics = srv.beaconctl("--socket", srv.control_socket, "--json", "stats").stdout
    stats = json.loads(metrics)
    assert stats["drain_uploads_acked"] == 12 and stats["drain_lag_uploads"] == 0, stats


class Uploader(threading.Thread):
    """Uploads until stopped; every 201 is remembered."""

    def __init__(self, srv, size=3000):
        super().__init__(daemon=True)
        self.srv, self.size = srv, size
        self.sent, self.errors = {}, []
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            name = unique_name("load")
            body = os.urandom(self.size)
            try:
                code = upload(self.srv, name, body)
            except Exception as e:  # beacond killed under it: recorded
                self.errors.append(repr(e))
                continue
            if code == 201:
                self.sent[name] = body

    def finish(self):
        self.stop.set()
        self.join(60)
        assert not self.is_alive()


def test_nats_killed_mid_drain_and_restarted(start_server, nats):
    nats.start()
    srv = start_server(drain_config(nats.url))
    up = Uploader(srv)
    up.start()
    wait_for(lambda: status(srv)["uploads_acked"] >= 10, 60, "10 uploads drained")
    nats.kill()
    wait_for(lambda: status(srv)["state"] == "disconnected", 60, "the drain to see NATS gone")
    n = len(up.sent)
    wait_for(lambda: len(up.sent) >= n + 5, 60, "uploads to keep getting 201 while NATS is down")
    assert status(srv)["lag_uploads"] > 0
    nats.start()
    up.finish()
    assert not up.errors, up.errors[:3]
    wait_drained(srv)
    assert_exactly_once(srv, nats, up.sent)


def test_beacond_kill9_mid_drain_no_loss_no_duplicate(start_server, nats):
    nats.start()
    srv = start_server(drain_config(nats.url))
    up = Uploader(srv)
    up.start()
    wait_for(lambda: status(srv)["uploads_acked"] >= 10, 60, "10 uploads drained")
    up.stop.set()
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait(10)
    srv.proc = None
    srv._stderr_file.close()
    up.finish()
    srv.start()
    wait_drained(srv)
    assert_exactly_once(srv, nats, up.sent)


class Blackhole:
    """A TCP proxy to NATS that can stop passing bytes (both ways, existing
    connections too) while it keeps the connections open: a blocked port."""

    def __init__(self, target_port):
        self.target = target_port
        self.port = free_port()
        self.passing = threading.Event()
        self.passing.set()
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((HOST, self.port))
        self.lsock.listen(16)
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            try:
                u = socket.create_connection((HOST, self.target), timeout=5)
            except OSError:
                c.close()
                continue
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                self.passing.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.closed = True
        self.passing.set()
        self.lsock.close()


def test_nats_port_blocked_for_a_while(start_server, nats):
    nats.start()
    hole = Blackhole(nats.port)
    try:
        srv = start_server(drain_config(f"nats://{HOST}:{hole.port}"))
        sent = upload_many(srv, 5)
        wait_drained(srv)
        hole.passing.clear()
        sent.update(upload_many(srv, 10))
        st = wait_for(lambda: (s := status(srv))["state"] == "disconnected" and s, 60,
                      "the drain to give up waiting for acks")
        assert "timeout" in st["last_error"].lower(), st
        assert st["lag_uploads"] >= 10, st
        hole.passing.set()
        wait_drained(srv)
        assert_exactly_once(srv, nats, sent)
    finally:
        hole.close()


def test_upload_over_max_payload_arrives_chunked(start_server, tmp_path):
    ns = NatsServer(tmp_path / "nats-small", max_payload=16384).start()
    try:
        srv = start_server(drain_config(ns.url))
        big = os.urandom(100_000)
        sent = {"big.bin": big}
        assert upload(srv, "big.bin", big) == 201
        sent.update(upload_many(srv, 3, size=500))
        wait_drained(srv)
        msgs = read_stream(ns.port, STREAM)
        chunk_msgs = [m for m in msgs if "Chunk" in m.headers]
        assert len(chunk_msgs) >= 100_000 // 16384, [m.headers for m in msgs]
        assert all(len(m.body) <= 16384 for m in msgs)
        got = assert_exactly_once(srv, ns, sent)
        final = [h for h, b in got.values() if h["Name"] == "big.bin"][0]
        assert int(final["Chunks"]) == len(chunk_msgs)
        assert final["CRC32"] == f"{zlib.crc32(big):08x}"
    finally:
        ns.stop()


def test_replay_republishes_and_the_stream_drops_duplicates(start_server, nats):
    nats.start()
    srv = start_server(drain_config(nats.url))
    sent = upload_many(srv, 6)
    wait_drained(srv)
    before = status(srv)["uploads_published"]
    out = srv.beaconctl("--socket", srv.control_socket, "drain", "replay", "--from", "1").stdout
    assert b"6 uploads from id 1 queued to publish again" in out, out
    wait_for(lambda: status(srv)["uploads_published"] >= before + 6, 60, "the replay")
    wait_drained(srv)
    assert stream_info(nats.port, STREAM)["state"]["messages"] == 6
    assert_exactly_once(srv, nats, sent)


def test_pause_and_resume(start_server, nats):
    nats.start()
    srv = start_server(drain_config(nats.url))
    out = srv.beaconctl("--socket", srv.control_socket, "drain", "pause").stdout
    assert b"drain nats paused" in out, out
    wait_for(lambda: status(srv)["state"] == "paused", 30, "paused")
    sent = upload_many(srv, 4)
    assert status(srv)["lag_uploads"] == 4
    out = srv.beaconctl("--socket", srv.control_socket, "drain", "resume").stdout
    assert b"drain nats resumed" in out, out
    wait_drained(srv)
    assert_exactly_once(srv, nats, sent)


def test_missing_stream_without_create_is_a_clear_error(start_server, nats):
    nats.start()
    srv = start_server(drain_config(nats.url, create_stream="no"))
    st = wait_for(lambda: (s := status(srv))["state"] == "disconnected" and s, 30, "the error")
    assert st["last_error"] == ("stream BEACON_UPLOADS does not exist and [drain] "
                                "create_stream = no: create it, with subjects beacon.uploads.>")
    assert "create_stream = no" in srv.stderr()


def test_retention_keeps_undrained_and_507_stops_once_drained(start_server, nats):
    """A 16 MiB tmpfs: undrained uploads fill it (retention may not take
    them), uploads get 507, and once NATS comes the drain empties the
    pending set, retention frees space and uploads get 201 again."""
    srv = start_server(dict(drain_config(nats.url),
                            store={"retain_bytes": "2M", "segment_size": "1M",
                                   "upload_buffer": "64k"}), start=False)
    mount_tmpfs(srv.data_dir, "16m")
    try:
        srv.start()
        sent, refused = {}, 0
        while refused == 0:
            assert len(sent) < 64, "16 MiB never filled"
            name = unique_name("fill")
            body = os.urandom(512 * 1024)
            code = upload(srv, name, body)
            if code == 201:
                sent[name] = body
            else:
                assert code == 507, code
                refused += 1
        assert len(sent) >= 8  # well past retain_bytes: retention kept them all
        stored = {r["name"] for r in srv.uploads()}
        assert stored == set(sent), "retention deleted an undrained upload"
        nats.start()
        in_stream = wait_for(
            lambda: status(srv)["lag_uploads"] == 0 and uploads_in(read_stream(nats.port, STREAM)),
            90, "the drain to catch up")
        assert {h["Name"] for h, _ in in_stream.values()} == set(sent)
        for h, body in in_stream.values():
            assert body == sent[h["Name"]]
        # Retention now takes the drained ones: the 507s stop by themselves.
        wait_for(lambda: upload(srv, unique_name("after"), os.urandom(512 * 1024)) == 201, 90,
                 "uploads to get 201 again")
    finally:
        try:
            srv.stop()
        finally:
            umount(srv.data_dir)


@pytest.mark.parametrize("key,value,reason", [
    ("nats", "http://127.0.0.1:4222", "is not a comma-separated list of nats:// or tls:// URLs"),
    ("stream", "BEACON.UPLOADS", "[drain] stream: 'BEACON.UPLOADS' is not a stream name"),
    ("subject", "beacon.*", "[drain] subject: 'beacon.*' is not a subject prefix"),
    ("beacon_id", "edge.1", "[drain] beacon_id: 'edge.1' is not one subject token"),
    ("window", "0", "[drain] window: '0' is out of range (1 to 65536)"),
    ("replicas", "9", "[drain] replicas: '9' is out of range (1 to 5)"),
    ("max_chunk", "100", "[drain] max_chunk: at least 1k"),
    ("create_stream", "maybe", "[drain] create_stream: 'maybe' is not one of"),
    ("tls_cert", "/etc/cert.pem", "[drain] tls_cert and tls_key go together"),
])
def test_bad_drain_value_names_file_and_line(start_server, key, value, reason):
    srv = start_server(start=False)
    lines = srv.conf.read_text().splitlines() + ["[drain]", "nats = nats://127.0.0.1:4222",
                                                 f"{key} = {value}"]
    srv.conf.write_text("\n".join(lines) + "\n")
    p = subprocess.run([str(BEACOND), "-t", "-c", str(srv.conf)], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30)
    err = p.stderr.decode()
    assert p.returncode != 0
    assert f"{srv.conf}:{len(lines)}: " in err and reason in err, err


def test_upload_that_began_first_and_committed_last_is_drained(start_server, nats):
    """Ids are taken when an upload begins; commits come in the order
    uploads end. An upload still streaming while later ids are drained must
    not be passed over (a plain "drained up to id N" mark would lose it)."""
    from helpers import build_request, tls_connect
    nats.start()
    srv = start_server(drain_config(nats.url))
    slow_body = os.urandom(200_000)
    head = build_request("PUT", "/ManageSoftRL/Inventories/slow.bin", (), slow_body)
    head_len = len(head) - len(slow_body)
    conn = tls_connect(srv, timeout=60)
    try:
        conn.send(head[:head_len] + slow_body[:1000])

        def stats():
            out = srv.beaconctl("--socket", srv.control_socket, "--json", "stats").stdout
            return json.loads(out)
        wait_for(lambda: stats()["store_uploads_open"] == 1, 30, "the slow upload to begin")
        sent = upload_many(srv, 4)
        wait_drained(srv)
        assert status(srv)["uploads_acked"] == 4
        conn.send(slow_body[1000:])
        assert conn.read_response(30).status == 201
    finally:
        conn.close()
    sent["slow.bin"] = slow_body
    wait_drained(srv)
    got = assert_exactly_once(srv, nats, sent)
    slow = [uid for uid, (h, _) in got.items() if h["Name"] == "slow.bin"]
    assert slow and slow[0] < max(got), f"the slow upload's id {slow} was not the lowest"


def test_user_and_password(start_server, tmp_path):
    auth = ['authorization { user: beacon, password: "s3cret" }']
    ns = NatsServer(tmp_path / "nats-auth", extra=auth).start()
    ns.auth = ("beacon", "s3cret")  # for the test's own reader
    try:
        wrong = start_server(drain_config(ns.url, user="beacon", password="wrong"))
        st = wait_for(lambda: (s := status(wrong))["state"] == "disconnected" and s, 30,
                      "the refused login")
        assert "authorization violation" in st["last_error"].lower(), st
        srv = start_server(drain_config(ns.url, user="beacon", password="s3cret"))
        sent = upload_many(srv, 3)
        wait_drained(srv)
        assert_exactly_once(srv, ns, sent)
    finally:
        ns.stop()


def test_tls_to_nats_with_a_client_certificate(start_server, tmp_path, pki):
    tls = [f'tls {{ cert_file: "{pki}/server.pem", key_file: "{pki}/server.key", '
           f'ca_file: "{pki}/agents-ca.pem", verify: true }}']
    ns = NatsServer(tmp_path / "nats-tls", extra=tls).start()
    url = f"tls://{HOST}:{ns.port}"
    try:
        # A CA that did not sign the server's certificate: refused.
        wrong = start_server(drain_config(url, tls_ca=f"{pki}/agents-ca.pem",
                                          tls_cert=f"{pki}/agent1.pem",
                                          tls_key=f"{pki}/agent1.key"))
        st = wait_for(lambda: (s := status(wrong))["state"] == "disconnected" and s, 30,
                      "the refused server certificate")
        assert "ssl" in st["last_error"].lower() or "certificate" in st["last_error"].lower(), st
        srv = start_server(drain_config(url, tls_ca=f"{pki}/server-ca.pem",
                                        tls_cert=f"{pki}/agent1.pem",
                                        tls_key=f"{pki}/agent1.key"))
        sent = upload_many(srv, 3)
        wait_drained(srv)
        # The test's reader speaks plain NATS only: the stream's size comes
        # from the monitor port instead.
        with urllib.request.urlopen(
                f"http://{HOST}:{ns.monitor}/jsz?streams=true&accounts=true", timeout=5) as r:
            jsz = json.loads(r.read())
        assert jsz["messages"] == 3, jsz
    finally:
        ns.stop()


def test_status_page_shows_the_drain(start_server, nats):
    """/status says where uploads go next: the sink's state, its last error
    while it is down, and the lag; then connected once it caught up."""
    mport = free_port()
    cfg = drain_config(nats.url)
    cfg["server"] = {"metrics": f"127.0.0.1:{mport}"}
    srv = start_server(cfg)
    upload_many(srv, 3)
    wait_for(lambda: status(srv)["state"] == "disconnected", 30, "the drain to report NATS down")

    def drain_text():
        code, body = http_get(mport, "/status")
        assert code == 200, code
        page = body.decode()
        start = page.index('<section id="drain">')
        return page[start:page.index("</section>", start)]

    down = drain_text()
    assert '<p id="drain-state">nats: disconnected; last error: ' in down, down
    assert "connect" in down.split("last error: ")[1].split("</p>")[0], down
    assert "Committed uploads the drain's sink has not acknowledged.</td><td>3<" in down, down
    nats.start()
    wait_drained(srv)
    up = drain_text()
    assert '<p id="drain-state">nats: connected.</p>' in up, up
    assert "acknowledged.</td><td>0<" in up, up


def spool_files(srv):
    return sorted(p for p in (srv.data_dir / "spool").rglob("*") if p.is_file())


def test_body_corrupted_in_the_spool_is_not_sent_and_the_rest_drain(start_server, nats):
    """The drain keeps a spool segment open from one upload to the next and
    checks each body as it reads it: a body damaged on disk between its
    neighbours in the same segment is still caught by its CRC, never sent,
    counted failed, and the uploads around it arrive intact."""
    srv = start_server(drain_config(nats.url))  # NATS not there yet: all stay pending
    sent = upload_many(srv, 3, size=4000, prefix="crc")
    names = list(sent)
    bad = names[1]
    hits = [(p, p.read_bytes().find(sent[bad])) for p in spool_files(srv)]
    hits = [(p, off) for p, off in hits if off >= 0]
    assert len(hits) == 1, hits
    path, off = hits[0]
    with open(path, "r+b") as f:
        f.seek(off + 2000)
        byte = f.read(1)
        f.seek(off + 2000)
        f.write(bytes([byte[0] ^ 0xFF]))

    nats.start()
    st = wait_for(lambda: (s := status(srv))["lag_uploads"] == 0 and s["uploads_acked"] == 2
                  and s, 90, "the drain to catch up")
    assert st["uploads_failed"] == 1 and st["uploads_acked"] == 2, st
    in_stream = uploads_in(read_stream(nats.port, STREAM))
    got = {h["Name"]: body for h, body in in_stream.values()}
    assert got == {n: sent[n] for n in names if n != bad}, sorted(got)
    assert "fails its checksum in the spool: not sent" in srv.stderr(), srv.stderr()[-2000:]


def deleted_spool_fds(srv):
    fd_dir = f"/proc/{srv.proc.pid}/fd"
    held = []
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except FileNotFoundError:
            continue  # closed while we looked
        if "/spool/" in target and target.endswith("(deleted)"):
            held.append(target)
    return held


def test_drain_holds_no_segment_that_retention_removed(start_server, nats):
    """Retention removes drained segments; the segments the drain keeps open
    between uploads are closed once it has nothing to send, so a removed
    segment's space is not held by the drain."""
    nats.start()
    srv = start_server(dict(drain_config(nats.url),
                            store={"retain_bytes": "1M", "segment_size": "1M",
                                   "upload_buffer": "64k"}))
    sent = upload_many(srv, 16, size=256 * 1024, prefix="seg")  # about 5 segments
    wait_drained(srv)
    # Retention runs as the drain's acknowledgements let it; one more upload
    # wakes it too, should the last acknowledgement have freed nothing.
    name, body = unique_name("seg"), os.urandom(1000)
    assert upload(srv, name, body) == 201
    wait_for(lambda: len(srv.uploads()) < 17, 60, "retention to remove drained segments")
    wait_drained(srv)
    # Waiting on the drain's idle round, which closes what it kept open.
    wait_for(lambda: not deleted_spool_fds(srv), 30, "no removed segment held open")
    in_stream = uploads_in(read_stream(nats.port, STREAM))
    assert {h["Name"] for h, _ in in_stream.values()} == set(sent) | {name}
