"""beaconctl for a store of a million uploads, against the real beacond and
the real beaconctl:

- global options anywhere on the line, --version, --help;
- uploads list: pages (--limit, default 100) that continue with --after
  without overlap or gap, --since/--until (Unix seconds and dates, both
  bounds included), --category, --device, and a page that costs the same
  index reads near the end of the store as near its start (--debug counts
  them): a range scan from the cursor, never a walk of the store;
- uploads get -o FILE (byte-identical, written atomically) and its refusal
  to write binary to a terminal (a pty);
- uploads follow, printing an upload stored while it runs;
- devices list --state, devices block of a name never seen (warns),
  repeated block/unblock (changes nothing, says so);
- status: the uploads since start beside the store's totals.
"""

import array
import datetime
import fcntl
import json
import os
import pty
import re
import select
import signal
import ssl
import subprocess
import termios
import threading
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certkit import NOW, Cert, cn, make_cert
from helpers import BEACONCTL, REPO, build_request, client_context, tls_connect, unique_name
from trustkit import ctl, make_crl, upload, wait_until

F_GETPIPE_SZ = 1032  # fcntl.F_GETPIPE_SZ from Python 3.10 on

# Wide enough for a sanitizer build on a busy machine: an upper bound only.
WAIT = 60


def run(srv, *args, stdout=subprocess.PIPE):
    """beaconctl with this server's data directory and socket, given after
    the command (global options go anywhere)."""
    cmd = [str(BEACONCTL), *map(str, args), "--data-dir", str(srv.data_dir),
           "--socket", str(srv.control_socket)]
    return subprocess.run(cmd, stdout=stdout, stderr=subprocess.PIPE, timeout=WAIT)


def ok(srv, *args):
    p = run(srv, *args)
    assert p.returncode == 0, f"beaconctl {args}: exit {p.returncode}\n{p.stderr.decode()}"
    return p


def rows(srv, *args):
    """--json rows of `uploads list ARGS` and its stderr."""
    p = ok(srv, "uploads", "list", "--json", *args)
    return [json.loads(line) for line in p.stdout.decode().splitlines()], p.stderr.decode()


def put(srv, name="agent1", category="Inventories", body=None):
    """One upload on a fresh connection; returns its body."""
    body = body if body is not None else os.urandom(64) + unique_name().encode()
    with tls_connect(srv, name) as c:
        c.send(build_request("PUT", f"/ManageSoftRL/{category}/{unique_name()}", body=body))
        resp = c.read_response(WAIT)
    assert resp.status == 201, resp
    return body


def put_many(srv, n, name="agent1", conns=4):
    """n uploads over `conns` keep-alive connections."""
    errors = []

    def worker(count):
        try:
            with tls_connect(srv, name) as c:
                for _ in range(count):
                    c.send(build_request("PUT", f"/ManageSoftRL/Bulk/{unique_name()}",
                                         body=b"x" * 32))
                    resp = c.read_response(WAIT)
                    if resp.status != 201:
                        errors.append(resp)
                        return
        except (OSError, ssl.SSLError) as e:
            errors.append(e)

    per = [n // conns + (1 if i < n % conns else 0) for i in range(conns)]
    threads = [threading.Thread(target=worker, args=(k,)) for k in per]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]


def stored_order(all_rows):
    """The order uploads list promises without --device: received, then id."""
    return sorted(all_rows, key=lambda r: (r["received_unix_ms"], r["id"]))


def next_second():
    """Waits for the wall clock to enter a new second (time passing, not a
    stand-in for an event)."""
    start = int(time.time())
    assert wait_until(lambda: int(time.time()) > start, 5)


def project_version():
    m = re.search(r"version\s*:\s*'([^']+)'", (REPO / "meson.build").read_text())
    assert m, "no version in meson.build"
    return m.group(1)


# --------------------------------------------------------------------------
# Global options, --version, --help


