"""A failing disk (README, "507/503 with Retry-After when the disk is full
or failing"): while every fdatasync of a spool segment reports EIO, an
upload gets 503 with Retry-After and is not stored, nothing acknowledged
before is harmed, and once the disk is well again uploads get 201 without a
restart. The fault comes from tests/faults/eio.c, preloaded into the real
beacond: it replaces the result of each segment fdatasync through the
store's test seam while a flag file exists.
"""

import os
from pathlib import Path

import pytest

from helpers import BEACOND, build_request, tls_connect, unique_name

EIO_FAULT = Path(os.environ.get("BEACON_FAULT_EIO",
                                BEACOND.parent / "tests" / "faults" / "beacon-fault-eio.so"))
UP = "/ManageSoftRL/Inventories/"


@pytest.fixture
def failing_disk(start_server, tmp_path, monkeypatch):
    if not EIO_FAULT.exists():
        pytest.skip(f"{EIO_FAULT} not built (sanitizer builds do not build the fault library)")
    flag = tmp_path / "disk-is-failing"
    srv = start_server(start=False)
    with monkeypatch.context() as m:
        m.setenv("LD_PRELOAD", str(EIO_FAULT))
        m.setenv("BEACON_FAULT_EIO_FLAG", str(flag))
        srv.start()
    return srv, flag


def put(srv, name, body):
    with tls_connect(srv) as c:
        c.send(build_request("PUT", UP + name, body=body))
        return c.read_response(timeout=30)


def test_io_error_is_503_and_recovers(failing_disk):
    srv, flag = failing_disk
    before = unique_name("before-eio")
    assert put(srv, before, b"safe\n").status == 201

    flag.touch()
    for size in (100, 300 * 1024):  # a packed record and a streamed one
        name = unique_name("during-eio")
        resp = put(srv, name, os.urandom(size))
        assert resp.status == 503, resp
        assert resp.header("retry-after"), resp
        assert b"I/O error" in resp.body or b"i/o error" in resp.body.lower(), resp
        assert name not in {r["name"] for r in srv.uploads()}, f"{name} stored despite its 503"

    flag.unlink()
    after = unique_name("after-eio")
    data = os.urandom(200 * 1024)
    assert put(srv, after, data).status == 201
    assert srv.upload_bytes(srv.find_upload(after)["id"]) == data
    assert srv.upload_bytes(srv.find_upload(before)["id"]) == b"safe\n"
    srv.assert_alive()
