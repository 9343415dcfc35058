"""The operator's figures of /metrics (issue 15 item 2), each checked for its
value against the real binary, not only for being there: reload successes
and failures by every trigger, the certificates' notAfter and the CRLs'
nextUpdate (against openssl's reading of the same files), the store's disk,
spool, LMDB map and open uploads, handshakes in progress, each worker's busy
time, a `promtool check metrics` lint of a live scrape, and the example
alerting rules (config/beacond-alerts.yml) loaded and unit-tested by
promtool.
"""

import calendar
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from helpers import REPO, curl_upload, free_port, unique_name
from trustkit import beaconctl_sock, ctl, drop, http_get, make_crl, wait_until

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(not PROMTOOL, reason="promtool (Debian's prometheus) absent")

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def unescape(v):
    """A label value as the text format escapes it (\\\\, \\", \\n)."""
    return re.sub(r'\\(.)', lambda m: "\n" if m[1] == "n" else m[1], v)


def scrape(port):
    """[(name, {label: value}, value)] of a live /metrics."""
    status, body = http_get(port, "/metrics")
    assert status == 200, body
    out = []
    for line in body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        labels = {k: unescape(v) for k, v in _LABEL.findall(m[2] or "")}
        out.append((m[1], labels, float(m[3])))
    return out


def value(port, name, **labels):
    got = [v for n, l, v in scrape(port) if n == name and l == labels]
    assert len(got) == 1, f"{name}{labels}: {len(got)} samples"
    return got[0]


def stats(srv):
    p = beaconctl_sock(srv, "stats")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def openssl_date(args, path, field):
    """Unix seconds of `openssl x509 -enddate` / `openssl crl -nextupdate`."""
    out = subprocess.run(["openssl", *args, "-noout", "-in", str(path)], capture_output=True,
                         text=True, check=True).stdout.strip()
    text = out.split("=", 1)[1]
    return calendar.timegm(time.strptime(text, "%b %d %H:%M:%S %Y GMT"))


def cert_cn(path):
    """The subject CN, unescaped (Python's own decoder: openssl's text forms
    escape backslashes)."""
    subject = ssl._ssl._test_decode_cert(str(path))["subject"]
    return next(v for rdn in subject for k, v in rdn if k == "commonName")


# --------------------------------------------------------------------------
# reloads


def test_reload_failures_counted_for_every_trigger(start_server, pki, tmp_path):
    """A refused reload from the control socket, SIGHUP and the file watch
    each count one failure; the good ones count as successes. Each count is
    waited for exactly, one trigger at a time."""
    crl_dir = tmp_path / "crl"
    crl_dir.mkdir()
    port = free_port()
    srv = start_server({"server": {"metrics": f"127.0.0.1:{port}", "watch": "yes"},
                        "tls": {"crl_dir": str(crl_dir)}})

    def counts():
        return (value(port, "beacond_reload_successes_total"),
                value(port, "beacond_reload_failures_total"))

    assert counts() == (0, 0)
    r = ctl(srv, {"cmd": "reload", "what": "all"})
    assert r["ok"] is True, r
    assert counts() == (1, 0)
    # The watch: a CRL that is not a CRL makes the whole reload refused.
    drop(crl_dir / "bad.crl", b"-----BEGIN X509 CRL-----\nnot base64\n-----END X509 CRL-----\n")
    assert wait_until(lambda: counts() == (1, 1), 30), (counts(), srv.stderr()[-2000:])
    r = ctl(srv, {"cmd": "reload", "what": "crl"})
    assert r["ok"] is False, r
    assert counts() == (1, 2)
    srv.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: counts() == (1, 3), 30), (counts(), srv.stderr()[-2000:])
    # The watch again, now with a good CRL in its place: a success.
    (crl_dir / "bad.crl").unlink()
    good = make_crl(pki, tmp_path / "agents.crl")
    drop(crl_dir / "agents.crl", good.read_bytes())
    assert wait_until(lambda: counts() == (2, 3), 30), (counts(), srv.stderr()[-2000:])
    srv.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: counts() == (3, 3), 30), (counts(), srv.stderr()[-2000:])
    st = stats(srv)
    assert (st["reload_successes"], st["reload_failures"]) == (3, 3), st


