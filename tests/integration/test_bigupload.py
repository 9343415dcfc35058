"""A big upload's body goes to disk while it still arrives (early writeback),
not all at once in the commit's fdatasync, and is stored byte for byte.

Observed with FIEMAP (filefrag -v) on the spool segment: beacond
preallocates it, so its blocks are "unwritten" until the kernel has written
data into them; written pages of a range whose writeback has not run keep
the flag. The kernel's own flusher writes dirty pages back only after
vm.dirty_expire_centisecs (30 s by default), so a written extent well
before that, with the upload still open, is beacond's doing."""

import os
import re
import shutil
import time

import pytest

from helpers import build_request, tls_connect, unique_name

BODY = 4 * 1024 * 1024
FIRST = 2 * 1024 * 1024  # sent before looking: four early-writeback steps
EXTENT = re.compile(r"^\s*\d+:\s+(\d+)\.\.\s*(\d+):\s+\d+\.\.\s*\d+:\s+\d+:\s*(.*)$")


def written_blocks(path):
    """Blocks of `path` that FIEMAP reports written (not unwritten, not
    delayed allocation), from filefrag -v."""
    out = os.popen(f"filefrag -v '{path}' 2>/dev/null").read()
    total = 0
    for line in out.splitlines():
        m = EXTENT.match(line)
        if m and "unwritten" not in m.group(3) and "delalloc" not in m.group(3):
            total += int(m.group(2)) - int(m.group(1)) + 1
    return total


def segments(server):
    spool = server.data_dir / "spool"
    return sorted(spool.glob("w*/*.seg")) if spool.exists() else []


def dirty_expire_s():
    with open("/proc/sys/vm/dirty_expire_centisecs") as f:
        return int(f.read()) / 100


def test_big_upload_written_back_while_it_arrives(server):
    if shutil.which("filefrag") is None:
        pytest.skip("filefrag (e2fsprogs) is not installed")
    expire = dirty_expire_s()
    if expire < 20:
        pytest.skip(f"vm.dirty_expire_centisecs is {expire:.0f} s: the kernel's flusher "
                    "could write the body back by itself")
    name = unique_name("big")
    data = os.urandom(BODY)
    with tls_connect(server, timeout=60) as c:
        sent_at = time.monotonic()
        c.send(build_request("PUT", f"/ManageSoftRL/Inventories/{name}",
                             [f"Content-Length: {BODY}"], b"", content_length=False))
        c.send(data[:FIRST])
        # Waits for the written blocks, well before the kernel's flusher
        # would write the pages back on its own (half its expiry).
        written = 0
        while time.monotonic() - sent_at < expire / 2:
            written = sum(written_blocks(p) for p in segments(server))
            if written:
                break
            time.sleep(0.05)
        segs = segments(server)
        assert segs, "beacond made no spool segment for a 2 MiB body"
        assert written > 0, (
            f"none of the first {FIRST} bytes of an open upload reached the disk within "
            f"{expire / 2:.0f} s: {os.popen(f'filefrag -v {segs[0]}').read()}")
        c.send(data[FIRST:])
        resp = c.read_response(timeout=60)
    assert resp.status == 201, resp
    row = server.find_upload(name)
    assert int(row["length"]) == BODY
    assert server.upload_bytes(row["id"]) == data, "stored bytes differ from the uploaded bytes"
