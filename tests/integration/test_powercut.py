"""Power loss, not only kill -9 (issue 13, item 6).

kill -9 leaves the page cache intact, so it cannot tell a 201 sent after
fdatasync from one sent before. Here beacond runs with
tests/powercut/shim.c preloaded: it keeps a shadow of the data directory
holding only what was made durable (file bytes at fsync/fdatasync, or
written through O_DSYNC; directory entries at the directory's fsync). A
power cut is SIGKILL, then the data directory is rebuilt from the shadow
alone: every byte and name no sync covered is gone.

Each round: clients upload (sizes from empty to 1.2 MB, keep-alive), the
power is cut right after a random number of acknowledgements (at once, or
a random moment later), the directory is rebuilt, beacond restarts on it, and then
- every upload acknowledged in any round so far is indexed under the id
  its 201 named and is byte-identical (SHA-256);
- every indexed upload reads back with its checksum (LMDB and the spool
  agree) and is exactly what a client sent;
- recovery logged no error (no record missing under an index entry).

BEACON_POWERCUT_ROUNDS=N sets the number of rounds (CI: 3; the issue asks
for 50, about 10 minutes here: `BEACON_POWERCUT_ROUNDS=50 BEACOND=... BEACONCTL=... python3 -m
pytest -q -p no:cacheprovider tests/integration/test_powercut.py`), and
BEACON_POWERCUT_SEED=S replays the sizes, contents and cut delays (not the
interleaving). tests/powercut/ack-before-sync.sh builds a deliberately
broken beacond (201 before the segments' fdatasync) and shows that this
test fails on it.
"""

import hashlib
import os
import random
import re
import shutil
import signal
import ssl
import threading
import time
from pathlib import Path

import pytest

from helpers import BEACOND, ConnectionClosed, build_request, client_context, tls_connect

ROUNDS = int(os.environ.get("BEACON_POWERCUT_ROUNDS", "3"))
_seed = os.environ.get("BEACON_POWERCUT_SEED")
SEED = int(_seed) if _seed else random.SystemRandom().randrange(1, 2**32)
SHIM = Path(os.environ.get("BEACON_POWERCUT_SHIM",
                           BEACOND.parent / "tests" / "powercut" / "beacon-powercut.so"))
CLIENTS = 4
MIN_ACKS = 5  # per round, before the cut may come
ID_RE = re.compile(rb"upload (\d+), (\d+) bytes")


def random_size(rng):
    r = rng.random()
    if r < 0.05:
        return 0
    if r < 0.6:
        return rng.randrange(1, 8 * 1024)
    if r < 0.9:
        return rng.randrange(8 * 1024, 300 * 1024)
    return rng.randrange(300 * 1024, 1200 * 1024)


class Sent:
    __slots__ = ("name", "size", "sha", "id")

    def __init__(self, name, data):
        self.name = name
        self.size = len(data)
        self.sha = hashlib.sha256(data).hexdigest()
        self.id = None


def client(srv, ctx, seed, stop, sent, acked, lock, errors, cut_after, cut_now):
    rng = random.Random(seed)
    n = 0
    while not stop.is_set():
        try:
            conn = tls_connect(srv, ctx=ctx, timeout=10.0)
        except (OSError, ssl.SSLError) as e:
            if not stop.is_set():
                errors.append(f"cannot connect before the cut: {e!r}")
            return
        try:
            for _ in range(rng.choice((1, 2, 4))):
                data = rng.randbytes(random_size(rng))
                s = Sent(f"pc-{seed}-{n}.ndi", data)
                n += 1
                with lock:
                    if stop.is_set():
                        return
                    sent[s.name] = s
                conn.send(build_request("PUT", f"/ManageSoftRL/Inventories/{s.name}", (), data))
                resp = conn.read_response(30.0)
                m = ID_RE.search(resp.body) if resp.status == 201 else None
                if not m or int(m.group(2)) != s.size:
                    if not stop.is_set():
                        errors.append(f"{s.name}: {resp}")
                    return
                s.id = m.group(1).decode()
                with lock:
                    acked.append(s)
                    if len(acked) == cut_after:
                        cut_now.set()
        except (OSError, ssl.SSLError, ConnectionClosed, TimeoutError) as e:
            if not stop.is_set():
                errors.append(f"{e!r} before the cut")
            return
        finally:
            conn.close()


def restore_from_shadow(data_dir, shadow):
    """The data directory as the disk holds it after the power cut: the
    names whose directory was synced, with the bytes that were synced."""
    for p in data_dir.iterdir():
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    kept_content, kept_names = set(), set()

    def build(rel):
        entries = shadow / "names" / rel / "@entries"
        if not entries.exists():
            return
        kept_names.add(entries)
        for line in entries.read_text().splitlines():
            kind, name = line.split(" ", 1)
            target = data_dir / rel / name
            if kind == "d":
                target.mkdir()
                build(rel / name)
                continue
            src = shadow / "content" / rel / name
            if src.exists():
                shutil.copyfile(src, target)
                kept_content.add(src)
            else:
                target.touch()  # the name survived, none of its bytes

    build(Path("."))
    # What did not survive must not come back with a later name.
    for kind, kept in (("content", kept_content), ("names", kept_names)):
        for root, _, files in os.walk(shadow / kind):
            for f in files:
                p = Path(root) / f
                if p not in kept:
                    p.unlink()


