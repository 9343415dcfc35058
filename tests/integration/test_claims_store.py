"""README's store claims, against the real beacond:

- "507/503 with Retry-After when the disk is full", for an upload that
  asked for 100-continue. README used to say that the 100 Continue waits for
  the store too; it does not (the store learns that the disk is full only
  when it writes), and README now says so: the client gets 100 Continue,
  sends its body, and gets 507 with Retry-After; nothing is stored.

Needs root for the small tmpfs (as test_disk_full.py); skipped otherwise.
"""

import os

import pytest

from helpers import ConnectionClosed, build_request, mount_tmpfs, tls_connect, umount, unique_name

TMPFS_SIZE = "8m"




@pytest.fixture
def full_disk_server(start_server):
    # One worker: each worker preallocates its own spool segment in 1 MiB
    # steps and the kernel spreads connections over the workers by a hash
    # of the client's port (SO_REUSEPORT). With two, three 507s in a row
    # can all come from the worker that is full while the other still has
    # room in its preallocation for the next upload, which then gets 201.
    # With one, a 507 means no room for that body anywhere in the store.
    srv = start_server({"server": {"workers": "1"}}, start=False)
    mount_tmpfs(srv.data_dir, TMPFS_SIZE)
    try:
        srv.start()
        yield srv
    finally:
        try:
            srv.stop()
        finally:
            umount(srv.data_dir)


def put(srv, data):
    with tls_connect(srv) as conn:
        req = build_request("PUT", f"/ManageSoftRL/Inventories/{unique_name('fill')}", (), data)
        try:
            conn.send(req)
        except OSError:
            pass
        return conn.read_response(30.0)


def fill(srv):
    """Uploads 256 KiB bodies until the store (one worker: see
    full_disk_server) answers 507 three times in a row; returns the last
    answer."""
    streak, resp = 0, None
    for _ in range(200):
        resp = put(srv, os.urandom(256 * 1024))
        assert resp.status in (201, 507), resp
        streak = streak + 1 if resp.status == 507 else 0
        if streak == 3:
            return resp
    raise AssertionError("an 8 MiB tmpfs never filled up")


@pytest.mark.parametrize("size", [300 * 1024, 1024 * 1024])
def test_expect_continue_on_full_store_gets_507(full_disk_server, size):
    srv = full_disk_server
    fill(srv)
    st = os.statvfs(srv.data_dir)
    assert st.f_bavail * st.f_frsize < size, "the tmpfs has room for the body after fill()"
    before = len(srv.uploads())
    with tls_connect(srv) as conn:
        conn.send(build_request("PUT", f"/ManageSoftRL/Inventories/{unique_name('expect')}",
                                [f"Content-Length: {size}", "Expect: 100-continue"], b""))
        try:
            first = conn.read_head(15.0)
            assert first.status == 100, first
            conn.send(os.urandom(size))
            resp = conn.read_response(30.0)
        except (ConnectionClosed, TimeoutError) as e:
            raise AssertionError(f"no answer to an upload on a full store: {e!r}\n"
                                 f"{srv.stderr()[-3000:]}") from None
        assert resp.status == 507, resp
        assert resp.header("retry-after"), resp
    assert len(srv.uploads()) == before
