"""Crash test (issue 3): kill -9 the server under a load of concurrent
uploads, restart it on the same data directory, and check the store.

After the restart:
- every upload that got a 201 is indexed under the id the 201 named and is
  byte-identical (SHA-256) to what the client sent;
- the index holds at most (acknowledged + in flight at the kill) uploads;
- every indexed upload is byte-identical to one a client sent (an upload
  whose 201 never arrived may be there, but only whole);
- the restarted server takes new uploads (and gives them fresh ids).

Twenty runs, each seeded from one base seed: BEACON_CRASH_SEED=N replays
them (add `-k run7` for one); the base seed and each run's seed are in the
test ids, in the output and in every failure message. The moment of the kill depends on timing too, so a replay
gives the same sizes, contents and kill delay, not the same interleaving.
"""

import hashlib
import os
import random
import re
import signal
import ssl
import threading
import time

import pytest

from helpers import ConnectionClosed, build_request, client_context, tls_connect
from trustkit import wait_until

RUNS = 20
CLIENTS = 6
MAX_SIZE = 2 * 1024 * 1024


def _base_seed():
    """BEACON_CRASH_SEED, else a fresh one. Under pytest-xdist every worker
    collects the tests and must see the same ids, so the seed comes from
    the run's id that xdist gives them all."""
    if os.environ.get("BEACON_CRASH_SEED"):
        return int(os.environ["BEACON_CRASH_SEED"])
    run_uid = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run_uid:
        return int(run_uid, 16) % (2**32 - 1) + 1
    return random.SystemRandom().randrange(1, 2**32)


BASE_SEED = _base_seed()
SEEDS = [random.Random(BASE_SEED * 1000 + i).randrange(1, 2**32) for i in range(RUNS)]

ID_RE = re.compile(rb"upload (\d+), (\d+) bytes")


class Attempt:
    """One upload as the client saw it."""

    __slots__ = ("name", "size", "sha", "chunked", "state", "status", "id", "resp")

    def __init__(self, name, size, sha, is_chunked):
        self.name = name
        self.size = size
        self.sha = sha
        self.chunked = is_chunked
        self.state = "new"  # new -> sending -> answered | failed
        self.status = None
        self.id = None
        self.resp = None


def random_size(rng):
    r = rng.random()
    if r < 0.1:
        return rng.randrange(0, 16)
    if r < 0.5:
        return rng.randrange(16, 8 * 1024)
    if r < 0.85:
        return rng.randrange(8 * 1024, 256 * 1024)
    return rng.randrange(256 * 1024, MAX_SIZE + 1)


def chunk_body(data, rng):
    """Chunked encoding with a cycle of one tiny, one middling and one large
    chunk size (helpers.chunked is quadratic: too slow for 2 MiB)."""
    sizes = [rng.choice((1, 7, 100)), rng.choice((4096, 16383)), rng.choice((65536, 300001))]
    rng.shuffle(sizes)
    out, i, k = [], 0, 0
    while i < len(data):
        piece = data[i:i + sizes[k % 3]]
        out += (b"%x\r\n" % len(piece), piece, b"\r\n")
        i += len(piece)
        k += 1
    out.append(b"0\r\n\r\n")
    return b"".join(out)