def start_with_shim(srv, shadow, monkeypatch):
    with monkeypatch.context() as m:
        m.setenv("LD_PRELOAD", str(SHIM))
        m.setenv("BEACON_POWERCUT_DATA", str(srv.data_dir))
        m.setenv("BEACON_POWERCUT_SHADOW", str(shadow))
        srv.start()


def check_store(srv, everything_sent, acked, tag):
    problems = [f"recovery: {ln}" for ln in srv.stderr().splitlines() if "[error]" in ln]
    rows = {str(r["id"]): r for r in srv.uploads()}
    for r in rows.values():
        s = everything_sent.get(r["name"])
        got = srv.beaconctl("uploads", "get", r["id"], check=False)
        if s is None:
            problems.append(f"indexed upload nobody sent: {r}")
        elif got.returncode != 0:
            problems.append(f"{r['name']} id {r['id']} ({'acked' if s.id else 'not acked'}): "
                            f"indexed but unreadable: {got.stderr.decode(errors='replace')}")
        elif hashlib.sha256(got.stdout).hexdigest() != s.sha:
            problems.append(f"{r['name']} id {r['id']}: {len(got.stdout)} bytes, not the "
                            f"{s.size} sent")
    for s in acked:
        r = rows.get(s.id)
        if r is None or r["name"] != s.name:
            problems.append(f"LOST: {s.name} got 201 as upload {s.id} ({s.size} bytes); "
                            f"indexed as {r}")
    assert not problems, f"{tag}\n" + "\n".join(problems[:30]) + \
        f"\nstderr after restart:\n{srv.stderr()[-3000:]}"
    return len(rows)


def test_power_cut_rounds(start_server, monkeypatch, tmp_path):
    if not SHIM.exists():
        pytest.skip(f"{SHIM} not built (sanitizer builds do not build the power-cut shim)")
    rng = random.Random(SEED)
    # Small segments: more of them, and more fdatasyncs per round. A group
    # waits up to 5 ms to fill, as a busy server's would.
    srv = start_server({"server": {"workers": "2"},
                        "store": {"segment_size": "1M", "group_wait": "5ms"}},
                       start=False)
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    ctx = client_context(srv.pki, "agent1")
    everything_sent, all_acked = {}, []
    for rnd in range(ROUNDS):
        tag = f"[BEACON_POWERCUT_SEED={SEED} round {rnd + 1} of {ROUNDS}]"
        start_with_shim(srv, shadow, monkeypatch)
        indexed = check_store(srv, everything_sent, all_acked, tag + " after restart")

        stop, lock, cut_now = threading.Event(), threading.Lock(), threading.Event()
        sent, acked, errors = {}, [], []
        # The cut comes right after the Nth acknowledgement (N random), at
        # once or a random moment later: right after a 201 is where a
        # server that acknowledges before its fdatasync loses data.
        cut_after = MIN_ACKS + rng.randrange(0, 40)
        delay = 0.0 if rng.random() < 0.5 else rng.uniform(0, 0.3)
        threads = [threading.Thread(target=client, daemon=True,
                                    args=(srv, ctx, rng.randrange(1, 2**63), stop, sent,
                                          acked, lock, errors, cut_after, cut_now))
                   for _ in range(CLIENTS)]
        for t in threads:
            t.start()
        assert cut_now.wait(120) or errors, f"{tag} {len(acked)} uploads acknowledged in 120 s"
        if delay:
            time.sleep(delay)
        with lock:
            stop.set()
            srv.assert_alive()
            srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait(30)
        srv.proc = None
        srv._stderr_file.close()
        (srv.dir / f"beacond.stderr.round{rnd + 1}").write_text(srv.stderr())
        for t in threads:
            t.join(60)
            assert not t.is_alive(), f"{tag} a client hung after the cut"
        assert not errors, f"{tag}\n" + "\n".join(errors[:10]) + f"\n{srv.stderr()[-3000:]}"
        assert len(acked) >= MIN_ACKS
        everything_sent.update(sent)
        all_acked += acked
        print(f"{tag} {indexed} indexed at start, {len(sent)} sent, {len(acked)} acknowledged, "
              "then the power was cut")
        restore_from_shadow(srv.data_dir, shadow)

    start_with_shim(srv, shadow, monkeypatch)
    check_store(srv, everything_sent, all_acked, f"[BEACON_POWERCUT_SEED={SEED} after the last cut]")
