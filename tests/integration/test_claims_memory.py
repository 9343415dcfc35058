"""README, "Memory bounds": "Per upload: upload_buffer (default 256 KiB)
whatever the upload's size, so a 1 GiB upload uses 256 KiB."

A 1 GiB upload is streamed (made on the fly, never held by the test) to a
beacond with one worker, max_open_uploads = 4 and upload_buffer = 256k.
README's bounds for that worker: 4 x 256 KiB of upload buffers, 4 MiB of
receive buffers, at most 64 spare plaintext (17 KiB) and 64 spare send
(48 KiB) buffers, about 9.2 MiB in all, plus one connection's wolfSSL state.
beacond's peak RSS (VmHWM, reset through /proc/PID/clear_refs after a
warm-up upload) may grow by at most 32 MiB over the upload: three times
those bounds, and 1/32 of the upload.
"""

import os
import re
from pathlib import Path

import pytest

from helpers import BEACOND, build_request, tls_connect, unique_name

GIB = 1 << 30
CHUNK = 1 << 20
BOUND_KIB = 32 * 1024


def proc_kib(pid, field):
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1))


def asan_build():
    with open(BEACOND, "rb") as f:
        return b"__asan_init" in f.read()


def put_streamed(srv, size, name):
    block = bytearray(os.urandom(CHUNK))
    with tls_connect(srv, timeout=120) as c:
        c.send(build_request("PUT", f"/ManageSoftRL/Inventories/{name}",
                             [f"Content-Length: {size}"], None, content_length=False))
        sent = 0
        while sent < size:
            block[:8] = sent.to_bytes(8, "little")  # every MiB differs
            n = min(CHUNK, size - sent)
            c.send(bytes(block[:n]))
            sent += n
        return c.read_response(timeout=300)


def test_1gib_upload_memory(start_server):
    if asan_build():
        pytest.skip("AddressSanitizer's quarantine and shadow memory inflate RSS")
    srv = start_server({"server": {"workers": "1"},
                        "limits": {"max_body": "2G", "body_timeout": "120s"},
                        "store": {"max_open_uploads": "4", "upload_buffer": "256k"}})
    pid = srv.proc.pid
    # warm-up: the worker's pools, wolfSSL's and the store's first allocations
    r = put_streamed(srv, 8 * CHUNK, unique_name("warm"))
    assert r.status == 201, r
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    base = proc_kib(pid, "VmRSS")
    assert proc_kib(pid, "VmHWM") <= base + 1024
    name = unique_name("gib")
    r = put_streamed(srv, GIB, name)
    assert r.status == 201, r
    assert f"{GIB} bytes" in r.body.decode(), r
    peak = proc_kib(pid, "VmHWM")
    row = srv.find_upload(name)
    assert int(row.get("length", row.get("size", -1))) == GIB, row
    growth = peak - base
    print(f"beacond RSS {base} KiB before, peak {peak} KiB during a 1 GiB upload "
          f"(+{growth} KiB)")
    assert growth < BOUND_KIB, (
        f"beacond's RSS grew by {growth} KiB during a 1 GiB upload (bound {BOUND_KIB} KiB)")
