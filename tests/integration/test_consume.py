"""beacon-consume (issue 16 item 5): the drain's stream as files, against a
real beacond with [drain] and a real nats-server (natsfix.py).

The oracle for what should be on disk is the stream itself, read through
the JetStream API and reassembled by natsfix.uploads_in (which checks every
upload's Length and CRC32): for each path, the newest upload's bytes.
Progress is waited on through files and the consumer's own exit, never with
a fixed sleep. Hostile messages (names an agent cannot send through beacond,
bad checksums) are published straight into the stream with the raw NATS
protocol, as anyone with publish rights on it could.
"""

import json
import os
import re
import signal
import subprocess
import time
import zlib
from pathlib import Path

import pytest

from helpers import BEACOND, mount_tmpfs, umount
from natsfix import NatsClient, NatsServer, read_stream, uploads_in
from test_drain import STREAM, drain_config, upload, upload_many, wait_drained, wait_for

CONSUME = os.environ.get("BEACON_CONSUME", str(Path(BEACOND).parent / "beacon-consume"))
SUBJECT = "beacon.uploads.b1.Inventories"


def consume(nats, out, *extra, timeout=120):
    """beacon-consume --once; returns (returncode, stderr text)."""
    args = [CONSUME, "--nats", nats.url, "--dir", str(out), "--ack-wait", "2", "--once",
            *extra]
    p = subprocess.run(args, capture_output=True, timeout=timeout)
    return p.returncode, p.stderr.decode(errors="replace")


def files_under(root):
    """{relative path: bytes} of every regular file below root, and the
    paths of anything else that is not a directory."""
    files, other = {}, []
    for dirpath, dirs, names in os.walk(root):
        for n in names:
            p = Path(dirpath) / n
            rel = str(p.relative_to(root))
            if p.is_symlink() or not p.is_file():
                other.append(rel)
            else:
                files[rel] = p.read_bytes()
    return files, other


def expected_files(nats):
    """What DIR should hold: per device/category/name, the bytes of the
    upload with the latest Received (the highest upload id on a tie)."""
    best = {}
    for uid, (h, body) in uploads_in(read_stream(nats.port, STREAM)).items():
        path = f"{h['Device']}/{h['Category']}/{h['Name']}"
        key = (h["Received"], uid)
        if path not in best or key > best[path][0]:
            best[path] = (key, body)
    return {p: b for p, (k, b) in best.items()}


def snapshot(root):
    """Every entry's bytes, inode and mtime: a rewrite changes the inode."""
    snap = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = Path(dirpath) / n
            st = p.lstat()
            snap[str(p.relative_to(root))] = (st.st_ino, st.st_mtime_ns, p.read_bytes())
    return snap


def js_publish(nats, headers, body=b"", subject=SUBJECT):
    """One message into the stream (HPUB), waiting for JetStream's ack."""
    c = NatsClient(nats.port)
    try:
        hdr = b"NATS/1.0\r\n" + b"".join(k.encode() + b": " + v + b"\r\n"
                                          for k, v in headers.items()) + b"\r\n"
        c.sock.sendall(f"HPUB {subject} _INBOX.test.pub {len(hdr)} {len(hdr) + len(body)}\r\n"
                       .encode() + hdr + body + b"\r\n")
        while True:
            parts = c._line().split()
            if parts and parts[0] in (b"MSG", b"HMSG"):
                ack = json.loads(c._exact(int(parts[-1])).split(b"\r\n\r\n")[-1])
                assert "error" not in ack, ack
                return ack
    finally:
        c.close()


def upload_headers(uid, device, category, name, body, received="2026-12-04T08:44:36.662Z",
                   **extra):
    h = {"Nats-Msg-Id": f"x1.{uid}".encode(), "Beacon-Id": b"x1",
         "Upload-Id": str(uid).encode(), "Device": device, "Category": category, "Name": name,
         "Received": received.encode(), "Length": str(len(body)).encode(),
         "CRC32": f"{zlib.crc32(body):08x}".encode(), "Cert-SHA256": b"00" * 32}
    h.update(extra)
    return h


