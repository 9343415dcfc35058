"""A real nats-server with JetStream for the drain tests, and a reader of
its stream in raw NATS protocol (no python nats package is installed).

NatsServer(dir) runs `nats-server -c dir/nats.conf` on a loopback port from
helpers.free_port(), with its JetStream store in dir/js, so a stream
survives a restart (kill() then start() again on the same port). start()
returns once the monitor port's /healthz answers 200 (JetStream included).

read_stream(port, stream) fetches every message of the stream through the
JetStream API ($JS.API.STREAM.INFO.<s>, $JS.API.STREAM.MSG.GET.<s>), JSON
over request/reply, and returns them as StreamMsg (subject, headers, body).
uploads_in(msgs) reassembles the uploads (chunks and their final message)
and checks each one's Length and CRC32.
"""

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

from helpers import HOST, free_port

NATS_SERVER = os.environ.get(
    "NATS_SERVER", shutil.which("nats-server") or "/usr/sbin/nats-server")  # Debian: /usr/sbin


class NatsServer:
    def __init__(self, workdir, max_payload=None, port=None, extra=()):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.monitor = free_port()
        self.conf = self.dir / "nats.conf"
        self.log = self.dir / "nats.log"
        lines = [f"listen: {HOST}:{self.port}", f"http: {HOST}:{self.monitor}",
                 f'jetstream {{ store_dir: "{self.dir / "js"}" }}']
        if max_payload:
            lines.append(f"max_payload: {max_payload}")
        lines += list(extra)  # e.g. a tls { } or authorization { } block
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc = None

    @property
    def url(self):
        return f"nats://{HOST}:{self.port}"

    def start(self, timeout=30.0):
        self._log = open(self.log, "ab")
        self.proc = subprocess.Popen([NATS_SERVER, "-c", str(self.conf)],
                                     stdout=self._log, stderr=self._log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"nats-server exited:\n{self.log.read_text()}"
            try:
                url = f"http://{HOST}:{self.monitor}/healthz?js-enabled-only=true"
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)  # polling the readiness endpoint, not standing in for it
        raise AssertionError(f"nats-server not healthy in {timeout} s:\n{self.log.read_text()}")

    def kill(self):
        """SIGKILL: what it had not written is lost, as in a crash."""
        if self.proc:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None
            self._log.close()

    def stop(self):
        if self.proc:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
            self._log.close()


class NatsClient:
    """Just enough of the NATS client protocol for request/reply."""

    def __init__(self, port, timeout=10.0, auth=None):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.buf = b""
        self._line()  # INFO
        opts = {"verbose": False, "pedantic": False, "headers": True, "no_responders": True,
                "protocol": 1}
        if auth:
            opts["user"], opts["pass"] = auth
        self.sock.sendall(b"CONNECT " + json.dumps(opts).encode() + b"\r\nPING\r\n")
        while self._line() != b"PONG":
            pass
        self.sock.sendall(b"SUB _INBOX.test.* 1\r\n")
        self.n = 0

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("nats-server closed the connection")
        self.buf += data

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def request(self, subject, payload):
        self.n += 1
        inbox = f"_INBOX.test.{self.n}"
        body = json.dumps(payload).encode()
        self.sock.sendall(f"PUB {subject} {inbox} {len(body)}\r\n".encode() + body + b"\r\n")
        while True:
            line = self._line()
            if line == b"PING":
                self.sock.sendall(b"PONG\r\n")
                continue
            parts = line.split()
            if parts and parts[0] == b"MSG" and parts[1].decode() == inbox:
                return json.loads(self._exact(int(parts[-1])))
            if parts and parts[0] == b"HMSG" and parts[1].decode() == inbox:
                total = self._exact(int(parts[-1]))
                hlen = int(parts[-2])
                if b"503" in total[:hlen]:
                    raise ConnectionError("no responders: JetStream is not up")
                return json.loads(total[hlen:])
            if parts and parts[0] in (b"MSG", b"HMSG"):
                self._exact(int(parts[-1]))  # a late reply to an earlier request

    def close(self):
        self.sock.close()


class StreamMsg:
    def __init__(self, seq, subject, headers, body):
        self.seq, self.subject, self.headers, self.body = seq, subject, headers, body

    def __repr__(self):
        return f"StreamMsg({self.seq}, {self.subject}, {self.headers}, {len(self.body)} bytes)"


def parse_headers(raw):
    headers = {}
    for line in raw.decode().split("\r\n")[1:]:
        if ": " in line:
            k, v = line.split(": ", 1)
            headers[k] = v
    return headers


def stream_info(port, stream):
    c = NatsClient(port)
    try:
        return c.request(f"$JS.API.STREAM.INFO.{stream}", {})
    finally:
        c.close()


def read_stream(port, stream, auth=None, client=None):
    """Every message of the stream, read one by one; `client` (closed
    here) logs in another way than NatsClient(port, auth)."""
    c = client or NatsClient(port, auth=auth)
    try:
        info = c.request(f"$JS.API.STREAM.INFO.{stream}", {})
        assert "error" not in info, info
        st = info["state"]
        msgs = []
        for seq in range(st["first_seq"], st["last_seq"] + 1) if st["messages"] else []:
            r = c.request(f"$JS.API.STREAM.MSG.GET.{stream}", {"seq": seq})
            if "error" in r:
                continue  # a deleted sequence
            m = r["message"]
            hdrs = parse_headers(base64.b64decode(m["hdrs"])) if m.get("hdrs") else {}
            body = base64.b64decode(m["data"]) if m.get("data") else b""
            msgs.append(StreamMsg(m["seq"], m["subject"], hdrs, body))
        return msgs
    finally:
        c.close()


def uploads_in(msgs):
    """{upload id: (headers, body)} from the stream's messages; asserts every
    Nats-Msg-Id appears once and every upload's Length and CRC32 hold."""
    ids = [m.headers.get("Nats-Msg-Id") for m in msgs]
    dup = {i for i in ids if ids.count(i) > 1}
    assert not dup, f"Nats-Msg-Id more than once in the stream: {sorted(dup)[:10]}"
    chunks = {}
    uploads = {}
    for m in msgs:
        uid = int(m.headers["Upload-Id"])
        if "Chunk" in m.headers:
            chunks.setdefault(uid, {})[int(m.headers["Chunk"])] = m.body
            continue
        body = m.body
        if "Chunks" in m.headers:
            parts = chunks.get(uid, {})
            n = int(m.headers["Chunks"])
            assert sorted(parts) == list(range(n)), f"upload {uid}: chunks {sorted(parts)} of {n}"
            body = b"".join(parts[i] for i in range(n))
        assert len(body) == int(m.headers["Length"]), f"upload {uid}: length"
        assert f"{zlib.crc32(body):08x}" == m.headers["CRC32"], f"upload {uid}: CRC32"
        assert uid not in uploads, f"upload {uid} twice"
        uploads[uid] = (m.headers, body)
    return uploads