# --------------------------------------------------------------------------
# certificate and CRL dates


def name_text(cn):
    """A CN as beacond writes names (cert_name_text): ',', '\\\\', '"' and
    bytes outside printable ASCII as \\xHH."""
    return "".join(f"\\x{ord(c):02x}" if c in ',\\"' or not 32 <= ord(c) < 127 else c
                   for c in cn)


def make_ca(dir, cn):
    """A self-signed CA certificate with subject CN `cn` (may hold quotes,
    backslashes); returns its path."""
    key, pem = dir / "odd-ca.key", dir / "odd-ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key), "-out", str(pem),
                    "-days", "400", "-subj", f"/CN={cn}", "-addext",
                    "basicConstraints=critical,CA:TRUE", "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign"],
                   capture_output=True, check=True)
    return pem


def test_certificate_and_crl_dates(start_server, pki, tmp_path):
    """notAfter of the server certificate and of every issuer, nextUpdate of
    the CRL, as openssl reads them from the same files; an issuer whose name
    holds a quote and a backslash gets a label escaped as the text format
    wants (promtool and the parser here read it back)."""
    issuers = tmp_path / "issuers"
    issuers.mkdir()
    for f in (pki / "issuers").iterdir():
        shutil.copy(f, issuers / f.name)
    odd = make_ca(tmp_path, 'Odd "quoted" \\\\ CA')  # openssl -subj reads \\\\ as one
    shutil.copy(odd, issuers / "odd-ca.pem")
    crl_dir = tmp_path / "crl"
    crl_dir.mkdir()
    crl = make_crl(pki, crl_dir / "agents.crl", next_update=time.strftime(
        "%Y%m%d%H%M%SZ", time.gmtime(time.time() + 7 * 86400)))
    port = free_port()
    srv = start_server({"server": {"metrics": f"127.0.0.1:{port}"},
                        "tls": {"issuers": str(issuers), "crl_dir": str(crl_dir)}})
    samples = scrape(port)
    certs = {(l["role"], l["subject"]): v for n, l, v in samples
             if n == "beacond_certificate_not_after_seconds"}
    crls = {l["issuer"]: v for n, l, v in samples if n == "beacond_crl_next_update_seconds"}

    server = [(s, v) for (role, s), v in certs.items() if role == "server"]
    assert len(server) == 1, certs
    assert cert_cn(pki / "server.pem") in server[0][0], server
    assert server[0][1] == openssl_date(["x509", "-enddate"], pki / "server.pem", "notAfter")

    want = {}
    for f in issuers.iterdir():
        want[cert_cn(f)] = openssl_date(["x509", "-enddate"], f, "notAfter")
    got = {s: v for (role, s), v in certs.items() if role == "issuer"}
    assert len(got) == len(want), (got, want)
    for cn, end in want.items():
        text = name_text(cn)
        match = [v for s, v in got.items() if s == f"CN={text}" or s.startswith(f"CN={text}, ")]
        assert match == [end], (cn, text, end, got)
    # The odd one: its \\xHH (beacond's own escaping of names) went through
    # the text format's escaping of the backslash and came back whole.
    assert 'CN=Odd \\x22quoted\\x22 \\x5c CA' in got, got

    agents_cn = cert_cn(pki / "agents-ca.pem")
    assert crls == {agents_cn: openssl_date(["crl", "-nextupdate"], crl, "nextUpdate")}, crls

    # stats gives the same, as arrays.
    st = stats(srv)
    assert {(c["role"], c["subject"]): c["not_after_unix_s"] for c in st["certificate_expiry"]} == \
        certs, st["certificate_expiry"]
    assert {c["issuer"]: c["next_update_unix_s"] for c in st["crl_next_update"]} == crls, st["crl_next_update"]
    if PROMTOOL:
        promtool_lint(port)


# --------------------------------------------------------------------------
# store