@pytest.fixture
def nats(tmp_path):
    ns = NatsServer(tmp_path / "nats", max_payload=16384).start()
    yield ns
    ns.stop()


def test_uploads_land_as_identical_files_and_a_second_run_changes_nothing(
        start_server, nats, tmp_path):
    srv = start_server(drain_config(nats.url))
    big = os.urandom(100_000)  # over max_payload: chunked
    assert upload(srv, "big.bin", big) == 201
    upload_many(srv, 10, size=3000)
    wait_drained(srv)
    msgs = read_stream(nats.port, STREAM)
    assert any("Chunk" in m.headers for m in msgs), "the big upload was not chunked"
    out = tmp_path / "out"
    out.mkdir()

    rc, err = consume(nats, out)
    assert rc == 0, err
    files, other = files_under(out)
    assert other == [], other
    assert files == expected_files(nats)
    assert sum(1 for b in files.values() if b == big) == 1
    assert "11 written, 0 older skipped, 0 refused, 0 bad checksum" in err, err

    before = snapshot(out)
    rc, err = consume(nats, out)
    assert rc == 0, err
    assert snapshot(out) == before
    assert "0 written" in err, err


def test_kill9_mid_way_then_rerun_every_file_once_and_whole(start_server, nats, tmp_path):
    srv = start_server(drain_config(nats.url))
    for i in range(4):
        assert upload(srv, f"big{i}.bin", os.urandom(60_000 + i)) == 201
    upload_many(srv, 200, size=5000)
    wait_drained(srv)
    out = tmp_path / "out"
    out.mkdir()
    args = [CONSUME, "--nats", nats.url, "--dir", str(out), "--ack-wait", "2"]
    p = subprocess.Popen(args, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: len(files_under(out)[0]) >= 3, 60, "the consumer to write 3 files")
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    written_before = len(files_under(out)[0])
    assert written_before < 204, "the consumer finished before it was killed"

    rc, err = consume(nats, out)
    assert rc == 0, err
    files, other = files_under(out)
    assert other == [], other
    assert not [f for f in files if ".beacon-consume-" in f], "a temporary file was left"
    assert files == expected_files(nats)
    assert len(files) == 204
    print(f"killed after {written_before} files; the rerun: {err.splitlines()[-1]}")