def client(server, ctx, tid, seed, stop, attempts, lock, errors):
    rng = random.Random(seed)
    n = 0
    while not stop.is_set():
        try:
            conn = tls_connect(server, ctx=ctx, timeout=10.0)
        except (OSError, ssl.SSLError) as e:
            if not stop.is_set():
                errors.append(f"client {tid}: cannot connect before the kill: {e!r}")
            return  # the server is gone
        try:
            for k in range(rng.choice((1, 1, 2, 3, 5))):  # keep-alive
                if stop.is_set():
                    return
                size = random_size(rng)
                data = rng.randbytes(size)
                is_chunked = rng.random() < 0.3
                name = f"crash-{seed}-{n}.ndi"
                n += 1
                a = Attempt(name, size, hashlib.sha256(data).hexdigest(), is_chunked)
                method = rng.choice(("PUT", "POST"))
                target = f"/ManageSoftRL/Inventories/{name}"
                if is_chunked:
                    body = chunk_body(data, rng)
                    req = build_request(method, target, ["Transfer-Encoding: chunked"], body)
                else:
                    req = build_request(method, target, (), data)
                with lock:
                    if stop.is_set():
                        return
                    a.state = "sending"
                    attempts.append(a)
                conn.send(req)
                resp = conn.read_response(timeout=20.0)
                a.resp = resp
                a.status = resp.status
                if resp.status == 201:
                    loc = resp.header("location") or ""
                    m = ID_RE.search(resp.body)
                    lid = loc.rsplit("/", 1)[-1] if loc.startswith("/uploads/") else None
                    bid = m.group(1).decode() if m else None
                    if lid is None or bid is None or lid != bid or int(m.group(2)) != size:
                        errors.append(f"{name}: 201 with Location {loc!r}, body {resp.body!r}, "
                                      f"sent {size} bytes")
                    a.id = lid or bid
                with lock:
                    a.state = "answered"
                if resp.status != 201:
                    return  # the server closes after an error
        except (OSError, ssl.SSLError, ConnectionClosed, TimeoutError) as e:
            # What was being sent stays "sending": in flight at the kill.
            if not stop.is_set():
                errors.append(f"client {tid} at {time.monotonic():.3f}: {e!r} before the kill "
                              f"(upload {name}, {size} bytes, "
                              f"{'chunked' if is_chunked else 'length'}, "
                              f"{'keep-alive' if k else 'first on its connection'})")
            return
        finally:
            conn.close()


