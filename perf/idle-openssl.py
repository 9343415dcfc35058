#!/usr/bin/env python3
"""Server RSS per idle mutual-TLS connection, with two clients.

    perf/idle-openssl.py [--conns 2000] [--clients agentsim,openssl] [--tls 1.3]
                         [--at-once] [--somaxconn 65535]

For each client, a freshly started beacond (one worker, as perf/bench.sh's
idle scenario) is read for its RSS (/proc/PID/status VmRSS), then N
connections are opened and held idle, each with its own agent certificate,
and the RSS is read again once beacond counts every handshake:

  agentsim  perf/agentsim --mode idle (wolfSSL client, P-256 key share)
  openssl   this script: Python's ssl module, i.e. OpenSSL, with its
            default ClientHello (X25519 key share, AES-256-GCM first)

Both use the same agent certificates (agentsim's cache, perf/out/agents).
Prints one line per client and the KiB per connection. Needs build/beacond
and build/perf/agentsim (ninja -C build).
"""

import argparse
import json
import os
import resource
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import selectors
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "perf" / "out"


def free_port():
    """A port free now, below 12000: the test suite draws its servers'
    ports from 12000 up (tests/integration/helpers.py), so a benchmark
    beside a test run never takes one a test was given."""
    for port in range(10000 + os.getpid() % 1500, 12000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port")


PORT = free_port()
WORKER_CPU = "0"


def log(msg):
    print(f"idle-openssl: {msg}", file=sys.stderr, flush=True)


def rss_kib(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def wait_for(what, pred, timeout=300):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


class Beacond:
    def __init__(self, run, args):
        self.run = run
        self.args = args
        self.sock = run / "beacond.sock"
        data = run / "data"
        dl = run / "dl"
        data.mkdir()
        dl.mkdir()
        pki = OUT / "pki"
        conf = run / "beacond.conf"
        conf.write_text(f"""[server]
listen = 127.0.0.1:{PORT}
workers = 1
data_dir = {data}
download_dir = {dl}
control_socket = {self.sock}

[tls]
cert = {pki}/server.pem
key = {pki}/server.key
issuers = {pki}/agents-ca.pem

[limits]
max_connections = 19000

[log]
access = no
""")
        cmd = ["taskset", "-c", WORKER_CPU] + (args.wrap.split() if args.wrap else [])
        cmd += [str(args.beacond), "-c", str(conf)]
        self.log = open(run / "beacond.log", "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     preexec_fn=lambda: resource.setrlimit(
                                         resource.RLIMIT_NOFILE, (20000, 20000)))
        wait_for("beacond's ready line",
                 lambda: b": ready: listening on" in (run / "beacond.log").read_bytes()
                 or self.proc.poll() is not None, 60)
        if self.proc.poll() is not None:
            raise RuntimeError((run / "beacond.log").read_text())
        self.pid = self.server_pid()

    def server_pid(self):
        """beacond's own pid (under taskset or a --wrap command)."""
        out = subprocess.run(["pgrep", "-f", f"-c {self.run}/beacond.conf"],
                             capture_output=True, text=True).stdout.split()
        for pid in out:
            exe = os.path.realpath(f"/proc/{pid}/exe")
            if exe == str(Path(self.args.beacond).resolve()):
                return int(pid)
        return self.proc.pid

    def stats(self):
        out = subprocess.run([str(self.args.beaconctl), "--socket", str(self.sock), "--json",
                              "stats"], capture_output=True, text=True, check=True).stdout
        return json.loads(out)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def agent_files(n):
    """PEM files for the first n agents of agentsim's cache: one
    (cert, key) pair per agent."""
    cache = OUT / "agents" / "agents-p256.bin"
    blob = cache.read_bytes()
    count = struct.unpack_from("<I", blob, 8)[0]
    if count < n:
        raise RuntimeError(f"{cache} holds {count} agents, {n} wanted")
    d = OUT / "agents-pem"
    d.mkdir(exist_ok=True)
    off, files = 48, []
    for i in range(n):
        clen, klen = struct.unpack_from(">HH", blob, off)
        off += 4
        cert, key = blob[off:off + clen], blob[off + clen:off + clen + klen]
        off += clen + klen
        cp, kp = d / f"agent-{i + 1:06d}.pem", d / f"agent-{i + 1:06d}.key"
        if not cp.exists():
            cp.write_text(ssl.DER_cert_to_PEM_cert(cert))
            b64 = ssl.DER_cert_to_PEM_cert(key).split("\n")[1:-2]
            kp.write_text("-----BEGIN EC PRIVATE KEY-----\n" + "\n".join(b64) +
                          "\n-----END EC PRIVATE KEY-----\n")
        files.append((cp, kp))
    return files


def agentsim_cmd(args, n, ready=None):
    cmd = ["taskset", "-c", "1", str(args.agentsim), "--mode", "idle", "--tls", args.tls,
           "--concurrency", str(n), "--duration", "600", "--quiet", "--certs", str(n),
           "--ca-cert", str(OUT / "pki" / "agents-ca.pem"),
           "--ca-key", str(OUT / "pki" / "agents-ca.key"), "--cache", str(OUT / "agents"),
           f"https://127.0.0.1:{PORT}"]
    if ready:
        cmd += ["--ready-file", str(ready)]
    return cmd


def hold_agentsim(args, srv, run):
    ready = run / "idle.ready"
    sim = subprocess.Popen(agentsim_cmd(args, args.conns, ready), stdout=subprocess.DEVNULL,
                           preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE,
                                                                 (20000, 20000)))
    wait_for("agentsim's ready file", lambda: ready.exists() or sim.poll() is not None)
    return lambda: (sim.send_signal(signal.SIGTERM), sim.wait())


