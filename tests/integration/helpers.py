"""Clients for the beacond integration tests: curl, openssl s_client and a
raw HTTP/1.1-over-mutual-TLS client built on Python's ssl module (for crafted
requests that real agents would never send).

Standard library only.
"""

import fcntl
import itertools
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BEACOND = Path(os.environ.get("BEACOND", REPO / "build" / "beacond"))
BEACONCTL = Path(os.environ.get("BEACONCTL", REPO / "build" / "beaconctl"))
DEMO_PKI = REPO / "config" / "demo-pki.sh"

HOST = "127.0.0.1"

# The transport the `server` and `start_server` fixtures run: kernel, or
# dpdk (TapServer; tests/integration/over_dpdk.sh runs pytest for it).
BACKEND = os.environ.get("BEACON_TEST_BACKEND", "kernel")
assert BACKEND in ("kernel", "dpdk"), f"BEACON_TEST_BACKEND={BACKEND!r}: kernel or dpdk"

# Subjects of the two trusted agents CAs, as openssl prints them.
AGENTS_CA_NAME = "CN = Beacon Demo Agents CA, O = beacond demo"
AGENTS_CA2_NAME = "CN = Beacon Demo Agents CA 2, O = beacond demo"
ROGUE_CA_NAME = "CN = Rogue Agents CA, O = somebody else"