@pytest.mark.parametrize("run", range(RUNS), ids=[f"run{i}-seed{s}" for i, s in enumerate(SEEDS)])
def test_kill9_under_load(start_server, run):
    seed = SEEDS[run]
    tag = f"[BEACON_CRASH_SEED={BASE_SEED} run {run} seed {seed}]"
    print(tag)
    rng = random.Random(seed)
    srv = start_server({"server": {"workers": "2"}})
    ctx = client_context(srv.pki, "agent1")

    stop = threading.Event()
    lock = threading.Lock()
    attempts, errors = [], []
    threads = [threading.Thread(target=client, daemon=True,
                                args=(srv, ctx, t, rng.randrange(1, 2**63), stop, attempts,
                                      lock, errors))
               for t in range(CLIENTS)]
    # The kill comes once a random number of uploads were acknowledged (a
    # round that acknowledged nothing would check nothing), a random moment
    # later, with the other clients' uploads at every stage of flight.
    min_acked = rng.randint(3, 30)
    kill_after = rng.uniform(0, 0.3)

    def acked_so_far():
        with lock:
            return sum(1 for a in attempts if a.status == 201)

    started = time.monotonic()
    for t in threads:
        t.start()
    assert wait_until(lambda: acked_so_far() >= min_acked or errors, 120), \
        f"{tag} fewer than {min_acked} uploads acknowledged in 120 s\n{srv.stderr()[-2000:]}"
    assert not errors, f"{tag} before the kill:\n" + "\n".join(errors)
    time.sleep(kill_after)  # the random point, not a wait for an event
    kill_after += time.monotonic() - started

    # The kill: freeze the list of attempts, then SIGKILL.
    with lock:
        stop.set()
        assert srv.alive(), f"{tag} beacond died under load\n{srv.stderr()}"
        srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait(10)
    killed_at = time.monotonic()
    srv.proc = None  # killed on purpose: no SIGTERM check for this one
    srv._stderr_file.close()
    for t in threads:
        t.join(30)
        assert not t.is_alive(), f"{tag} a client hung after the kill"

    acked = [a for a in attempts if a.status == 201]
    inflight = [a for a in attempts if a.status is None]
    refused = [a for a in attempts if a.status not in (None, 201)]
    summary = (f"{tag} killed after {kill_after:.2f} s (at {killed_at:.3f}): {len(attempts)} uploads started, "
               f"{len(acked)} acknowledged, {len(inflight)} in flight")
    print(summary)
    assert not errors, (f"{summary}\n" + "\n".join(errors) +
                        f"\nstderr of the killed server:\n{srv.stderr()[-3000:]}")
    assert not refused, f"{summary}\nrefused under load: {[a.resp for a in refused][:5]}"
    assert len(acked) >= min_acked, summary

    # Restart on the same data directory (recovery runs at start-up).
    first_stderr = srv.stderr()
    (srv.dir / "beacond.stderr.killed").write_text(first_stderr)
    srv.start()

    # Recovery may cut garbage and remove unindexed segments, but it must
    # find nothing damaged (a short segment, a bad record header).
    recovery_errors = [ln for ln in srv.stderr().splitlines() if "[error]" in ln]

    rows = srv.uploads()
    by_name = {a.name: a for a in attempts}
    indexed = {}
    problems = []
    for r in rows:
        a = by_name.get(r["name"])
        if a is None:
            problems.append(f"indexed upload nobody sent: {r}")
            continue
        if a.name in indexed:
            problems.append(f"{a.name} indexed twice: {indexed[a.name]} and {r}")
        indexed[a.name] = r
        if int(r["length"]) != a.size:
            problems.append(f"{a.name} ({a.status}): indexed length {r['length']}, sent {a.size}")
        got = srv.beaconctl("uploads", "get", r["id"], check=False)
        if got.returncode != 0:
            problems.append(f"{a.name} ({a.status}) id {r['id']}: beaconctl get failed: "
                            f"{got.stderr.decode(errors='replace')}")
        elif hashlib.sha256(got.stdout).hexdigest() != a.sha:
            problems.append(f"{a.name} ({a.status}) id {r['id']}: {len(got.stdout)} bytes, "
                            f"not the {a.size} bytes sent")
        if a.status == 201 and str(r["id"]) != str(a.id):
            problems.append(f"{a.name}: 201 named id {a.id}, indexed as {r['id']}")
    problems += [f"recovery: {ln}" for ln in recovery_errors]
    lost = [a for a in acked if a.name not in indexed]
    for a in lost:
        problems.append(f"LOST: {a.name} got 201 (id {a.id}, {a.size} bytes, "
                        f"{'chunked' if a.chunked else 'length'}) but is not indexed")
    if len(rows) > len(acked) + len(inflight):
        problems.append(f"{len(rows)} uploads indexed, more than {len(acked)} acknowledged "
                        f"+ {len(inflight)} in flight")
    extra = len(indexed) - len([a for a in acked if a.name in indexed])
    print(f"{tag} after restart: {len(rows)} indexed ({extra} complete without a 201)")
    assert not problems, (f"{summary}\n" + "\n".join(problems[:40]) +
                          f"\nstderr of the killed server:\n{first_stderr[-3000:]}"
                          f"\nstderr after restart:\n{srv.stderr()[-3000:]}")

    # The restarted server takes new uploads, under fresh ids.
    data = os.urandom(rng.randrange(0, 100_000))
    name = f"after-{seed}.ndi"
    with tls_connect(srv, ctx=ctx) as c:
        c.send(build_request("PUT", f"/ManageSoftRL/Inventories/{name}", (), data))
        resp = c.read_response(20.0)
    assert resp.status == 201, f"{tag} upload after restart: {resp}\n{srv.stderr()}"
    new_id = (resp.header("location") or "").rsplit("/", 1)[-1]
    assert new_id not in {str(r["id"]) for r in rows}, f"{tag} id {new_id} reused: {resp}"
    row = srv.find_upload(name)
    assert str(row["id"]) == new_id
    assert srv.upload_bytes(new_id) == data, f"{tag} upload after restart differs"
