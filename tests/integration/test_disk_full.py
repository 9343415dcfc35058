"""Full disk (issue 3): the data directory is a small tmpfs.

Uploads go in until the file system is full. An upload that does not fit
gets 507 (or 503) with Retry-After and none of it becomes visible; every
upload that got 201 stays readable byte for byte; the server keeps serving
(downloads, reads of the store) and, once space is freed (a filler file made
beforehand is deleted), takes uploads again by itself: no restart.

Needs root (mount); skipped otherwise.
"""

import hashlib
import os
import random
import ssl

import pytest

from helpers import (DOWNLOAD_FILES, ConnectionClosed, build_request, mount_tmpfs, request,
                     tls_connect, umount)

TMPFS_SIZE = "16m"
FILLER_BYTES = 5 * 1024 * 1024
UPLOAD_BYTES = 1024 * 1024




@pytest.fixture
def small_disk_server(start_server):
    """A beacond whose data_dir is a 16 MiB tmpfs holding a 5 MiB filler
    file (data_dir/filler.bin) that a test may delete to free space."""
    srv = start_server(start=False)
    mount_tmpfs(srv.data_dir, TMPFS_SIZE)
    try:
        (srv.data_dir / "filler.bin").write_bytes(os.urandom(FILLER_BYTES))
        srv.start()
        yield srv
    finally:
        try:
            srv.stop()  # before the umount: beacond holds files open there
        finally:
            umount(srv.data_dir)


def upload(srv, name, data, is_chunked=False, timeout=30.0):
    """One upload on a fresh connection; returns the Response, or raises.
    The body goes out whole before the answer is read (one SSL object must
    not be read and written from two threads at once): a server that
    refuses mid-body keeps reading and dropping until the client is done."""
    target = f"/ManageSoftRL/Inventories/{name}"
    if is_chunked:
        pieces, i = [], 0
        while i < len(data):
            piece = data[i:i + 65536]
            pieces += (b"%x\r\n" % len(piece), piece, b"\r\n")
            i += len(piece)
        pieces.append(b"0\r\n\r\n")
        req = build_request("PUT", target, ["Transfer-Encoding: chunked"], b"".join(pieces))
    else:
        req = build_request("PUT", target, (), data)
    with tls_connect(srv) as conn:
        try:
            conn.send(req)
        except (OSError, ssl.SSLError):
            pass  # refused and closed early: the answer may still be there
        return conn.read_response(timeout)


def test_disk_full_507_and_recovery(small_disk_server):
    srv = small_disk_server
    rng = random.Random()
    acked = {}    # name -> (id, data)
    refused = {}  # name -> Response
    log = []

    def attempt(name, data, is_chunked=False):
        try:
            resp = upload(srv, name, data, is_chunked)
        except (OSError, ssl.SSLError, ConnectionClosed, TimeoutError) as e:
            raise AssertionError(f"{name} ({len(data)} bytes): no answer: {e!r}\n"
                                 f"log: {log}\nstderr:\n{srv.stderr()[-4000:]}") from None
        log.append((name, len(data), resp.status))
        if resp.status == 201:
            uid = (resp.header("location") or "").rsplit("/", 1)[-1]
            assert uid.isdigit(), f"{name}: 201 without a Location id: {resp}"
            acked[name] = (uid, data)
        else:
            assert resp.status in (507, 503), (
                f"{name} ({len(data)} bytes) on a full disk: {resp}\nlog: {log}\n"
                f"stderr:\n{srv.stderr()[-4000:]}")
            assert resp.header("retry-after"), f"{name}: {resp.status} without Retry-After: {resp}"
            refused[name] = resp
        return resp

    # Fill: 1 MiB uploads until three in a row are refused (16 MiB minus the
    # 5 MiB filler: fewer than 11 fit), then the same with 64 KiB and 4 KiB
    # uploads and empty ones, down to the last free pages: both the spool
    # preallocation and the LMDB commit run out of space on the way. A
    # refused upload's preallocated spool space is given back when its
    # segment closes, in the background, and LMDB reuses its freed pages
    # once no reader holds them: a disk that refused three in a row may
    # take more a moment later (a loaded CI run took 4 MiB after such a
    # pass). So passes repeat until one takes nothing.
    k = 0
    for fill_pass in range(10):
        taken = 0
        for size, most in ((UPLOAD_BYTES, 40), (64 * 1024, 200), (4096, 1000), (0, 2000)):
            streak = tries = 0
            while streak < 3:
                assert tries < most, f"the disk never filled up: {log}"
                resp = attempt(f"fill-{k}.ndi", os.urandom(size), is_chunked=(k % 3 == 2))
                streak = streak + 1 if resp.status != 201 else 0
                taken += resp.status == 201
                k += 1
                tries += 1
            if size == UPLOAD_BYTES and fill_pass == 0:
                assert 3 <= len(acked) <= 11, f"{len(acked)} MiB accepted on a 16 MiB tmpfs: {log}"
        if fill_pass > 0 and taken == 0:
            break
    else:
        raise AssertionError(f"the disk still took uploads after 10 passes: {log}")

    # Full: a larger upload is refused too; the server still serves.
    attempt("big-on-full.ndi", os.urandom(4 * UPLOAD_BYTES))
    assert "big-on-full.ndi" in refused, f"4 MiB accepted on a full disk: {log}"
    srv.assert_alive()
    resp = request(srv, "GET", "/ManageSoftDL/policy.xml")
    assert resp.status == 200 and resp.body == DOWNLOAD_FILES["policy.xml"], resp

    def check_store():
        rows = srv.uploads()
        names = {r["name"]: r for r in rows}
        visible_refused = sorted(set(names) & set(refused))
        assert not visible_refused, f"refused uploads are visible: {visible_refused}"
        unknown = sorted(set(names) - set(acked))
        assert not unknown, f"uploads nobody got a 201 for: {unknown}"
        for name, (uid, data) in acked.items():
            assert name in names, f"{name} got 201 (id {uid}) but is not indexed\n{log}"
            assert str(names[name]["id"]) == uid
            got = srv.upload_bytes(uid)
            assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest(), (
                f"{name} (id {uid}): {len(got)} bytes stored, not the {len(data)} sent")

    check_store()

    # Space comes back: the server takes uploads again by itself.
    (srv.data_dir / "filler.bin").unlink()
    small = rng.randbytes(1000)
    resp = attempt("after-free-small.ndi", small)
    assert resp.status == 201, f"a small upload after space was freed: {resp}\n{log}"
    resp = attempt("after-free-1mib.ndi", os.urandom(UPLOAD_BYTES), is_chunked=True)
    assert resp.status == 201, f"a 1 MiB upload after space was freed: {resp}\n{log}"
    resp = request(srv, "GET", "/ManageSoftDL/policy.xml")
    assert resp.status == 200, resp
    check_store()
    srv.assert_alive()

    # And all of it survives a restart (recovery on the same tmpfs).
    srv.stop()
    full_stderr = srv.stderr()
    srv.start()
    check_store()
    resp = attempt("after-restart.ndi", rng.randbytes(5000))
    assert resp.status == 201, f"upload after restart: {resp}\n{log}"
    check_store()
    print(f"{len(acked)} uploads accepted, {len(refused)} refused: {log}")
    print(f"beacond's stderr before the restart:\n{full_stderr}")