def unique_name(prefix="test", ext="ndi"):
    """A file name no other test uses, so a shared server needs no reset."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}.{ext}"


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


# A port the kernel handed out with bind(0) comes from the ephemeral range, so
# between the test closing it and beacond binding it, any client connect() in
# the suite may take it as its source port ("Address already in use" in a CI
# run). Ports are drawn below that range instead, walking from a per-process
# start so one run never hands out a port twice (no TIME_WAIT reuse either).
_PORT_LOW = 12000
_PORT_HIGH = max(_PORT_LOW + 1000, _ephemeral_low() - 1)


def _port_start():
    """Where this process starts drawing. pytest-xdist workers (gw0, gw1...)
    start an eighth of the range apart, so they seldom meet."""
    span = _PORT_HIGH - _PORT_LOW
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw") and worker[2:].isdigit():
        return _PORT_LOW + (int(worker[2:]) % 8) * (span // 8) + os.getpid() % 64
    return _PORT_LOW + (os.getpid() * 7919) % span


_port_next = _port_start()

# A port handed out stays this process's until it exits: a lock on the
# port's byte of one shared file (fcntl record locks go with the process).
# A bind() check alone is not enough when several test processes run at
# once (pytest-xdist workers, two runs on one machine): a test that stops a
# server to restart it on the same port leaves the port free meanwhile,
# another process's server took it, and as beacond binds with SO_REUSEPORT
# the restarted server then shared the port with a stranger (a CI run saw
# clients verify the wrong server's certificate).
_PORT_LOCKS = "/tmp/beacon-test-ports.lock"
_port_lock_fd = None


def _port_reserved(port):
    global _port_lock_fd
    if _port_lock_fd is None:
        _port_lock_fd = os.open(_PORT_LOCKS, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        fcntl.lockf(_port_lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, port)
    except OSError:
        return False  # another process's
    return True


def free_port():
    global _port_next
    for _ in range(_PORT_HIGH - _PORT_LOW):
        port = _port_next
        _port_next = _PORT_LOW + (_port_next + 1 - _PORT_LOW) % (_PORT_HIGH - _PORT_LOW)
        if not _port_reserved(port):
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue  # in use outside the suite: stays reserved, never tried again
            return port
    raise RuntimeError(f"no free port in {_PORT_LOW}-{_PORT_HIGH}")


# --------------------------------------------------------------------------
# The server under test


DEFAULT_CONFIG = {
    "server": {
        "workers": "2",
        "backend": "kernel",
    },
    "tls": {
        "advertise": "all",
        "require_client_auth_eku": "yes",
        "require_digital_signature": "yes",
        "identity": "cn",
    },
    "limits": {
        "max_header_bytes": "16k",
        "max_headers": "64",
        "max_target": "2k",
        "max_body": "1G",
        "header_timeout": "10s",
        "body_timeout": "30s",
        "idle_timeout": "60s",
        "handshake_timeout": "10s",
        "max_connections": "15000",
    },
    "store": {
        "group_max": "256",
        "group_wait": "1ms",
    },
}

DOWNLOAD_FILES = {
    "policy.xml": b'<?xml version="1.0"?>\n<policy name="demo">\n'
    + b"  <schedule every=\"1h\"/>\n</policy>\n",
    "sub/dir/file.bin": bytes(range(256)) * 64 + b"\x00tail",
}

# A file next to (outside) the download directory; traversal must never
# reach it.
SECRET = b"TOP-SECRET-beacond-test-marker\n"


def render_config(sections):
    lines = []
    for sec, kv in sections.items():
        lines.append(f"[{sec}]")
        for k, v in kv.items():
            if v is not None:
                lines.append(f"{k} = {v}")
        lines.append("")
    return "\n".join(lines)


class NotifySocket:
    """The service manager's end of sd_notify(3): an AF_UNIX datagram socket
    that beacond finds through NOTIFY_SOCKET, as systemd's own. A thread
    takes every datagram as it comes (beacond's sd_notify would block on a
    full queue) into `messages`: one dict per datagram, KEY -> value.

    The socket sits in a directory of its own under /tmp, open to every
    user, like /run/systemd/notify: beacond tells READY=1 after it dropped
    privileges ([server] user), and pytest's own folders are 0700 root. A
    path rather than an abstract name, which `ip netns exec` would hide."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="beacond-notify-")
        os.chmod(self.dir, 0o755)
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        os.chmod(self.path, 0o777)
        self.sock.settimeout(0.2)
        self.messages = []
        self.closed = False
        self.cond = threading.Condition()
        self._closing = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        while not self._closing.is_set():
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            fields = {}
            for line in data.decode(errors="replace").splitlines():
                k, sep, v = line.partition("=")
                if sep:
                    fields[k] = v
            with self.cond:
                self.messages.append(fields)
                self.cond.notify_all()

    def count(self):
        with self.cond:
            return len(self.messages)

    def wait_for(self, key, value="1", start=0, timeout=30.0, still=lambda: True):
        """Waits for a message from index `start` on with KEY=value; returns
        its index, or None when `timeout` passes or `still()` turns False
        (the process died)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for i in range(start, len(self.messages)):
                    if self.messages[i].get(key) == value:
                        return i
                start = len(self.messages)
                left = deadline - time.monotonic()
                if left <= 0 or not still():
                    return None
                self.cond.wait(min(left, 0.1))

    def close(self):
        """Stops listening; `messages` stays for the test to read."""
        if self.closed:
            return
        self.closed = True
        self._closing.set()
        self._reader.join()
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def where_it_hangs(pid, stderr):
    """What a process that did not stop was doing, for the failure's
    message: the mapping of each pc a sanitizer report named (a report
    that never finished, seen once under load, had no stack), and every
    thread's stack from gdb where it is installed."""
    out = []
    try:
        maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
    except OSError:
        maps = []
    for pc in sorted(set(re.findall(r"pc 0x([0-9a-f]+)", stderr))):
        for line in maps:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo <= int(pc, 16) < hi:
                out.append(f"pc 0x{pc} is in {line}")
    gdb = shutil.which("gdb")
    if gdb:
        try:
            p = subprocess.run([gdb, "-p", str(pid), "-batch", "-ex", "thread apply all bt 40"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
            out.append("gdb, every thread:\n" + p.stdout.decode(errors="replace")[-30000:])
        except subprocess.TimeoutExpired:
            out.append("gdb gave no answer within 120 s")
    return "\n".join(out)


class Server:
    """One beacond process with its own directory, port, data and config.

    start() returns once beacond told READY=1 through NOTIFY_SOCKET, as it
    tells systemd: every listener, the control socket and the admin
    listener are up and privileges are dropped. `notify` keeps what it told
    (RELOADING=1, READY=1, STOPPING=1) for the tests that look, also after
    stop() or a failed start() closed it."""

    def __init__(self, workdir, pki, overrides=None, raw_config=None, host=HOST):
        self.dir = Path(workdir)
        self.pki = Path(pki)
        self.host = host
        self.port = free_port()
        self.data_dir = self.dir / "data"
        self.download_dir = self.dir / "download"
        self.control_socket = self.dir / "control.sock"
        self.conf = self.dir / "beacond.conf"
        self.stderr_path = self.dir / "beacond.stderr"
        self.proc = None
        self.notify = None
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for rel, content in DOWNLOAD_FILES.items():
            p = self.download_dir / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(content)
        (self.dir / "secret.txt").write_bytes(SECRET)

        sections = {s: dict(kv) for s, kv in DEFAULT_CONFIG.items()}
        sections["server"].update({
            "listen": f"{self.host}:{self.port}",
            "data_dir": str(self.data_dir),
            "download_dir": str(self.download_dir),
            "control_socket": str(self.control_socket),
        })
        sections["tls"].update({
            "cert": str(self.pki / "server.pem"),
            "key": str(self.pki / "server.key"),
            "issuers": str(self.pki / "issuers"),
        })
        for sec, kv in (overrides or {}).items():
            sections.setdefault(sec, {}).update(kv)
        self.config_text = raw_config if raw_config is not None else render_config(sections)
        self.conf.write_text(self.config_text)

    # -- process -----------------------------------------------------------

    def stderr(self):
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def command(self):
        return [str(BEACOND), "-c", str(self.conf)]

    def start(self, timeout=30.0):
        """Starts beacond and waits for its READY=1. `timeout` is only an
        upper bound for a start that never comes (a sanitizer build on a
        busy machine takes seconds)."""
        assert BEACOND.exists(), f"beacond binary not found at {BEACOND} (build it, or set BEACOND)"
        if self.notify is None or self.notify.closed:
            self.notify = NotifySocket()
        since = self.notify.count()
        self._stderr_file = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(self.command(),
                                     stdin=subprocess.DEVNULL,
                                     stdout=self._stderr_file,
                                     stderr=self._stderr_file,
                                     env=dict(os.environ, NOTIFY_SOCKET=self.notify.path))
        ready = self.notify.wait_for("READY", start=since, timeout=timeout,
                                     still=lambda: self.proc.poll() is None)
        if ready is None:
            rc = self.proc.poll()
            if rc is None:
                self.proc.kill()
                self.proc.wait()
            self._stderr_file.close()
            self.notify.close()
            raise AssertionError(
                (f"beacond exited with status {rc} during start-up" if rc is not None else
                 f"beacond did not tell READY=1 within {timeout} s")
                + f"\nconfig:\n{self.config_text}\nstderr:\n{self.stderr()}")
        self.became_ready()
        return self

    def became_ready(self):
        """What the test's side needs once beacond is ready (nothing here)."""

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def assert_alive(self):
        assert self.proc is not None, "server not started"
        rc = self.proc.poll()
        assert rc is None, f"beacond died (status {rc})\nstderr:\n{self.stderr()}"

    def stop(self, timeout=60.0):
        """SIGTERM; beacond must exit with status 0 within `timeout`: a
        bound for a stop that never comes, not for how fast it is. Its last
        step, the store's close, waits for the disk, which a machine busy
        with other writes can hold for many seconds (ext4 commits every
        writer's data with an fdatasync): a loaded CI run saw 10 s pass."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        try:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    where = where_it_hangs(proc.pid, self.stderr())
                    proc.kill()
                    proc.wait()
                    raise AssertionError(
                        f"beacond did not exit within {timeout} s of SIGTERM\n"
                        f"stderr:\n{self.stderr()}\n{where}")
            assert proc.returncode == 0, (
                f"beacond exited with status {proc.returncode} after SIGTERM\n"
                f"stderr:\n{self.stderr()}")
        finally:
            self._stderr_file.close()
            self.notify.close()

    # -- beaconctl -------------------------------------------------------------

    def beaconctl(self, *args, check=True, timeout=120):
        """Runs `beaconctl --data-dir DATA ARGS...`; stdout is bytes.
        `timeout` bounds a beaconctl that never returns: loaded CI runs,
        their disk stalled (I/O pressure 80% over five minutes), saw
        30 s pass."""
        assert BEACONCTL.exists(), f"beaconctl not found at {BEACONCTL} (build it, or set BEACONCTL)"
        cmd = [str(BEACONCTL), "--data-dir", str(self.data_dir), *map(str, args)]
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=timeout)
        if check:
            assert p.returncode == 0, (
                f"{' '.join(cmd)} exited {p.returncode}\n"
                f"stderr: {p.stderr.decode(errors='replace')}")
        return p

    def uploads(self, device=None):
        """Every stored upload (of one device), as dicts from --json lines."""
        args = ["--json", "uploads", "list", "--limit", "0"]  # every page
        if device is not None:
            args += ["--device", device]
        out = self.beaconctl(*args).stdout.decode()
        rows = []
        for line in out.splitlines():
            line = line.strip()
            if line:
                rows.append(json.loads(line))
        return rows

    def find_upload(self, name, device="agent1.example"):
        rows = [r for r in self.uploads(device) if r.get("name") == name]
        assert len(rows) == 1, (
            f"expected exactly one upload named {name!r} for {device}, "
            f"found {rows}")
        return rows[0]

    def upload_bytes(self, upload_id):
        return self.beaconctl("uploads", "get", upload_id).stdout

    def url(self, path):
        return f"https://{self.host}:{self.port}{path}"

    def curl_args(self):
        """What curl needs to reach url()."""
        return []


def listen_queue(port):
    """Connections the kernel holds in the accept queue of every socket
    listening on `port` (for a LISTEN socket, /proc/net/tcp's rx_queue is
    its accept queue length)."""
    waiting = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                local, state, queues = fields[1], fields[3], fields[4]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    waiting += int(queues.split(":")[1], 16)
    return waiting


def mount_tmpfs(path, size):
    """A tmpfs of `size` (mount's syntax: "16m") on `path`, for a small
    disk; skips the test where it cannot be mounted (not root)."""
    import pytest
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0750",
                        "tmpfs", str(path)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs on {path}: {p.stdout.decode(errors='replace')}")


def umount(path):
    p = subprocess.run(["umount", str(path)], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=30)
    if p.returncode != 0:
        subprocess.run(["umount", "-l", str(path)], timeout=30)
        raise AssertionError(f"umount {path}: {p.stdout.decode(errors='replace')}")


def sh(*cmd, check=True, timeout=30):
    p = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout)
    if check:
        assert p.returncode == 0, (f"{' '.join(map(str, cmd))} exited {p.returncode}: "
                                   f"{p.stderr.decode(errors='replace')}")
    return p


class TapServer(Server):
    """beacond with backend = dpdk: its own TCP stack, address `cidr`, on a
    DPDK tap PMD (an EAL without hugepages or PCI, its runtime files under
    the tap's name). The tap's kernel side, interface `tap`, appears in the
    namespace beacond runs in: `ns` (entered with `ip netns exec`), or this
    process's own when `ns` is None. At each start that interface gets
    `peer_cidr` and comes up; from that namespace beacond is at `host`."""

    def __init__(self, workdir, pki, tap, cidr, peer_cidr, *, ns=None, overrides=None,
                 raw_config=None):
        self.ns = ns
        self.tap = tap
        self.peer_cidr = peer_cidr
        conf = {
            "server": {"backend": "dpdk", "workers": "2"},
            "dpdk": {
                "eal_args": (f"--no-huge -m 256 --no-pci --vdev=net_tap0,iface={tap} -l 0 "
                             f"--file-prefix {tap} --log-level=warning"),
                "port": "0",
                "address": cidr,
                "mbufs": "16383",
            },
        }
        for sec, kv in (overrides or {}).items():
            conf.setdefault(sec, {}).update(kv)
        super().__init__(workdir, pki, conf, raw_config, host=cidr.split("/")[0])

    def in_ns(self, *cmd):
        """`cmd` run in beacond's namespace."""
        return (["ip", "netns", "exec", self.ns] if self.ns else []) + [str(c) for c in cmd]

    def command(self):
        return self.in_ns(*super().command())

    def start(self, timeout=60.0):
        try:
            return super().start(timeout)
        except BaseException:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            raise

    def became_ready(self):
        """beacond is ready, and the EAL made the tap long before: its
        kernel side gets the peer's address and comes up."""
        sh(*self.in_ns("ip", "addr", "add", self.peer_cidr, "dev", self.tap))
        sh(*self.in_ns("ip", "link", "set", self.tap, "up"))
        sh(*self.in_ns("ip", "link", "set", "lo", "up"))

    # The demo server certificate names localhost, 127.0.0.1 and 198.18.0.1.
    def url(self, path):
        return f"https://localhost:{self.port}{path}"

    def curl_args(self):
        return ["--resolve", f"localhost:{self.port}:{self.host}"]

    def stop(self, timeout=60.0):
        try:
            super().stop(timeout)
        finally:
            shutil.rmtree(f"/var/run/dpdk/{self.tap}", ignore_errors=True)


_tap_numbers = itertools.count()


def new_server(workdir, pki, overrides=None, raw_config=None):
    """A Server of the BACKEND under test. Over DPDK each gets a tap of its
    own in this process's namespace, and a /24 of 198.18.0.0/15: beacond
    198.18.N.1, the tap's kernel side 198.18.N.2."""
    if BACKEND == "kernel":
        return Server(workdir, pki, overrides, raw_config)
    n = next(_tap_numbers) % 254 + 1
    return TapServer(workdir, pki, f"bt{os.getpid() % 100000:05d}{n}", f"198.18.{n}.1/24",
                     f"198.18.{n}.2/24", overrides=overrides, raw_config=raw_config)


# --------------------------------------------------------------------------
# curl


def curl(server, *args, name="agent1", timeout=120):
    """Runs curl against `server` as agent `name` (None: no certificate)."""
    pki = server.pki
    cmd = ["curl", "-sS", "--max-time", str(timeout - 5), *server.curl_args(),
           "--cacert", str(pki / "server-ca.pem")]
    if name is not None:
        cmd += ["--cert", str(pki / f"{name}.pem"), "--key", str(pki / f"{name}.key")]
    cmd += [str(a) for a in args]
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=timeout)


def curl_upload(server, cert, key, path, data, extra_args=(), method="PUT"):
    """Uploads `data` (bytes or a file path) with curl: PUT with -T, POST
    with --data-binary. Returns (HTTP status as int, 0 when none; the
    CompletedProcess)."""
    tmp = None
    if isinstance(data, (bytes, bytearray)):
        tmp = tempfile.NamedTemporaryFile(delete=False)
        tmp.write(data)
        tmp.close()
        src = tmp.name
    else:
        src = str(data)
    try:
        cmd = ["curl", "-sS", "--max-time", "120", *server.curl_args(),
               "--cacert", str(server.pki / "server-ca.pem"),
               "-o", "/dev/null", "-w", "%{http_code}"]
        if cert is not None:
            cmd += ["--cert", str(cert), "--key", str(key)]
        if method == "PUT":
            cmd += ["-T", src]
        elif method == "POST":
            cmd += ["--data-binary", "@" + src]
        else:
            raise ValueError(method)
        cmd += [*map(str, extra_args), server.url(path)]
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=130)
    finally:
        if tmp is not None:
            os.unlink(tmp.name)
    out = p.stdout.decode().strip()
    code = int(out) if out.isdigit() else 0
    return code, p


# --------------------------------------------------------------------------
# openssl s_client


def http_get_close(path="/ManageSoftDL/policy.xml"):
    return (f"GET {path} HTTP/1.1\r\nHost: localhost\r\n"
            f"Connection: close\r\n\r\n").encode()


def s_client(server, *args, name="agent1", input=None, timeout=20):
    """Runs `openssl s_client` against `server` as agent `name` (None: no
    certificate). Sends `input` (by default a GET with Connection: close)
    and waits for the server to close (-ign_eof), so TLS 1.3 tickets and
    alerts sent after the handshake arrive too.
    Returns (stdout+stderr as text, return code)."""
    pki = server.pki
    cmd = ["openssl", "s_client", "-connect", f"{server.host}:{server.port}",
           "-servername", "localhost", "-CAfile", str(pki / "server-ca.pem")]
    if name is not None:
        cmd += ["-cert", str(pki / f"{name}.pem"), "-key", str(pki / f"{name}.key")]
    if input is None:
        input = http_get_close()
    cmd.append("-ign_eof")
    cmd += [str(a) for a in args]
    p = subprocess.run(cmd, input=input, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=timeout)
    return p.stdout.decode(errors="replace"), p.returncode


def ca_names(s_client_output):
    """The CA names s_client printed under 'Acceptable client certificate CA
    names', or None when that section is absent."""
    lines = s_client_output.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "Acceptable client certificate CA names":
            names = []
            for nl in lines[i + 1:]:
                if " = " not in nl or nl.startswith(("Requested", "Client Certificate",
                                                     "Shared", "Peer", "---")):
                    break
                names.append(nl.strip())
            return names
    return None


# --------------------------------------------------------------------------
# Raw HTTP over mutual TLS (Python ssl)


def client_context(pki, name="agent1", *, min_version=None, max_version=None,
                   ciphers=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(Path(pki) / "server-ca.pem"))
    if name is not None:
        ctx.load_cert_chain(str(Path(pki) / f"{name}.pem"), str(Path(pki) / f"{name}.key"))
    if ciphers is not None:
        ctx.set_ciphers(ciphers)
    if min_version is not None:
        ctx.minimum_version = min_version
    if max_version is not None:
        ctx.maximum_version = max_version
    return ctx


class Response:
    def __init__(self, version, status, reason, headers, body=b""):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (name lower-case, value)
        self.body = body

    def header(self, name):
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def __repr__(self):
        return (f"<Response {self.version} {self.status} {self.reason!r} "
                f"{self.headers} body={self.body[:200]!r}>")


class ConnectionClosed(Exception):
    pass


class HttpConn:
    """A buffered HTTP/1.1 client connection over a (TLS) socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.eof = False

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        """Reads more bytes into buf. False on EOF; raises TimeoutError."""
        if self.eof:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no data from server in time")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("no data from server in time") from None
        except ssl.SSLZeroReturnError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _read_line(self, deadline):
        while b"\r\n" not in self.buf:
            if not self._fill(deadline):
                raise ConnectionClosed(f"closed mid-line; got {self.buf!r}")
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _read_exact(self, n, deadline):
        while len(self.buf) < n:
            if not self._fill(deadline):
                raise ConnectionClosed(f"closed after {len(self.buf)} of {n} body bytes")
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_head(self, timeout=10.0):
        """Reads a status line and headers. ConnectionClosed if the server
        closed before a whole head."""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            if not self._fill(deadline):
                raise ConnectionClosed(f"closed before a response head; got {self.buf!r}")
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        parts = lines[0].decode("latin-1").split(" ", 2)
        assert len(parts) >= 2 and parts[0].startswith("HTTP/1."), f"bad status line {lines[0]!r}"
        version, status = parts[0], int(parts[1])
        reason = parts[2] if len(parts) > 2 else ""
        headers = []
        for ln in lines[1:]:
            k, _, v = ln.decode("latin-1").partition(":")
            headers.append((k.strip().lower(), v.strip()))
        return Response(version, status, reason, headers)

    def read_response(self, timeout=10.0, head_request=False):
        """Reads one response (1xx responses are returned as they are)."""
        deadline = time.monotonic() + timeout
        resp = self.read_head(timeout)
        if 100 <= resp.status < 200 or resp.status in (204, 304) or head_request:
            return resp
        te = (resp.header("transfer-encoding") or "").lower()
        cl = resp.header("content-length")
        if "chunked" in te:
            body = b""
            while True:
                size = int(self._read_line(deadline).split(b";")[0], 16)
                if size == 0:
                    while self._read_line(deadline) != b"":
                        pass
                    break
                body += self._read_exact(size, deadline)
                assert self._read_line(deadline) == b""
            resp.body = body
        elif cl is not None:
            resp.body = self._read_exact(int(cl), deadline)
        else:
            while self._fill(deadline):
                pass
            resp.body, self.buf = self.buf, b""
        return resp

    def quiet_for(self, seconds):
        """True when the server sends nothing and keeps the connection open
        for `seconds`: an order check (the test's mark came before the
        server's answer), used for timers with a one-sided bound. Bytes that
        arrive are kept for the next read."""
        deadline = time.monotonic() + seconds
        before = len(self.buf)
        try:
            while self._fill(deadline):
                pass
        except TimeoutError:
            return len(self.buf) == before
        except (ConnectionResetError, ssl.SSLError, OSError):
            return False
        return False

    def wait_closed(self, timeout):
        """Reads until the server closes. Returns (closed?, bytes read)."""
        deadline = time.monotonic() + timeout
        try:
            while self._fill(deadline):
                pass
        except TimeoutError:
            return False, self.buf
        except (ConnectionResetError, ssl.SSLError, OSError):
            return True, self.buf
        return True, self.buf

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def tls_connect(server, name="agent1", *, ctx=None, session=None, timeout=10.0,
                min_version=None, max_version=None):
    """Opens a mutual-TLS connection to `server` as agent `name`."""
    if ctx is None:
        ctx = client_context(server.pki, name, min_version=min_version,
                             max_version=max_version)
    raw = socket.create_connection((server.host, server.port), timeout=timeout)
    try:
        tls = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
    except BaseException:
        raw.close()
        raise
    conn = HttpConn(tls)
    conn.tls = tls
    return conn


def build_request(method, target, headers=(), body=b"", content_length=True,
                  host=True):
    """Bytes of one request. `target` may be bytes (sent as is)."""
    if isinstance(target, str):
        target = target.encode("latin-1")
    out = method.encode() + b" " + target + b" HTTP/1.1\r\n"
    if host:
        out += b"Host: localhost\r\n"
    framed = any((h if isinstance(h, str) else h.decode("latin-1")).lower().startswith(
        ("content-length:", "transfer-encoding:")) for h in headers)
    if content_length and not framed and body is not None and method in ("PUT", "POST"):
        out += b"Content-Length: %d\r\n" % len(body)
    for h in headers:
        out += (h.encode("latin-1") if isinstance(h, str) else h) + b"\r\n"
    out += b"\r\n"
    if body:
        out += body
    return out


def request(server, method, target, body=b"", headers=(), name="agent1",
            timeout=10.0, **kw):
    """One request on a fresh connection; returns the Response."""
    with tls_connect(server, name) as c:
        c.send(build_request(method, target, headers, body, **kw))
        return c.read_response(timeout, head_request=(method == "HEAD"))


def chunked(body, sizes):
    """Chunked encoding of body with the given chunk sizes (cycled)."""
    out, i, k = b"", 0, 0
    while i < len(body):
        n = sizes[k % len(sizes)]
        k += 1
        piece = body[i:i + n]
        out += b"%x\r\n" % len(piece) + piece + b"\r\n"
        i += n
    return out + b"0\r\n\r\n"


def attempt_upload(server, name, *, max_version=None, ctx=None, path=None,
                   body=b"rejected upload body\n"):
    """Tries to upload as `name` (None: no certificate) and reports what
    the client saw: ("handshake", error), ("no-response", detail) or
    ("response", Response). A rejected certificate must never give
    ("response", ...)."""
    if ctx is None:
        ctx = client_context(server.pki, name, max_version=max_version)
    path = path or f"/ManageSoftRL/Inventories/{unique_name('reject')}"
    try:
        conn = tls_connect(server, name, ctx=ctx)
    except (ssl.SSLError, OSError) as e:
        return "handshake", repr(e)
    try:
        try:
            conn.send(build_request("PUT", path, body=body))
            resp = conn.read_response(10.0)
        except (ssl.SSLError, OSError, ConnectionClosed) as e:
            return "no-response", repr(e)
        return "response", resp
    finally:
        conn.close()
