"""Reload under load (issue 4, item 10), scaled for CI.

While 4 client threads (Python ssl, agent1) run full and resumed mutual-TLS
handshakes with small uploads, a control thread reloads the issuers and the
CRLs alternately every 100 ms. Half-way through, a CRL revoking agent2 is
dropped into crl_dir and a reload is issued; a fifth thread keeps trying
agent2 (full and resumed handshakes) throughout.

The run is counted, not timed: it ends once 100 reloads were accepted
(about 10 s unloaded; the issue asks for 30 s: BEACON_RELOADS=300) and the
agent1 clients made at least 100 attempts, however long a loaded machine
takes for that. The revocation comes after half the reloads.

Asserted:
- every reload is accepted (ok:true), and the snapshot generation advanced
  once per reload (no rate is asserted: the run waits for its counts);
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
from trustkit import ctl, drop, make_crl, rss_kib, upload, wait_until

UNDER_ASAN = BEACOND.exists() and b"__asan_init" in BEACOND.read_bytes()

RELOADS = int(os.environ.get("BEACON_RELOADS", "100"))
WARMUP_RELOADS = 30
MIN_ATTEMPTS = 100
# A bound on the test, not on beacond's speed: a run that has not reached
# its counts by then is hung.
RUN_LIMIT_S = 900
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

    def counts(self):
        with self.lock:
            return (self.reloads, self.agent1["attempts"],
                    [a for a in self.agent2 if self.revoked_at and a[0] > self.revoked_at])

    def wait_for(self, what, pred):
        assert wait_until(pred, RUN_LIMIT_S, 0.05), (
            f"load did not reach {what} within {RUN_LIMIT_S} s: {self.counts()[:2]}\n"
            f"failures {self.failures[:3]} reload errors {self.reload_errors[:3]}")

    def run(self, reloads, revoke=None):
        """Until `reloads` reloads were accepted and agent1 made
        MIN_ATTEMPTS attempts; with `revoke`, it runs after half the
        reloads, and the run goes on until agent2 tried both a full
        handshake and a resumption after it."""
        threads = [threading.Thread(target=self.client, args=(k,), daemon=True)
                   for k in range(CLIENT_THREADS)]
        threads.append(threading.Thread(target=self.agent2_client, daemon=True))
        threads.append(threading.Thread(target=self.reloader, daemon=True))
        for t in threads:
            t.start()
        try:
            if revoke is not None:
                self.wait_for(f"{reloads // 2} reloads", lambda: self.counts()[0] >= reloads // 2)
                revoke()
                r = ctl(self.srv, {"cmd": "reload", "what": "crl"})
                assert r.get("ok") is True, r
                self.revoked_at = time.monotonic()
                self.wait_for("agent2 tries after the revocation",
                              lambda: {a[3] for a in self.counts()[2]} == {True, False})
            self.wait_for(f"{reloads} reloads and {MIN_ATTEMPTS} agent1 attempts",
                          lambda: self.counts()[0] >= reloads
                          and self.counts()[1] >= MIN_ATTEMPTS)
        finally:
            self.stop.set()
            for t in threads:
                t.join(30)
                assert not t.is_alive(), "a load thread hung"


def settled(srv):
    """No connection left open: the load's memory is back with the server."""
    return wait_until(lambda: ctl(srv, {"cmd": "stats"})["connections_open"] == 0, 60)


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
    warm.run(WARMUP_RELOADS)
    assert not warm.failures, warm.failures[:5]
    assert not warm.reload_errors, warm.reload_errors[:5]
    assert settled(srv)
    base = _rss(pid)
    gen0 = ctl(srv, {"cmd": "status"})["snapshot_generation"]

    load = Load(srv)
    load.run(RELOADS, revoke=lambda: drop(crl_dir / "agents.crl", revoking))
    assert settled(srv)
    after = _rss(pid)
    st = ctl(srv, {"cmd": "status"})
    srv.assert_alive()

    summary = (f"reloads={load.reloads} agent1={load.agent1} "
               f"agent2 attempts={len(load.agent2)} rss base={base} after={after}")
    print(summary)

    # Reloads: all accepted, each a new snapshot (+1 for the revoking one).
    assert not load.reload_errors, load.reload_errors[:5]
    assert load.reloads >= RELOADS, summary
    assert st["snapshot_generation"] - gen0 == load.reloads + 1, (st, summary)
    assert st["revoked_serials"] == 20001, st

    # Zero failures caused by the reloads.
    assert not load.failures, (
        f"{len(load.failures)} agent1 attempts failed during reloads, e.g. "
        f"{load.failures[:5]}\n{summary}\nstderr:\n{srv.stderr()[-3000:]}")
    assert load.agent1["attempts"] >= MIN_ATTEMPTS, summary
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