def mdb_stat(data_dir):
    out = subprocess.run(["mdb_stat", "-e", str(data_dir / "index")], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    f = dict(re.findall(r'^\s*([A-Za-z][A-Za-z ]+):\s+(\d+)', out.stdout, re.M))
    return int(f["Map size"]), int(f["Page size"]), int(f["Number of pages used"])


def spool_bytes(data_dir):
    return sum(p.stat().st_size for p in (data_dir / "spool").glob("w*/*.seg"))


def test_store_figures(start_server, tmp_path):
    """Disk size and free space as statvfs says, the spool's segment bytes
    as the files are, the LMDB map used and its size as mdb_stat reads the
    index, and max_open_uploads × workers."""
    port = free_port()
    srv = start_server({"server": {"metrics": f"127.0.0.1:{port}", "workers": "2"},
                        "store": {"max_open_uploads": "7", "map_size": "4m"}})
    for i in range(3):
        code, p = curl_upload(srv, srv.pki / "agent1.pem", srv.pki / "agent1.key",
                              f"/ManageSoftRL/Inventories/{unique_name('store')}", b"s" * 5000)
        assert code == 201, p.stderr.decode()
    assert wait_until(lambda: value(port, "beacond_store_uploads_committed_total") == 3, 10)

    before = os.statvfs(srv.data_dir)
    free = value(port, "beacond_store_disk_free_bytes")
    after = os.statvfs(srv.data_dir)
    assert value(port, "beacond_store_disk_size_bytes") == before.f_blocks * before.f_frsize
    # Others write to this filesystem too: the figure lies between the two
    # readings taken around it, give or take what they wrote meanwhile.
    lo = min(before.f_bavail, after.f_bavail) * before.f_frsize
    hi = max(before.f_bavail, after.f_bavail) * before.f_frsize
    assert lo - (64 << 20) <= free <= hi + (64 << 20), (lo, free, hi)

    spool = value(port, "beacond_store_spool_bytes")
    assert spool == spool_bytes(srv.data_dir) and spool >= 3 * 5000, spool

    map_size, page, pages = mdb_stat(srv.data_dir)
    assert value(port, "beacond_store_map_size_bytes") == map_size == 4 << 20
    assert value(port, "beacond_store_map_used_bytes") == pages * page, (pages, page)

    assert value(port, "beacond_store_uploads_open_max") == 14
    assert value(port, "beacond_store_uploads_open") == 0


def tls_client(srv):
    ctx = ssl.create_default_context(cafile=str(srv.pki / "server-ca.pem"))
    ctx.check_hostname = False
    ctx.load_cert_chain(str(srv.pki / "agent1.pem"), str(srv.pki / "agent1.key"))
    raw = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    return ctx.wrap_socket(raw)


def test_open_uploads_and_handshakes_in_progress(start_server):
    """A TCP connection that has not finished its handshake is one handshake
    in progress; an upload whose body is half sent is one upload open. Each
    goes back to 0 when it is over."""
    port = free_port()
    srv = start_server({"server": {"metrics": f"127.0.0.1:{port}"}})
    hs = lambda: value(port, "beacond_handshakes_in_progress")  # noqa: E731
    open_now = lambda: value(port, "beacond_store_uploads_open")  # noqa: E731
    assert hs() == 0 and open_now() == 0
    silent = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(3)]
    assert wait_until(lambda: hs() == 3, 10), hs()
    for s in silent:
        s.close()
    assert wait_until(lambda: hs() == 0, 10), hs()

    c = tls_client(srv)
    name = unique_name("half")
    c.sendall(f"PUT /ManageSoftRL/Inventories/{name} HTTP/1.1\r\nHost: x\r\n"
              f"Content-Length: 2000\r\n\r\n".encode() + b"h" * 1000)
    assert wait_until(lambda: open_now() == 1, 10), open_now()
    assert hs() == 0
    c.sendall(b"h" * 1000)
    head = c.recv(4096)
    assert head.startswith(b"HTTP/1.1 201"), head
    assert wait_until(lambda: open_now() == 0, 10), open_now()
    c.close()


# --------------------------------------------------------------------------
# workers


