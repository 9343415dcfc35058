"""Helpers for the control-plane tests (test_control.py, test_reload_load.py):
the control socket, beaconctl --socket, CRLs made with perf/gen-crl.sh, block
lists, ticket key files, the metrics endpoint, and resumption with Python ssl.

Standard library only.
"""

import hashlib
import json
import os
import re
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from certkit import alert_name
from helpers import (BEACONCTL, REPO, build_request, client_context,
                     tls_connect, unique_name, ConnectionClosed)

GEN_CRL = REPO / "perf" / "gen-crl.sh"


# --------------------------------------------------------------------------
# Control socket


def ctl(server, obj, timeout=30.0):
    """Sends one JSON command on the control socket; returns the reply dict."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        c.settimeout(timeout)
        c.connect(str(server.control_socket))
        c.sendall((json.dumps(obj) + "\n").encode())
        buf = b""
        while b"\n" not in buf:
            data = c.recv(65536)
            if not data:
                break
            buf += data
    assert buf.endswith(b"\n"), f"control socket reply not a whole line: {buf!r}"
    return json.loads(buf.decode())


def beaconctl_sock(server, *args, json_out=True, timeout=30):
    """Runs `beaconctl --socket S [--json] ARGS...`; returns the
    CompletedProcess (text)."""
    cmd = [str(BEACONCTL), "--socket", str(server.control_socket)]
    if json_out:
        cmd.append("--json")
    cmd += [str(a) for a in args]
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=timeout)


def beaconctl_works(server):
    if not BEACONCTL.exists():
        return False
    p = beaconctl_sock(server, "status", json_out=False)
    return p.returncode == 0


def reload(server, what="all"):
    """Reload over the control socket; asserts ok and returns the reply."""
    r = ctl(server, {"cmd": "reload", "what": what})
    assert r.get("ok") is True, f"reload {what} refused: {r}\nstderr:\n{server.stderr()[-3000:]}"
    return r


# --------------------------------------------------------------------------
# PKI bits


def cert_serial(pem_path):
    out = subprocess.run(["openssl", "x509", "-serial", "-noout", "-in", str(pem_path)],
                         stdout=subprocess.PIPE, check=True, text=True).stdout
    return out.strip().split("=", 1)[1]


def cert_fingerprint(pem_path):
    der = ssl.PEM_cert_to_DER_cert(Path(pem_path).read_text())
    return hashlib.sha256(der).hexdigest()


def make_crl(pki, out, revoke=(), ca="agents-ca", random_serials=0, der=False,
             next_update=None):
    """Writes a CRL signed by `ca` revoking the certificates named in `revoke`
    (e.g. "agent2") plus `random_serials` random ones. To place one in a
    watched directory, make it elsewhere and drop() its bytes."""
    pki = Path(pki)
    with tempfile.TemporaryDirectory() as t:
        extra = Path(t) / "serials"
        extra.write_text("".join(cert_serial(pki / f"{n}.pem") + "\n" for n in revoke))
        cmd = ["bash", str(GEN_CRL)]
        if revoke:  # gen-crl.sh fails on an empty -s file (grep under pipefail)
            cmd += ["-s", str(extra)]
        if der:
            cmd.append("-D")
        if next_update:
            cmd += ["-n", next_update]
        cmd += [str(pki / f"{ca}.pem"), str(pki / f"{ca}.key"), str(random_serials), str(out)]
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
        assert p.returncode == 0, f"gen-crl.sh failed: {p.stdout.decode()}"
    return Path(out)


def corrupt_crl_signature(src, out):
    """A DER copy of CRL `src` whose signature no longer verifies: the last
    byte (inside the ECDSA signature's s integer) is flipped, the encoding
    stays valid."""
    der = subprocess.run(["openssl", "crl", "-in", str(src), "-outform", "DER"],
                         stdout=subprocess.PIPE, check=True).stdout
    der = der[:-1] + bytes([der[-1] ^ 0x01])
    Path(out).write_bytes(der)
    return Path(out)


def drop(path, data):
    """Writes `data` to `path` atomically (temp file in the same directory,
    then rename), so a file watcher never sees half a file."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, path)


def new_ticket_key_line():
    return os.urandom(48).hex()


# --------------------------------------------------------------------------
# Clients


def upload(server, name="agent1", *, ctx=None, session=None, body=b"inventory\n",
           max_version=None, timeout=10.0):
    """One PUT on a fresh connection. Returns (kind, detail, conn-info):
    kind is "response" (detail: Response), "handshake" or "no-response"
    (detail: the error); info is a dict with session, reused, version."""
    if ctx is None:
        ctx = client_context(server.pki, name, max_version=max_version)
    info = {"session": None, "reused": None, "version": None}
    info["error"] = None
    try:
        conn = tls_connect(server, name, ctx=ctx, session=session, timeout=timeout)
    except (ssl.SSLError, OSError) as e:
        info["error"] = e
        return "handshake", repr(e), info
    try:
        info["reused"] = conn.tls.session_reused
        info["version"] = conn.tls.version()
        try:
            conn.send(build_request("PUT", f"/ManageSoftRL/Inventories/{unique_name('ctl')}",
                                    body=body))
            resp = conn.read_response(timeout)
        except (ssl.SSLError, OSError, ConnectionClosed, TimeoutError) as e:
            info["error"] = e
            return "no-response", repr(e), info
        info["session"] = conn.tls.session
        return "response", resp, info
    finally:
        conn.close()


def status_of(result):
    kind, detail, _ = result
    return detail.status if kind == "response" else kind


def assert_admitted(server, name="agent1", **kw):
    r = upload(server, name, **kw)
    assert r[0] == "response" and r[1].status == 201, (
        f"{name} should upload (201), got {r[0]}: {r[1]}\nstderr:\n{server.stderr()[-3000:]}")
    return r


def assert_refused(server, name="agent2", *, alert, **kw):
    """`name`'s upload is refused in the TLS handshake with exactly `alert`
    (its RFC 8446 name: 'certificate_revoked'); an HTTP answer, a timeout,
    a reset or another alert fails. TLS 1.3 clients finish their side of
    the handshake first, so the alert may arrive on the request."""
    r = upload(server, name, **kw)
    kind, detail, info = r
    assert kind != "response", (
        f"{name} should be refused in the TLS handshake, got an HTTP response: {detail}")
    got = alert_name(info["error"])
    assert got == alert, (f"{name} should be refused with {alert}, got {kind}: {detail}\n"
                          f"stderr:\n{server.stderr()[-2000:]}")
    return r


def wait_until(pred, timeout, interval=0.1):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            return v
        time.sleep(interval)


# --------------------------------------------------------------------------
# Metrics


def http_get(port, path, timeout=10):
    """(status, body bytes) of a GET on the loopback admin HTTP server."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$')


def parse_metrics(text):
    """{(name, labels-string): float} of a Prometheus text exposition."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")
