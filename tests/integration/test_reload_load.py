"""Reload under load (issue 4, item 10), scaled for CI.

While 4 client threads (Python ssl, agent1) run full and resumed mutual-TLS
handshakes with small uploads, a control thread reloads the issuers and the
CRLs alternately every 100 ms. Half-way through, a CRL revoking agent2 is
dropped into crl_dir and a reload is issued; a fifth thread keeps trying
agent2 (full and resumed handshakes) throughout.

The issue asks for 30 s of reloads; the default here is 10 s so the file
stays under a minute. Set BEACON_RELOAD_SECONDS=30 for the full run.

Asserted:
- every reload is accepted (ok:true), and the snapshot generation advanced
  once per reload;
- zero failed handshakes or uploads for agent1: every attempt got 201;
- resumption keeps working across reloads (most resumption attempts resume);
- agent2 uploads 201 before the revocation, and every agent2 attempt that
  began after the revoking reload returned is refused in the handshake
  (no HTTP response), resumed ones included;
- memory is flat: VmRSS after the run and a settle is not more than 20 MiB
  above VmRSS after a warm-up with the same load. The trust snapshot carries
  a 20,000-serial CRL (agents-ca2), so a leaked snapshot per reload (~100
  reloads) would show.
"""

import os
import ssl
import threading
import time

from helpers import BEACOND, client_context
from trustkit import ctl, drop, make_crl, rss_kib, upload

UNDER_ASAN = BEACOND.exists() and b"__asan_init" in BEACOND.read_bytes()

RELOAD_SECONDS = float(os.environ.get("BEACON_RELOAD_SECONDS", "10"))
WARMUP_SECONDS = 3.0
SETTLE_SECONDS = 2.0
RELOAD_INTERVAL = 0.1
CLIENT_THREADS = 4
RSS_SLACK_KIB = 20 * 1024