def test_worker_busy_seconds(start_server):
    """One series per worker; each grows with work, never past the time the
    process has been up, and stats has the same figures."""
    port = free_port()
    srv = start_server({"server": {"metrics": f"127.0.0.1:{port}", "workers": "2"}})

    def busy():
        return {l["worker"]: v for n, l, v in scrape(port)
                if n == "beacond_worker_busy_seconds_total"}

    first = busy()
    assert set(first) == {"0", "1"}, first
    for _ in range(4):
        code, p = curl_upload(srv, srv.pki / "agent1.pem", srv.pki / "agent1.key",
                              f"/ManageSoftRL/Inventories/{unique_name('busy')}", b"b" * 20000)
        assert code == 201, p.stderr.decode()
    later = busy()
    uptime = value(port, "beacond_uptime_seconds") + 1
    assert all(first[w] <= later[w] <= uptime for w in later), (first, later, uptime)
    assert sum(later.values()) > sum(first.values()), (first, later)
    # stats: nanoseconds, read after the scrape, so not smaller.
    ns = stats(srv)["worker_busy_ns"]
    assert len(ns) == 2 and all(ns[i] / 1e9 >= later[str(i)] - 1e-6 for i in range(2)), ns


def test_worker_work_seconds(start_server):
    """The time of the turns that did work: one series per worker, never
    more than its busy time (one scrape reads both), and it grows with
    uploads; stats has it too."""
    port = free_port()
    srv = start_server({"server": {"metrics": f"127.0.0.1:{port}", "workers": "2"}})

    def series():
        busy, work = {}, {}
        for n, l, v in scrape(port):
            if n == "beacond_worker_busy_seconds_total":
                busy[l["worker"]] = v
            elif n == "beacond_worker_work_seconds_total":
                work[l["worker"]] = v
        return busy, work

    busy, first = series()
    assert set(first) == {"0", "1"}, first
    for _ in range(4):
        code, p = curl_upload(srv, srv.pki / "agent1.pem", srv.pki / "agent1.key",
                              f"/ManageSoftRL/Inventories/{unique_name('work')}", b"w" * 20000)
        assert code == 201, p.stderr.decode()
    busy, later = series()
    assert all(first[w] <= later[w] <= busy[w] + 1e-6 for w in later), (first, later, busy)
    assert sum(later.values()) > sum(first.values()), (first, later)
    ns = stats(srv)["worker_work_ns"]
    assert len(ns) == 2 and all(ns[i] / 1e9 >= later[str(i)] - 1e-6 for i in range(2)), ns


# --------------------------------------------------------------------------
# promtool


def promtool_lint(port):
    status, body = http_get(port, "/metrics")
    assert status == 200
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=body, capture_output=True)
    problems = (p.stdout + p.stderr).decode()
    assert p.returncode == 0 and not problems.strip(), problems


@needs_promtool
def test_promtool_lints_live_metrics(start_server):
    """`promtool check metrics` finds nothing to say of a live scrape, after
    traffic, with two workers."""
    port = free_port()
    srv = start_server({"server": {"metrics": f"127.0.0.1:{port}", "workers": "2"}})
    code, p = curl_upload(srv, srv.pki / "agent1.pem", srv.pki / "agent1.key",
                          f"/ManageSoftRL/Inventories/{unique_name('lint')}", b"lint")
    assert code == 201, p.stderr.decode()
    promtool_lint(port)


ALERTS = REPO / "config" / "beacond-alerts.yml"
ALERTS_TEST = Path(__file__).with_name("alerts_test.yml")


@needs_promtool
def test_alert_rules_load():
    p = subprocess.run([PROMTOOL, "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


@needs_promtool
def test_alert_rules_fire(tmp_path):
    """promtool's rule unit tests: synthetic series for which each alert
    fires, and others for which it stays quiet (alerts_test.yml)."""
    shutil.copy(ALERTS, tmp_path / "beacond-alerts.yml")
    shutil.copy(ALERTS_TEST, tmp_path / "alerts_test.yml")
    p = subprocess.run([PROMTOOL, "test", "rules", "alerts_test.yml"], capture_output=True,
                       text=True, cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS" in p.stdout + p.stderr, p.stdout + p.stderr