def test_newer_upload_wins_whatever_the_delivery_order(nats, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    newer, older = b"newer bytes", b"older bytes, delivered last"
    # The stream exists once beacond made it; here the test makes it.
    c = NatsClient(nats.port)
    c.request(f"$JS.API.STREAM.CREATE.{STREAM}",
              {"name": STREAM, "subjects": ["beacon.uploads.>"], "storage": "file"})
    c.close()
    js_publish(nats, upload_headers(2, b"dev1", b"Inventories", b"same.ndi", newer,
                                    "2026-12-04T08:44:37.000Z"), newer)
    js_publish(nats, upload_headers(1, b"dev1", b"Inventories", b"same.ndi", older,
                                    "2026-12-04T08:44:36.999Z"), older)
    rc, err = consume(nats, out)
    assert rc == 0, err
    assert (out / "dev1/Inventories/same.ndi").read_bytes() == newer
    assert "1 written, 1 older skipped" in err, err
    assert "x1.1: skipped (acknowledged): dev1/Inventories/same.ndi: the file there is newer" in err

    # and in delivery order (older first, then newer) the newer one still wins
    js_publish(nats, upload_headers(3, b"dev1", b"Inventories", b"other.ndi", older,
                                    "2026-12-04T08:44:36.000Z"), older)
    js_publish(nats, upload_headers(4, b"dev1", b"Inventories", b"other.ndi", newer,
                                    "2026-12-04T08:44:38.000Z"), newer)
    rc, err = consume(nats, out)
    assert rc == 0, err
    assert (out / "dev1/Inventories/other.ndi").read_bytes() == newer
    assert "2 written, 0 older skipped" in err, err


HOSTILE = [
    ("dotdot-device", b"..", b"Inventories", b"x.ndi", "Device is a dot component"),
    ("dot-category", b"dev1", b".", b"x.ndi", "Category is a dot component"),
    ("dotdot-name", b"dev1", b"Inventories", b"..", "Name is a dot component"),
    # an empty header value reads as no header at all in the C client
    ("empty-device", b"", b"Inventories", b"x.ndi", "no Device, Category or Name header"),
    ("slash-name", b"dev1", b"Inventories", b"../../escape.ndi", "Name is contains '/'"),
    ("slash-device", b"/tmp", b"Inventories", b"x.ndi", "Device is contains '/'"),
    ("control-name", b"dev1", b"Inventories", b"a\x01b", "Name is contains a control byte"),
    ("nul-name", b"dev1", b"Inventories", b"a\x00b", None),
    ("temp-prefix", b"dev1", b"Inventories", b".beacon-consume-7",
     "Name is the temporary files' prefix"),
]


def test_hostile_names_are_refused_and_nothing_is_written(nats, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    c = NatsClient(nats.port)
    c.request(f"$JS.API.STREAM.CREATE.{STREAM}",
              {"name": STREAM, "subjects": ["beacon.uploads.>"], "storage": "file"})
    c.close()
    for uid, (_, dev, cat, name, _) in enumerate(HOSTILE, start=10):
        js_publish(nats, upload_headers(uid, dev, cat, name, b"payload"), b"payload")
    rc, err = consume(nats, out)
    assert rc == 0, err
    for uid, (_, _, _, _, why) in enumerate(HOSTILE, start=10):
        if why:
            line = [ln for ln in err.splitlines()
                    if ln.startswith(f"beacon-consume: x1.{uid}: ")]
            assert len(line) == 1, (uid, err)
            assert "refused (terminated)" in line[0] and why in line[0], line
    files, other = files_under(out)
    # A NUL ends the header value as the C client reads it: what is left
    # ("a") is one plain component, written inside DIR.
    assert other == [] and set(files) <= {"dev1/Inventories/a"}, (files, other, err)
    assert list(outside.iterdir()) == []


def test_a_symlink_planted_in_dir_cannot_redirect_a_write(start_server, nats, tmp_path):
    srv = start_server(drain_config(nats.url))
    out = tmp_path / "out"
    outside = tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    (outside / "target").write_bytes(b"precious")
    assert upload(srv, "probe.ndi", b"probe") == 201
    wait_drained(srv)
    device = read_stream(nats.port, STREAM)[0].headers["Device"]

    # 1: the device directory is a link to outside
    os.symlink(outside, out / device)
    assert upload(srv, "one.ndi", b"one") == 201
    wait_drained(srv)
    rc, err = consume(nats, out, "--durable", "c1")
    assert rc == 0, err
    assert (f"b1.2: refused (terminated): {device}/Inventories/one.ndi: opening the directory: "
            "Not a directory (a symbolic link or a file in the way" in err), err
    assert "0 written, 0 older skipped, 2 refused" in err, err
    assert sorted(p.name for p in outside.iterdir()) == ["target"]

    # 2: the category directory is a link
    os.unlink(out / device)
    (out / device).mkdir()
    os.symlink(outside, out / device / "Inventories")
    rc, err = consume(nats, out, "--durable", "c2")
    assert rc == 0, err
    assert "b1.2: refused (terminated)" in err and "a symbolic link or a file in the way" in err
    assert "0 written, 0 older skipped, 2 refused" in err, err
    assert sorted(p.name for p in outside.iterdir()) == ["target"]

    # 3: the file's own name is a link: replaced, never followed
    os.unlink(out / device / "Inventories")
    (out / device / "Inventories").mkdir()
    os.symlink(outside / "target", out / device / "Inventories" / "one.ndi")
    rc, err = consume(nats, out, "--durable", "c3")
    assert rc == 0, err
    assert "2 written" in err, err
    assert (outside / "target").read_bytes() == b"precious"
    f = out / device / "Inventories" / "one.ndi"
    assert not f.is_symlink() and f.read_bytes() == b"one"


def test_bad_checksum_is_refused_and_nothing_written(nats, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    c = NatsClient(nats.port)
    c.request(f"$JS.API.STREAM.CREATE.{STREAM}",
              {"name": STREAM, "subjects": ["beacon.uploads.>"], "storage": "file"})
    c.close()
    h = upload_headers(5, b"dev1", b"Inventories", b"bad.ndi", b"original")
    js_publish(nats, h, b"tampered")
    h = upload_headers(6, b"dev1", b"Inventories", b"short.ndi", b"original")
    js_publish(nats, h, b"origina")
    h = upload_headers(7, b"dev1", b"Inventories", b"when.ndi", b"original",
                       received="2026-12-04 08:44:36Z")
    js_publish(nats, h, b"original")
    rc, err = consume(nats, out)
    assert rc == 0, err
    assert ("x1.5: refused (terminated): body is 8 bytes with CRC32 "
            f"{zlib.crc32(b'tampered'):08x}, headers say 8 and {zlib.crc32(b'original'):08x}"
            in err), err
    assert "x1.6: refused (terminated): body is 7 bytes" in err, err
    assert "x1.7: refused (terminated): no valid Received header" in err, err
    assert "0 written, 0 older skipped, 1 refused, 2 bad checksum" in err, err
    assert files_under(out) == ({}, [])


def test_full_disk_naks_exits_1_and_the_next_run_writes_it(nats, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    mount_tmpfs(out, "64k")
    try:
        c = NatsClient(nats.port)
        c.request(f"$JS.API.STREAM.CREATE.{STREAM}",
                  {"name": STREAM, "subjects": ["beacon.uploads.>"], "storage": "file"})
        c.close()
        body = os.urandom(12000)  # under max_payload with its headers
        for uid in range(1, 9):  # 96 kB into 64 kB
            js_publish(nats, upload_headers(uid, b"dev1", b"Inventories", f"f{uid}".encode(),
                                            body), body)
        rc, err = consume(nats, out)
        assert rc == 1, err
        assert "failed (nak, redelivered in 1 s)" in err and "No space left on device" in err, err
        files, other = files_under(out)
        assert other == [] and all(b == body for b in files.values()), (sorted(files), other)
        assert len(files) < 8

        subprocess.run(["mount", "-o", "remount,size=1m", str(out)], check=True, timeout=30)
        rc, err = consume(nats, out)
        assert rc == 0, err
        files, other = files_under(out)
        assert other == [] and len(files) == 8 and all(b == body for b in files.values())
    finally:
        umount(out)


def test_upload_with_more_chunks_than_max_ack_pending_is_refused_not_stuck(
        start_server, nats, tmp_path):
    srv = start_server(drain_config(nats.url))
    big = os.urandom(1_200_000)  # about 84 chunks under max_payload 16384
    assert upload(srv, "huge.bin", big) == 201
    wait_drained(srv)
    out = tmp_path / "out"
    out.mkdir()
    rc, err = consume(nats, out, "--durable", "small", "--max-ack-pending", "128")
    assert rc == 0, err
    assert "refused (terminated): more chunks than --max-ack-pending allows to hold" in err, err
    assert files_under(out) == ({}, [])

    rc, err = consume(nats, out, "--durable", "roomy")
    assert rc == 0, err
    files, other = files_under(out)
    assert other == [] and list(files.values()) == [big], err


def test_meson_install_puts_the_program_and_its_man_page(tmp_path):
    build = Path(BEACOND).parent
    p = subprocess.run(["meson", "install", "-C", str(build), "--no-rebuild", "--destdir",
                        str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    prog = tmp_path / "usr/local/bin/beacon-consume"
    page = tmp_path / "usr/local/share/man/man1/beacon-consume.1"
    assert os.access(prog, os.X_OK) and page.is_file()
    usage = subprocess.run([str(prog), "--help"], capture_output=True, text=True).stdout
    text = page.read_text().replace("\\-", "-")
    options = set(re.findall(r"--[a-z-]+", usage))
    assert len(options) >= 13, usage
    assert not [o for o in options if o not in text], (options, "missing from the man page")


def test_service_waits_for_nats_then_runs_until_sigterm(start_server, tmp_path):
    ns = NatsServer(tmp_path / "nats-late")  # not started yet
    out = tmp_path / "out"
    out.mkdir()
    p = subprocess.Popen([CONSUME, "--nats", ns.url, "--dir", str(out)],
                         stderr=subprocess.PIPE)
    try:
        first = p.stderr.readline().decode()  # waits for its first try to fail
        assert first.startswith("beacon-consume: connect: "), first
        ns.start()
        srv = start_server(drain_config(ns.url))
        assert upload(srv, "late.ndi", b"late bytes") == 201
        wait_for(lambda: any(b == b"late bytes" for b in files_under(out)[0].values()), 60,
                 "the file from a consumer started before NATS")
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0
        err = p.stderr.read().decode()
        assert "1 written, 0 older skipped" in err, err
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        ns.stop()


def chunk_headers(uid, n):
    return {"Nats-Msg-Id": f"x1.{uid}.{n}".encode(), "Beacon-Id": b"x1",
            "Upload-Id": str(uid).encode(), "Chunk": str(n).encode()}


def make_stream(nats):
    c = NatsClient(nats.port)
    try:
        r = c.request(f"$JS.API.STREAM.CREATE.{STREAM}",
                      {"name": STREAM, "subjects": ["beacon.uploads.>"], "storage": "file"})
        assert "error" not in r, r
    finally:
        c.close()


def consumer_info(nats, durable):
    c = NatsClient(nats.port)
    try:
        return c.request(f"$JS.API.CONSUMER.INFO.{STREAM}.{durable}", {})
    finally:
        c.close()


def test_chunks_out_of_order_and_held_by_a_killed_consumer(nats, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    make_stream(nats)
    body = os.urandom(30000)
    parts = [body[:10000], body[10000:20000], body[20000:]]
    # upload 1: the stream holds chunk 1 before chunk 0 (a re-publish after a
    # failed one, as the drain's retry can leave it)
    for n in (1, 0, 2):
        js_publish(nats, chunk_headers(1, n), parts[n])
    js_publish(nats, upload_headers(1, b"dev1", b"Inventories", b"reordered.bin", body,
                                    Chunks=b"3"), b"")
    rc, err = consume(nats, out)
    assert rc == 0, err
    assert (out / "dev1/Inventories/reordered.bin").read_bytes() == body
    assert "x1.1.1: not yet (nak, redelivered in 1 s): a chunk before this one" in err, err

    # upload 2: a consumer takes chunks 0 and 1, holds them waiting for the
    # final message, and is killed; the final arrives; a rerun gets the
    # chunks again after the ack wait and writes the file whole.
    js_publish(nats, chunk_headers(2, 0), parts[0])
    js_publish(nats, chunk_headers(2, 1), parts[1])
    p = subprocess.Popen([CONSUME, "--nats", nats.url, "--dir", str(out)],
                         stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: consumer_info(nats, "beacon-consume")["num_ack_pending"] == 2
                 and consumer_info(nats, "beacon-consume")["num_pending"] == 0, 60,
                 "the consumer to hold both chunks")
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    js_publish(nats, chunk_headers(2, 2), parts[2])
    js_publish(nats, upload_headers(2, b"dev1", b"Inventories", b"held.bin", body,
                                    Chunks=b"3"), b"")
    rc, err = consume(nats, out)
    assert rc == 0, err
    files, other = files_under(out)
    assert other == [] and sorted(files) == ["dev1/Inventories/held.bin",
                                             "dev1/Inventories/reordered.bin"], (files, other)
    assert files["dev1/Inventories/held.bin"] == body
    assert "1 written" in err and "x1.2.2: not yet" in err, err
