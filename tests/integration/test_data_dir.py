"""One owner per data directory (issue 12, item 7).

- `beacond -t -c CONF` on a running server's configuration checks the store
  read-only: an upload in flight at that moment still gets its 201 and reads
  back byte-identical, and no file of the data directory changes.
- A second beacond on the same data directory (its own port and control
  socket) refuses to start, names the PID of the first one, and the first
  keeps serving.
"""

import hashlib
import os
import re
import subprocess
import time

from helpers import BEACOND, build_request, client_context, curl_upload, tls_connect, unique_name

UPLOAD_BUFFER = 256 * 1024
HALF = UPLOAD_BUFFER // 2
RECORD_HEADER = 48
ID_RE = re.compile(rb"upload (\d+), (\d+) bytes")


def data_dir_state(data_dir):
    """{relative path: (size, sha256)} of every file under data_dir, but
    index/lock.mdb: LMDB's shared-memory reader table, which every reader
    (beaconctl too) writes by design; and the status page's history, which
    the running beacond rewrites every 10 s."""
    state = {}
    for root, dirs, files in os.walk(data_dir):
        for d in dirs:
            state[os.path.relpath(os.path.join(root, d), data_dir) + "/"] = None
        for f in files:
            path = os.path.join(root, f)
            rel = os.path.relpath(path, data_dir)
            if rel in (os.path.join("index", "lock.mdb"), "status-history",
                       "status-history.tmp"):
                continue
            with open(path, "rb") as fh:
                data = fh.read()
            state[rel] = (len(data), hashlib.sha256(data).hexdigest())
    return state


def spool_holds(data_dir, prefix):
    """True once some spool segment holds `prefix` (the body bytes that the
    server has written so far)."""
    spool = data_dir / "spool"
    for root, _, files in os.walk(spool):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                if prefix in fh.read():
                    return True
    return False


def wait_for(what, cond, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def state_diff(before, after):
    lines = []
    for k in sorted(set(before) | set(after)):
        if before.get(k, "absent") != after.get(k, "absent"):
            lines.append(f"  {k}: {before.get(k, 'absent')} -> {after.get(k, 'absent')}")
    return "\n".join(lines)


def test_check_while_upload_in_flight(start_server):
    srv = start_server({"server": {"workers": "1"},
                        "store": {"upload_buffer": str(UPLOAD_BUFFER)}})
    ctx = client_context(srv.pki, "agent1")
    body = os.urandom(600 * 1000)
    sent = 400 * 1000
    with tls_connect(srv, ctx=ctx) as conn:
        # A first upload on this connection: its 201 means the handshake's
        # device record is committed too, so nothing else is pending.
        conn.send(build_request("PUT", f"/ManageSoftRL/Inventories/{unique_name('first')}",
                                (), b"first upload"))
        first = conn.read_response(20.0)
        assert first.status == 201, first

        name = unique_name("inflight")
        req = build_request("PUT", f"/ManageSoftRL/Inventories/{name}", (), body)
        head_len = len(req) - len(body)
        conn.send(req[:head_len + sent])
        # The server writes whole buffer halves: wait until every half the
        # sent bytes filled is in a segment (the record starts with its
        # 48-byte header).
        on_disk = (RECORD_HEADER + sent) // HALF * HALF - RECORD_HEADER
        wait_for(f"{on_disk} body bytes in the spool",
                 lambda: spool_holds(srv.data_dir, body[:on_disk]))
        before = data_dir_state(srv.data_dir)

        check = subprocess.run([str(BEACOND), "-t", "-c", str(srv.conf)],
                               capture_output=True, timeout=60)
        after = data_dir_state(srv.data_dir)
        check_err = check.stderr.decode(errors="replace")

        conn.send(req[head_len + sent:])
        resp = conn.read_response(30.0)
    assert check.returncode == 0, check_err
    assert resp.status == 201, f"{resp}\n-t said:\n{check_err}\nserver:\n{srv.stderr()}"
    m = ID_RE.search(resp.body)
    assert m and int(m.group(2)) == len(body), resp
    got = srv.beaconctl("uploads", "get", m.group(1).decode(), check=False)
    assert got.returncode == 0 and got.stdout == body, (
        f"upload {m.group(1).decode()} acknowledged, then `uploads get` exited "
        f"{got.returncode} with {len(got.stdout)} bytes: "
        f"{got.stderr.decode(errors='replace')}\n-t said:\n{check_err}")
    assert before == after, f"beacond -t changed the data directory:\n{state_diff(before, after)}"
    assert f"in use by pid {srv.proc.pid}" in check_err, check_err


def test_second_instance_refused(start_server):
    first = start_server({"server": {"workers": "1"}})
    second = start_server({"server": {"workers": "1", "data_dir": str(first.data_dir)}},
                          start=False)
    assert second.port != first.port and second.control_socket != first.control_socket
    before = data_dir_state(first.data_dir)
    p = subprocess.run(second.command(), capture_output=True, timeout=30)
    err = p.stderr.decode(errors="replace")
    assert p.returncode != 0, f"a second beacond on {first.data_dir} exited 0:\n{err}"
    assert f"in use by pid {first.proc.pid}" in err, err
    assert data_dir_state(first.data_dir) == before

    # The first one keeps serving, and its store is whole.
    first.assert_alive()
    data = os.urandom(300_000)
    name = unique_name("after-second")
    code, proc = curl_upload(first, first.pki / "agent1.pem", first.pki / "agent1.key",
                             f"/ManageSoftRL/Inventories/{name}", data)
    assert code == 201, proc.stderr.decode(errors="replace")
    row = first.find_upload(name)
    assert first.upload_bytes(row["id"]) == data