def test_global_options_anywhere_and_version(start_server):
    srv = start_server()
    put(srv)
    before = subprocess.run([str(BEACONCTL), "--json", "--data-dir", str(srv.data_dir),
                             "uploads", "list"], stdout=subprocess.PIPE, timeout=WAIT)
    after = subprocess.run([str(BEACONCTL), "uploads", "list", "--json", "--data-dir",
                            str(srv.data_dir)], stdout=subprocess.PIPE, timeout=WAIT)
    assert before.returncode == 0 and after.returncode == 0
    assert after.stdout == before.stdout
    assert json.loads(after.stdout.decode().splitlines()[0])["device"] == "agent1.example"
    # --name=VALUE works too, and between the noun and the verb.
    p = subprocess.run([str(BEACONCTL), "uploads", f"--data-dir={srv.data_dir}", "list",
                        "--json"], stdout=subprocess.PIPE, timeout=WAIT)
    assert p.returncode == 0 and p.stdout == before.stdout
    st = ok(srv, "status", "--json")
    assert json.loads(st.stdout)["ok"] is True

    v = subprocess.run([str(BEACONCTL), "--version"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=WAIT)
    assert v.returncode == 0 and v.stderr == b""
    assert v.stdout.decode() == f"beaconctl {project_version()}\n"
    h = subprocess.run([str(BEACONCTL), "uploads", "list", "--help"], stdout=subprocess.PIPE,
                       timeout=WAIT)
    assert h.returncode == 0
    for section in ("NAME\n", "SYNOPSIS\n", "EXIT STATUS\n", "uploads follow",
                    "--state unapproved|approved|blocked|refused", "-o FILE"):
        assert section in h.stdout.decode(), section


# --------------------------------------------------------------------------
# Pages


def test_pages_continue_without_overlap_or_gap(start_server):
    srv = start_server()
    for _ in range(8):
        put(srv)
    everything, err = rows(srv, "--limit", "0")
    assert len(everything) == 8 and err == ""
    assert everything == stored_order(everything)

    pages, after, hints = [], None, []
    while True:
        args = ["--limit", "3"] + (["--after", after] if after is not None else [])
        page, err = rows(srv, *args)
        pages.append(page)
        hints.append(err)
        if not err:
            break
        after = page[-1]["id"]
        assert err == ("beaconctl: more uploads follow; next page: beaconctl uploads list "
                       f"--after {after} --limit 3\n")
    assert [len(p) for p in pages] == [3, 3, 2]
    assert [r["id"] for p in pages for r in p] == [r["id"] for r in everything]

    # Text output: a header and one line per upload, the same hint.
    p = ok(srv, "uploads", "list", "--limit", "3")
    lines = p.stdout.decode().splitlines()
    assert lines[0].split() == ["ID", "RECEIVED", "BYTES", "DEVICE", "CATEGORY", "NAME"]
    assert [int(line.split()[0]) for line in lines[1:]] == [r["id"] for r in everything[:3]]
    assert p.stderr.decode() == hints[0]

    # A cursor beyond the store is an error, not an empty page.
    p = run(srv, "uploads", "list", "--after", everything[-1]["id"] + 1000)
    assert p.returncode == 1
    assert p.stderr.decode() == (f"beaconctl: --after {everything[-1]['id'] + 1000}: no such "
                                 "upload in the store yet (--after takes the id of the last "
                                 "upload of a page)\n")


def test_since_until_category_device(start_server):
    srv = start_server()
    put(srv, category="Inventories")
    next_second()
    put(srv, category="Logs")
    put(srv, name="agent2", category="Inventories")
    next_second()
    put(srv, name="agent2", category="Logs")
    everything, _ = rows(srv, "--limit", "0")
    assert len(everything) == 4
    seconds = sorted({r["received_unix_ms"] // 1000 for r in everything})
    assert len(seconds) == 3, everything

    def ids(pred):
        return [r["id"] for r in everything if pred(r)]

    for s in seconds:
        iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(s))
        since = ids(lambda r: r["received_unix_ms"] >= s * 1000)
        until = ids(lambda r: r["received_unix_ms"] < (s + 1) * 1000)
        for form in (str(s), iso, iso[:-1]):
            assert [r["id"] for r in rows(srv, "--since", form)[0]] == since, form
            assert [r["id"] for r in rows(srv, "--until", form)[0]] == until, form
        both = ids(lambda r: r["received_unix_ms"] // 1000 == s)
        assert [r["id"] for r in rows(srv, "--since", s, "--until", s)[0]] == both
    # A date alone is its whole day.
    day = time.strftime("%Y-%m-%d", time.gmtime(seconds[0]))
    prev = time.strftime("%Y-%m-%d", time.gmtime(seconds[0] - 86400))
    nxt = time.strftime("%Y-%m-%d", time.gmtime(seconds[-1] + 86400))
    if time.strftime("%Y-%m-%d", time.gmtime(seconds[-1])) == day:
        assert [r["id"] for r in rows(srv, "--since", day, "--until", day)[0]] == ids(
            lambda r: True)
    assert rows(srv, "--until", prev)[0] == []
    assert rows(srv, "--since", nxt)[0] == []

    assert [r["id"] for r in rows(srv, "--category", "Logs")[0]] == ids(
        lambda r: r["category"] == "Logs")
    dev2 = ids(lambda r: r["device"] == "agent2.example")
    assert [r["id"] for r in rows(srv, "--device", "agent2.example")[0]] == sorted(dev2)
    page, err = rows(srv, "--device", "agent2.example", "--limit", "1")
    assert [r["id"] for r in page] == sorted(dev2)[:1]
    assert err == ("beaconctl: more uploads follow; next page: beaconctl uploads list --after "
                   f"{sorted(dev2)[0]} --limit 1 --device 'agent2.example'\n")
    page, err = rows(srv, "--device", "agent2.example", "--after", sorted(dev2)[0])
    assert [r["id"] for r in page] == sorted(dev2)[1:] and err == ""
    assert [r["id"] for r in rows(srv, "--device", "agent2.example", "--category",
                                  "Logs")[0]] == ids(
        lambda r: r["device"] == "agent2.example" and r["category"] == "Logs")

    for bad in ("2026-02-30", "2026-1-01", "yesterday", "1700000000.5", "2026-01-01T25:00:00"):
        p = run(srv, "uploads", "list", "--since", bad)
        assert p.returncode == 2, bad
        assert p.stderr.decode().startswith(
            f"beaconctl: --since '{bad}': expected Unix seconds or YYYY-MM-DD[THH:MM:SS[Z]] "
            "(UTC)\n"), p.stderr
    p = run(srv, "uploads", "list", "--since", seconds[-1], "--until", seconds[0] - 1)
    assert p.returncode == 2 and b"--until" in p.stderr and b"is before --since" in p.stderr


def test_a_page_is_a_range_scan_not_a_walk(start_server):
    """1,500 uploads: a page of 5 reads the same 14 index entries (the
    cursor's lookup, a seek, 6 steps and 6 lookups: one row past the page
    says whether there is a next one) near the end as near the start; the
    whole listing reads more than the store holds. A full scan per page
    would read in proportion to the uploads before the cursor."""
    srv = start_server()
    n = 1500
    put_many(srv, n)
    everything, _ = rows(srv, "--limit", "0")
    assert len(everything) == n

    def entries(*args):
        p = ok(srv, "uploads", "list", "--json", "--debug", *args)
        m = re.search(r"^beaconctl: debug: (\d+) index entries read$", p.stderr.decode(), re.M)
        assert m, p.stderr
        return int(m.group(1)), [json.loads(line)["id"] for line in p.stdout.decode().splitlines()]

    near_start, near_end = everything[10]["id"], everything[n - 20]["id"]
    cost_start, got = entries("--after", near_start, "--limit", "5")
    assert got == [r["id"] for r in everything[11:16]]
    cost_end, got = entries("--after", near_end, "--limit", "5")
    assert got == [r["id"] for r in everything[n - 19:n - 14]]
    assert cost_start == cost_end == 14
    # By device: a seek into device_uploads, no cursor lookup.
    cost_dev, got = entries("--device", "agent1.example", "--after", near_end, "--limit", "5")
    assert cost_dev == 12 and got == sorted(r["id"] for r in everything if r["id"] > near_end)[:5]
    cost_all, listed = entries("--limit", "0")
    assert cost_all > n
    assert listed == [r["id"] for r in everything]  # across read batches: no overlap, no gap

    # The default page is 100 rows and says how to go on.
    page, err = rows(srv)
    assert [r["id"] for r in page] == [r["id"] for r in everything[:100]]
    assert err == ("beaconctl: more uploads follow; next page: beaconctl uploads list --after "
                   f"{everything[99]['id']}\n")


def lmdb_readers(index_dir):
    """pid -> txnid of the index's reader slots in use (mdb_stat -r)."""
    # mdb_stat 0.9.24 exits 1 after printing the table: judge by its output.
    out = subprocess.run(["mdb_stat", "-r", str(index_dir)], stdout=subprocess.PIPE,
                         timeout=WAIT).stdout.decode()
    assert out.startswith("Reader Table Status\n"), out
    readers = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].isdigit():
            readers[int(parts[0])] = parts[2]
    return readers


def test_a_stalled_reader_holds_no_transaction(start_server):
    """A listing whose output nobody reads (a pager left open) must not
    keep an LMDB read transaction: beacond's writer could not reuse the
    pages it pins and the index would grow. Rows are read in batches and
    printed after their transaction ended, so while beaconctl waits on a
    full pipe no reader slot of its own is in a transaction."""
    srv = start_server()
    put_many(srv, 1500)
    proc = subprocess.Popen([str(BEACONCTL), "--json", "--data-dir", str(srv.data_dir),
                             "uploads", "list", "--limit", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        pipe_size = fcntl.fcntl(proc.stdout.fileno(), F_GETPIPE_SZ)
        buffered = array.array("i", [0])

        def pipe_full():
            fcntl.ioctl(proc.stdout.fileno(), termios.FIONREAD, buffered)
            return buffered[0] >= pipe_size

        assert wait_until(pipe_full, WAIT), f"{buffered[0]} of {pipe_size} bytes"
        assert proc.poll() is None  # waiting on the pipe, mid-listing
        readers = lmdb_readers(srv.data_dir / "index")
        assert readers.get(proc.pid, "-") == "-", f"beaconctl holds read txn {readers}"
        out, err = proc.communicate(timeout=WAIT)
        assert proc.returncode == 0, err
        assert len(out.decode().splitlines()) == 1500
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------
# get


def test_get_to_file_and_never_to_a_terminal(start_server, tmp_path):
    srv = start_server()
    body = os.urandom(300 * 1024)  # more than one read chunk
    put(srv, body=body)
    uid = rows(srv)[0][0]["id"]
    out = tmp_path / "out" / "upload.bin"
    out.parent.mkdir()
    out.write_bytes(b"old contents")
    p = ok(srv, "uploads", "get", uid, "-o", out)
    assert p.stdout == b"" and p.stderr == b""
    assert out.read_bytes() == body
    assert sorted(os.listdir(out.parent)) == ["upload.bin"]  # no temporary left

    # Missing upload: FILE is left as it was, nothing else appears.
    p = run(srv, "uploads", "get", uid + 1000, "-o", out)
    assert p.returncode == 1 and p.stderr.decode() == f"beaconctl: upload {uid + 1000}: not found\n"
    assert out.read_bytes() == body and sorted(os.listdir(out.parent)) == ["upload.bin"]

    # Standard output that is a pipe still gets the bytes.
    assert ok(srv, "uploads", "get", uid).stdout == body

    master, slave = pty.openpty()
    try:
        p = run(srv, "uploads", "get", uid, stdout=slave)
        assert p.returncode == 2
        assert p.stderr.decode() == (f"beaconctl: not writing upload {uid} to a terminal: use "
                                     "-o FILE, or redirect standard output\n")
        readable, _, _ = select.select([master], [], [], 0)
        assert readable == [], f"bytes reached the terminal: {os.read(master, 4096)!r}"
        p = run(srv, "uploads", "get", uid, "-o", "-", stdout=slave)
        assert p.returncode == 2
    finally:
        os.close(master)
        os.close(slave)


# --------------------------------------------------------------------------
# follow


def _read_line(stream, timeout):
    ready, _, _ = select.select([stream], [], [], timeout)
    return stream.readline() if ready else b""


def test_follow_prints_an_upload_as_it_is_stored(start_server):
    srv = start_server()
    put(srv)  # there before follow starts: not printed
    old = rows(srv)[0][0]["id"]
    cmd = [str(BEACONCTL), "--json", "--data-dir", str(srv.data_dir), "uploads", "follow"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = _read_line(proc.stderr, WAIT)
        assert line == b"beaconctl: following new uploads (interrupt to stop)\n", line
        body = put(srv, name="agent2", category="Logs")
        got = json.loads(_read_line(proc.stdout, WAIT))
        assert got["device"] == "agent2.example" and got["category"] == "Logs"
        assert got["length"] == len(body) and got["id"] != old
        put(srv)
        again = json.loads(_read_line(proc.stdout, WAIT))
        assert again["device"] == "agent1.example" and again["id"] not in (old, got["id"])
        proc.send_signal(signal.SIGINT)
        assert proc.wait(WAIT) == 0
        assert proc.stdout.read() == b""  # each upload once
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()

    # --after catches up first, then follows; --device filters.
    everything, _ = rows(srv, "--limit", "0")
    cmd = [str(BEACONCTL), "--json", "--data-dir", str(srv.data_dir), "uploads", "follow",
           "--after", str(old), "--device", "agent1.example"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        want = [r["id"] for r in everything if r["id"] != old and r["device"] == "agent1.example"]
        got = [json.loads(_read_line(proc.stdout, WAIT))["id"] for _ in want]
        assert got == want
        assert _read_line(proc.stderr, WAIT) == (
            b"beaconctl: following new uploads (interrupt to stop)\n")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(WAIT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


# --------------------------------------------------------------------------
# devices


def device_rows(srv, *args):
    p = ok(srv, "devices", "list", "--json", *args)
    return {json.loads(line)["device"]: json.loads(line) for line in p.stdout.decode().splitlines()}


def test_devices_list_by_state(start_server, pki, tmp_path):
    crl_dir = tmp_path / "crl"
    crl_dir.mkdir()
    make_crl(pki, crl_dir / "agent3.crl.pem", revoke=["agent3"])
    srv = start_server({"server": {"approval": "require", "watch": "no"},
                        "tls": {"crl_dir": str(crl_dir)}})
    ok(srv, "devices", "approve", "agent1.example")
    ok(srv, "devices", "approve", "agent2.example")
    put(srv)                                          # agent1: approved, ok
    assert upload(srv, "agent2")[1].status == 201     # agent2: approved, then blocked
    ok(srv, "devices", "block", "agent2.example")
    kind, _, _ = upload(srv, "agent2")
    assert kind != "response"
    kind, _, _ = upload(srv, "agent3")                # revoked
    assert kind != "response"
    kind, _, _ = upload(srv, "noclientauth")          # no clientAuth EKU: wrong usage
    assert kind != "response"
    kind, resp, _ = upload(srv, "agent-ca2")          # a new device: unapproved
    assert kind == "response" and resp.status == 403
    ok(srv, "devices", "block", "ghost.example")      # never seen

    def settled():
        d = device_rows(srv)
        return (d.get("agent2.example", {}).get("last_result") == "blocked"
                and d.get("agent3.example", {}).get("last_result") == "revoked"
                and d.get("noclientauth.example", {}).get("last_result") == "wrong_usage"
                and "agent-ca2.example" in d)

    assert wait_until(settled, WAIT), device_rows(srv)
    assert set(device_rows(srv, "--state", "approved")) == {"agent1.example"}
    assert set(device_rows(srv, "--state", "blocked")) == {"agent2.example", "ghost.example"}
    assert set(device_rows(srv, "--state", "unapproved")) == {"agent3.example",
                                                              "agent-ca2.example",
                                                              "noclientauth.example"}
    refused = device_rows(srv, "--state", "refused")
    assert set(refused) == {"agent2.example", "agent3.example", "noclientauth.example"}
    assert refused["agent3.example"]["last_result"] == "revoked"
    assert refused["noclientauth.example"]["last_result"] == "wrong_usage"
    p = ok(srv, "devices", "list", "--state", "refused")
    assert [line.split()[0] for line in p.stdout.decode().splitlines()] == [
        "DEVICE", "agent2.example", "agent3.example", "noclientauth.example"]
    p = run(srv, "devices", "list", "--state", "expired")
    assert p.returncode == 2
    assert p.stderr.decode().startswith("beaconctl: --state 'expired': expected unapproved, "
                                        "approved, blocked or refused\n")


def test_devices_list_reads_in_batches_without_overlap_or_gap(start_server):
    """600 devices: more than one read batch (512). Every device once, in
    name order, filtered or not."""
    srv = start_server({"server": {"watch": "no"}})
    names = [f"bulk-{i:04d}.example" for i in range(600)]
    for n in names:
        assert ctl(srv, {"cmd": "device_block", "device": n})["ok"] is True
    put(srv)
    p = ok(srv, "devices", "list", "--json")
    listed = [json.loads(line)["device"] for line in p.stdout.decode().splitlines()]
    assert listed == sorted(names + ["agent1.example"])
    assert list(device_rows(srv, "--state", "blocked")) == names


def test_block_unknown_warns_and_repeats_change_nothing(start_server):
    srv = start_server({"server": {"watch": "no"}})
    put(srv)
    gen = ctl(srv, {"cmd": "status"})["snapshot_generation"]

    p = ok(srv, "devices", "block", "ghost.example")
    assert p.stdout.decode().startswith("device ghost.example: blocked")
    assert p.stderr.decode() == ("beaconctl: warning: no device with this name has connected "
                                 "to this beacon: the change applies from its first visit "
                                 "(check the name)\n")
    assert device_rows(srv)["ghost.example"]["state"] == "blocked"
    gen_blocked = ctl(srv, {"cmd": "status"})["snapshot_generation"]
    assert gen_blocked == gen + 1

    p = ok(srv, "devices", "block", "ghost.example")
    assert p.stdout.decode() == "device ghost.example: already blocked\n"
    assert p.stderr == b""
    p = ok(srv, "--json", "devices", "block", "ghost.example")
    reply = json.loads(p.stdout)
    assert reply["changed"] is False and reply["state"] == "blocked"
    assert ctl(srv, {"cmd": "status"})["snapshot_generation"] == gen_blocked  # no reload

    p = ok(srv, "devices", "unblock", "ghost.example")
    assert p.stdout.decode().startswith("device ghost.example: unblocked")
    p = ok(srv, "devices", "unblock", "ghost.example")
    assert p.stdout.decode() == "device ghost.example: not blocked\n"
    p = ok(srv, "devices", "approve", "ghost.example")
    assert p.stdout.decode() == "device ghost.example: already approved\n"

    # A device that has connected: no warning.
    p = ok(srv, "devices", "block", "agent1.example")
    assert p.stdout.decode().startswith("device agent1.example: blocked") and p.stderr == b""

    # Each change, and only a change, leaves an audit line naming it and
    # who asked (the control socket's peer, as the kernel tells it).
    audit = re.findall(r"audit: device_(\w+) (\S+) by uid (\d+) \(pid (\d+)\): ok: (\w+); trust snapshot",
                       srv.stderr())
    uid = str(os.getuid())
    assert [(a[0], a[1], a[2], a[4]) for a in audit] == [
        ("block", "ghost.example", uid, "blocked"), ("unblock", "ghost.example", uid, "approved"),
        ("block", "agent1.example", uid, "blocked")], audit
    assert all(int(a[3]) > 1 for a in audit), audit
    ok(srv, "reload", "crl")
    assert re.search(rf"audit: reload crl by uid {uid} \(pid \d+\): ok: ", srv.stderr())
    assert upload(srv, "agent1")[0] != "response"
    p = ok(srv, "devices", "block", "agent1.example")
    assert p.stdout.decode() == "device agent1.example: already blocked\n"
    ok(srv, "devices", "unblock", "agent1.example")
    assert upload(srv, "agent1")[1].status == 201


# --------------------------------------------------------------------------
# status


def test_status_since_start_and_store_totals(start_server):
    srv = start_server()
    bodies = [put(srv) for _ in range(3)]
    total = sum(len(b) for b in bodies)
    text = ok(srv, "status").stdout.decode()
    assert "uploads since start: 3\n" in text
    assert f"store:               3 uploads, {total} bytes (in the index)\n" in text
    st = json.loads(ok(srv, "status", "--json").stdout)
    assert (st["uploads"], st["store_uploads"], st["store_bytes"]) == (3, 3, total)

    srv.stop()
    srv.start()
    text = ok(srv, "status").stdout.decode()
    assert "uploads since start: 0\n" in text
    assert f"store:               3 uploads, {total} bytes (in the index)\n" in text


def test_dated_certificates_recorded_forged_ones_not(start_server, tmp_path):
    """An expired or not-yet-valid certificate our CA signed names its device
    (`devices list --state refused` says why it stays out). One that only
    claims our CA as issuer, expired too, must not add a record: its name is
    nobody's word, and recording it would let anyone grow the index."""
    # One worker: the devices' records go through one ring, in order.
    srv = start_server({"server": {"watch": "no", "workers": "1"}})
    ca = Cert(x509.load_pem_x509_certificate((srv.pki / "agents-ca.pem").read_bytes()),
              serialization.load_pem_private_key((srv.pki / "agents-ca.key").read_bytes(), None))
    day = datetime.timedelta(days=1)
    lapsed = make_cert(cn("lapsed.example"), ca, not_before=NOW - 9 * day, not_after=NOW - day)
    # The forgery: our CA's name and key identifier, anyone's signature.
    key = ec.generate_private_key(ec.SECP256R1())
    forged = Cert(x509.CertificateBuilder()
                  .subject_name(cn("forged.example")).issuer_name(ca.cert.subject)
                  .public_key(key.public_key()).serial_number(x509.random_serial_number())
                  .not_valid_before(NOW - 9 * day).not_valid_after(NOW - day)
                  .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                      ca.key.public_key()), False)
                  .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256()), key)

    def attempt(cert, stem):
        crt, k = cert.write(tmp_path, stem)
        ctx = client_context(srv.pki, None)
        ctx.load_cert_chain(str(crt), str(k))
        return upload(srv, ctx=ctx)

    # TLS 1.3: the client hears the alert after its side of the handshake.
    kind, detail, _ = attempt(lapsed, "lapsed")
    assert kind != "response" and "ALERT_CERTIFICATE_EXPIRED" in detail, detail
    kind, detail, _ = attempt(forged, "forged")
    assert kind != "response" and "ALERT_BAD_CERTIFICATE" in detail, detail
    for stem in ("expired", "notyet"):
        kind, detail, _ = upload(srv, stem)
        assert kind != "response" and "ALERT_CERTIFICATE_EXPIRED" in detail, detail
    assert wait_until(lambda: {"lapsed.example", "expired.example", "notyet.example"}
                      <= set(device_rows(srv)), WAIT), device_rows(srv)
    refused = device_rows(srv, "--state", "refused")
    assert refused["lapsed.example"]["last_result"] == "expired", refused
    assert refused["expired.example"]["last_result"] == "expired", refused
    assert refused["notyet.example"]["last_result"] == "not_yet_valid", refused
    # The records are written in order from the one worker's ring: the
    # forgery came before the last of them, so it would be there by now.
    assert "forged.example" not in device_rows(srv), device_rows(srv)