def upload(tls, size):
    """One PUT of size bytes on the connection, and its 201, before idling."""
    name = f"idle-{os.getpid()}-{tls.fileno()}-{time.monotonic_ns()}.ndi"
    tls.sendall(f"PUT /ManageSoftRL/Inventories/{name} HTTP/1.1\r\nHost: localhost\r\n"
                f"Content-Length: {size}\r\n\r\n".encode() + os.urandom(size))
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = tls.recv(4096)
        if not chunk:
            raise RuntimeError("closed before the upload's answer")
        head += chunk
    if not head.startswith(b"HTTP/1.1 201"):
        raise RuntimeError(f"upload answered {head[:40]!r}")


def client_context(cert, key, version):
    """An OpenSSL client context presenting one agent's certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(OUT / "pki" / "server-ca.pem"))
    ctx.load_cert_chain(str(cert), str(key))
    ctx.minimum_version = ctx.maximum_version = version
    return ctx


def handshake_at_once(args, version):
    """Every connection's ClientHello sent before any handshake ends, as a
    fleet reconnecting at once: beacond holds up to max_handshakes_in_progress
    handshakes at the same time."""
    # Every context first (loading thousands of keys takes longer than
    # beacond's handshake timeout, 10 s), then every connection with its
    # ClientHello, in about a second.
    contexts = [client_context(cert, key, version) for cert, key in agent_files(args.conns)]
    pending = {}
    for ctx in contexts:
        raw = socket.create_connection(("127.0.0.1", PORT), timeout=120)
        raw.setblocking(False)
        tls = ctx.wrap_socket(raw, server_hostname="localhost",
                              do_handshake_on_connect=False)
        try:
            tls.do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass
        pending[tls.fileno()] = tls
    done = []
    sel = selectors.DefaultSelector()
    for tls in pending.values():
        sel.register(tls, selectors.EVENT_READ)
    end = time.monotonic() + 600
    while pending:
        for fd, tls in list(pending.items()):
            try:
                tls.do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                continue
            sel.unregister(tls)
            done.append(pending.pop(fd))
        if time.monotonic() > end:
            raise RuntimeError(f"{len(pending)} handshakes did not end")
        sel.select(1.0)
    return done


def hold_openssl(args, srv, run):
    """Opens the connections with --in-flight handshakes at once (threads:
    Python's ssl releases the GIL inside OpenSSL's handshake)."""
    version = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}[args.tls]

    def connect(files):
        ctx = client_context(*files, version)
        raw = socket.create_connection(("127.0.0.1", PORT), timeout=120)
        try:
            tls = ctx.wrap_socket(raw, server_hostname="localhost")
            if args.put is not None:
                upload(tls, args.put)
            return tls
        except BaseException:
            raw.close()
            raise

    if args.at_once:
        conns = handshake_at_once(args, version)
    else:
        with ThreadPoolExecutor(args.in_flight) as pool:
            conns = list(pool.map(connect, agent_files(args.conns)))

    def close():
        for c in conns:
            c.close()
    return close


def measure(args, client):
    with tempfile.TemporaryDirectory(prefix="idle-openssl.") as tmp:
        run = Path(tmp)
        srv = Beacond(run, args)
        done = f"handshakes_tls{args.tls.replace('.', '')}"
        try:
            before = rss_kib(srv.pid)
            anon0 = rss_kib(srv.pid, "RssAnon")
            release = {"agentsim": hold_agentsim, "openssl": hold_openssl}[client](args, srv, run)
            try:
                try:
                    wait_for("beacond's handshake count",
                             lambda: srv.stats()[done] >= args.conns)
                except RuntimeError as e:
                    log = (run / "beacond.log").read_text(errors="replace")
                    raise RuntimeError(f"{e}: {srv.stats()}\n{log[-3000:]}") from None
                st = srv.stats()
                if st["connections_open"] != args.conns:
                    raise RuntimeError(f"{st['connections_open']} connections open, "
                                       f"{args.conns} expected")
                after = rss_kib(srv.pid)
                anon1 = rss_kib(srv.pid, "RssAnon")
                if args.inspect:
                    subprocess.run(args.inspect.replace("PID", str(srv.pid)), shell=True)
            finally:
                release()
        finally:
            srv.stop()
    per = (after - before) / args.conns
    print(f"{client:8} TLS {args.tls}: {args.conns} idle connections, RSS {before} -> "
          f"{after} KiB: {per:.1f} KiB per connection (anonymous memory alone: "
          f"{(anon1 - anon0) / args.conns:.1f})", flush=True)
    return per


def in_own_namespace(somaxconn):
    """Runs this script again inside a fresh network namespace (its own
    loopback, accept queue and SYN backlog of `somaxconn`); returns its exit
    status."""
    ns = f"beacon-idle-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw",
                        f"net.core.somaxconn={somaxconn}",
                        f"net.ipv4.tcp_max_syn_backlog={somaxconn}"], check=True)
        env = dict(os.environ, IDLE_OPENSSL_NETNS=ns)
        return subprocess.run(["ip", "netns", "exec", ns, sys.executable,
                               os.path.abspath(__file__)] + sys.argv[1:], env=env).returncode
    finally:
        subprocess.run(["ip", "netns", "del", ns])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--conns", type=int, default=2000)
    p.add_argument("--clients", default="agentsim,openssl")
    p.add_argument("--in-flight", type=int, default=64,
                   help="openssl: handshakes at once (agentsim's idle mode: 64)")
    p.add_argument("--put", type=int, metavar="BYTES",
                   help="openssl: one PUT of BYTES on each connection before it idles")
    p.add_argument("--at-once", action="store_true",
                   help="openssl: send every ClientHello before finishing any handshake")
    p.add_argument("--inspect", metavar="CMD",
                   help="shell command run while the connections are held (PID: beacond's)")
    p.add_argument("--tls", default="1.3", choices=["1.2", "1.3"])
    p.add_argument("--beacond", default=str(ROOT / "build" / "beacond"))
    p.add_argument("--beaconctl", default=str(ROOT / "build" / "beaconctl"))
    p.add_argument("--agentsim", default=str(ROOT / "build" / "perf" / "agentsim"))
    p.add_argument("--wrap", help="command beacond runs under (e.g. 'heaptrack -o F')")
    p.add_argument("--somaxconn", type=int, metavar="N",
                   help="run in a network namespace of its own whose accept queue "
                        "holds N (root): the default 4,096 resets arrivals past it "
                        "with --at-once")
    args = p.parse_args()
    if args.somaxconn and "IDLE_OPENSSL_NETNS" not in os.environ:
        sys.exit(in_own_namespace(args.somaxconn))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    subprocess.run(["bash", str(ROOT / "config" / "demo-pki.sh"), str(OUT / "pki")], check=True,
                   stdout=subprocess.DEVNULL)
    cache = OUT / "agents" / "agents-p256.bin"
    if not cache.exists() or struct.unpack_from("<I", cache.read_bytes(), 8)[0] < args.conns:
        log(f"making {args.conns} agent certificates in {cache.parent}")
        # agentsim makes its cache before connecting; nobody listens here
        subprocess.run(agentsim_cmd(args, args.conns)[3:] + ["--duration", "1"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for client in args.clients.split(","):
        measure(args, client)


if __name__ == "__main__":
    main()