def _rss(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon", "RssFile"):
                out[k] = int(v.split()[0])
    return out


class Load:
    """Client threads and a reloading thread, for one phase."""

    def __init__(self, srv):
        self.srv = srv
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.failures = []        # agent1 attempts that did not get 201
        self.reload_errors = []
        self.reloads = 0
        self.agent1 = {"attempts": 0, "resume_attempts": 0, "resumed": 0}
        self.agent2 = []          # (start monotonic, kind, status/detail, resumption?, reused)
        self.revoked_at = None    # monotonic time the revoking reload returned

    def client(self, idx):
        version = ssl.TLSVersion.TLSv1_2 if idx % 2 else None
        ctx = client_context(self.srv.pki, "agent1", max_version=version)
        session = None
        i = 0
        while not self.stop.is_set():
            try_resume = session is not None and i % 2 == 1
            kind, detail, info = upload(self.srv, "agent1", ctx=ctx,
                                        session=session if try_resume else None,
                                        body=b"inventory %d %d\n" % (idx, i))
            i += 1
            with self.lock:
                self.agent1["attempts"] += 1
                if try_resume:
                    self.agent1["resume_attempts"] += 1
                    if info["reused"]:
                        self.agent1["resumed"] += 1
                if not (kind == "response" and detail.status == 201):
                    self.failures.append((time.monotonic(), try_resume, kind, repr(detail)[:300]))
            if info["session"] is not None:
                session = info["session"]

    def agent2_client(self):
        ctx = client_context(self.srv.pki, "agent2")
        session = None
        i = 0
        while not self.stop.is_set():
            try_resume = session is not None and i % 2 == 1
            t0 = time.monotonic()
            kind, detail, info = upload(self.srv, "agent2", ctx=ctx,
                                        session=session if try_resume else None)
            i += 1
            status = detail.status if kind == "response" else repr(detail)[:200]
            with self.lock:
                self.agent2.append((t0, kind, status, try_resume, info["reused"]))
            if info["session"] is not None:
                session = info["session"]
            time.sleep(0.02)

    def reloader(self):
        whats = ("issuers", "crl")
        n = 0
        next_at = time.monotonic()
        while not self.stop.is_set():
            what = whats[n % 2]
            n += 1
            try:
                r = ctl(self.srv, {"cmd": "reload", "what": what})
                ok = r.get("ok") is True
            except OSError as e:
                ok, r = False, repr(e)
            with self.lock:
                if ok:
                    self.reloads += 1
                else:
                    self.reload_errors.append((what, r))
            next_at += RELOAD_INTERVAL
            time.sleep(max(0.0, next_at - time.monotonic()))

    def run(self, seconds, revoke=None):
        threads = [threading.Thread(target=self.client, args=(k,), daemon=True)
                   for k in range(CLIENT_THREADS)]
        threads.append(threading.Thread(target=self.agent2_client, daemon=True))
        threads.append(threading.Thread(target=self.reloader, daemon=True))
        for t in threads:
            t.start()
        t_end = time.monotonic() + seconds
        if revoke is not None:
            time.sleep(seconds / 2)
            revoke()
            r = ctl(self.srv, {"cmd": "reload", "what": "crl"})
            assert r.get("ok") is True, r
            self.revoked_at = time.monotonic()
        time.sleep(max(0.0, t_end - time.monotonic()))
        self.stop.set()
        for t in threads:
            t.join(30)
            assert not t.is_alive(), "a load thread hung"


def test_reload_under_load(start_server, pki, tmp_path):
    crl_dir = tmp_path / "crl"
    crl_dir.mkdir()
    make_crl(pki, crl_dir / "ca2.crl", ca="agents-ca2", random_serials=20000)
    revoking = make_crl(pki, tmp_path / "agent2.crl", revoke=["agent2"]).read_bytes()
    srv = start_server({"server": {"watch": "no", "workers": "2"},
                        "tls": {"crl_dir": str(crl_dir)}})
    pid = srv.proc.pid
    st = ctl(srv, {"cmd": "status"})
    assert st["revoked_serials"] == 20000, st

    # Warm-up: the same load, so allocator arenas, caches and the store's
    # maps have grown before the baseline is taken.
    warm = Load(srv)
    warm.run(WARMUP_SECONDS)
    assert not warm.failures, warm.failures[:5]
    assert not warm.reload_errors, warm.reload_errors[:5]
    time.sleep(SETTLE_SECONDS)
    base = _rss(pid)
    gen0 = ctl(srv, {"cmd": "status"})["snapshot_generation"]

    load = Load(srv)
    load.run(RELOAD_SECONDS, revoke=lambda: drop(crl_dir / "agents.crl", revoking))
    time.sleep(SETTLE_SECONDS)
    after = _rss(pid)
    st = ctl(srv, {"cmd": "status"})
    srv.assert_alive()

    summary = (f"reloads={load.reloads} agent1={load.agent1} "
               f"agent2 attempts={len(load.agent2)} rss base={base} after={after}")
    print(summary)

    # Reloads: all accepted, each a new snapshot (+1 for the revoking one).
    assert not load.reload_errors, load.reload_errors[:5]
    assert load.reloads >= RELOAD_SECONDS / RELOAD_INTERVAL * 0.8, summary
    assert st["snapshot_generation"] - gen0 == load.reloads + 1, (st, summary)
    assert st["revoked_serials"] == 20001, st

    # Zero failures caused by the reloads.
    assert not load.failures, (
        f"{len(load.failures)} agent1 attempts failed during reloads, e.g. "
        f"{load.failures[:5]}\n{summary}\nstderr:\n{srv.stderr()[-3000:]}")
    assert load.agent1["attempts"] >= 100, summary
    ra = load.agent1["resume_attempts"]
    assert ra > 0 and load.agent1["resumed"] >= 0.9 * ra, (
        f"resumption stopped working across reloads: {summary}")

    # agent2: admitted before, refused from the next handshake on.
    assert load.revoked_at is not None
    drop_at = load.revoked_at  # conservative bound below uses the start of the drop
    before = [a for a in load.agent2 if a[0] < drop_at - 1.0]
    after_rev = [a for a in load.agent2 if a[0] > load.revoked_at]
    assert before and after_rev, summary
    bad_before = [a for a in before if not (a[1] == "response" and a[2] == 201)]
    assert not bad_before, f"agent2 failed before its revocation: {bad_before[:5]}"
    admitted_after = [a for a in after_rev if a[1] == "response"]
    assert not admitted_after, (
        f"agent2 got HTTP responses after its certificate was revoked: {admitted_after[:5]}")
    assert any(a[3] for a in after_rev), "no resumption attempt by agent2 after revocation"
    assert not any(a[4] for a in after_rev), "a revoked agent2 session was resumed"

    # No snapshot leak. Under AddressSanitizer every free goes through its
    # quarantine (up to 256 MiB) first, so RSS grows whatever beacond does;
    # LeakSanitizer checks that build for leaks at exit instead.
    grew = after["VmRSS"] - base["VmRSS"]
    assert UNDER_ASAN or grew <= RSS_SLACK_KIB, (
        f"VmRSS grew {grew} KiB over {load.reloads} reloads (limit {RSS_SLACK_KIB}): {summary}")
