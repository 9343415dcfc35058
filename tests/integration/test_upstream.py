"""A parent over HTTPS (issue 17 items 3 and 4): an edge beacond forwards
its uploads to a parent beacond ([upstream]), two real processes.

PKI roles: the edge's agents are agent1/agent2 (Agents CA); the edge's own
client certificate for the parent is agent-ca2 (Agents CA 2), listed by
fingerprint in the parent's [upstream] children. Both servers use the demo
server certificate (CN localhost), which the edge checks against
server-ca.pem and the URL's host name.

Progress is waited on through the edge's status ("upstream": state, lag,
counters) and the parent's store, never with a fixed sleep.
"""

import json
import os
import signal
import subprocess
import time

from helpers import BEACOND, request, unique_name

CHILD = "agent-ca2"  # the edge beacon's certificate at the parent


def fingerprint(pki, name):
    out = subprocess.run(["openssl", "x509", "-in", str(pki / f"{name}.pem"), "-noout",
                          "-fingerprint", "-sha256"], check=True, stdout=subprocess.PIPE,
                         timeout=30).stdout.decode()
    return out.strip().split("=", 1)[1].replace(":", "").lower()


def parent_config(pki):
    return {"upstream": {"children": fingerprint(pki, CHILD)}}


def edge_config(pki, parent):
    return {"upstream": {"url": f"https://localhost:{parent.port}",
                         "cert": str(pki / f"{CHILD}.pem"), "key": str(pki / f"{CHILD}.key"),
                         "ca": str(pki / "server-ca.pem"), "beacon_id": "edge1"}}


def status(srv):
    out = srv.beaconctl("--socket", srv.control_socket, "--json", "status").stdout
    return json.loads(out)["upstream"]


def wait_for(pred, timeout=90, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)  # polling the status, not standing in for it


def wait_caught_up(edge, timeout=90):
    return wait_for(lambda: (s := status(edge))["lag_uploads"] == 0
                    and s["state"] == "connected" and s, timeout, "the edge to catch up")


def upload(srv, name, body, agent="agent1", headers=()):
    return request(srv, "PUT", f"/ManageSoftRL/Inventories/{name}", body, name=agent,
                   headers=headers, timeout=30.0)


def upload_many(edge, n, agents=("agent1", "agent2")):
    sent = {}
    for i in range(n):
        name, body, agent = unique_name("up"), os.urandom(3000 + i), agents[i % len(agents)]
        r = upload(edge, name, body, agent)
        assert r.status == 201, r
        sent[name] = (f"{agent}.example", body)
    return sent


def assert_exactly_once(parent, sent):
    """Each upload the edge took is at the parent once, under its device."""
    rows = [r for r in parent.uploads() if r["name"] in sent]
    by_name = {}
    for r in rows:
        by_name.setdefault(r["name"], []).append(r)
    twice = {k: len(v) for k, v in by_name.items() if len(v) != 1}
    assert not twice, f"uploads at the parent more than once: {twice}"
    assert set(by_name) == set(sent), f"missing at the parent: {set(sent) - set(by_name)}"
    for name, (device, body) in sent.items():
        r = by_name[name][0]
        assert r["device"] == device, r
        assert parent.upload_bytes(r["id"]) == body


def test_uploads_arrive_once_with_the_original_device(start_server, pki):
    parent = start_server(parent_config(pki))
    edge = start_server(edge_config(pki, parent))
    sent = upload_many(edge, 12)
    s = wait_caught_up(edge)
    assert s["sink"] == "upstream" and s["uploads_acked"] >= 12 and s["uploads_failed"] == 0
    assert_exactly_once(parent, sent)
    stats = json.loads(edge.beaconctl("--socket", edge.control_socket, "--json", "stats").stdout)
    assert stats["upstream_lag_uploads"] == 0 and stats["upstream_connected"] == 1, stats
    assert stats["upstream_uploads_acked"] == s["uploads_acked"], stats
    # The original agent's certificate, not the edge beacon's.
    r = next(r for r in parent.uploads() if r["name"] in sent and r["device"] == "agent1.example")
    assert r["cert_sha256"] == fingerprint(pki, "agent1")


def test_parent_down_then_up_catches_up_exactly_once(start_server, pki):
    parent = start_server(parent_config(pki), start=False)
    edge = start_server(edge_config(pki, parent))
    sent = upload_many(edge, 10)  # each answered 201 with the parent down
    s = wait_for(lambda: (s := status(edge))["state"] == "disconnected"
                 and s["lag_uploads"] == 10 and s, what="the lag to show 10 uploads")
    assert "connect" in s["last_error"], s
    text = edge.beaconctl("--socket", edge.control_socket, "status").stdout.decode()
    assert "upstream:            disconnected, lag 10 uploads" in text, text
    assert "upstream last error: connect" in text, text
    parent.start()
    wait_caught_up(edge)
    assert_exactly_once(parent, sent)


def test_kill_edge_mid_forward_then_restart_exactly_once(start_server, pki):
    parent = start_server(parent_config(pki), start=False)
    edge = start_server(edge_config(pki, parent))
    sent = upload_many(edge, 150)
    wait_for(lambda: status(edge)["lag_uploads"] == 150, what="150 uploads pending")
    parent.start()
    wait_for(lambda: status(edge)["uploads_acked"] >= 1, what="the first forwarded upload")
    edge.proc.send_signal(signal.SIGKILL)
    edge.proc.wait()
    at_kill = len([r for r in parent.uploads() if r["name"] in sent])
    assert 1 <= at_kill < len(sent), f"not mid-forward: the parent held {at_kill}"
    edge.proc = None
    edge._stderr_file.close()
    edge.notify.close()
    edge.start()
    wait_caught_up(edge)
    assert_exactly_once(parent, sent)


def forwarded_headers(device, cert_sha256, upload_id, origin="edge1"):
    return [f"Beacon-Origin: {origin}", f"Beacon-Upload-Id: {upload_id}",
            f"Beacon-Device: {device}", f"Beacon-Cert-SHA256: {cert_sha256}"]


def test_a_reforward_is_answered_with_the_first_id(start_server, pki):
    parent = start_server(parent_config(pki))
    name, body = unique_name("again"), os.urandom(5000)
    hdrs = forwarded_headers("agent1.example", fingerprint(pki, "agent1"), 7)
    first = upload(parent, name, body, agent=CHILD, headers=hdrs)
    again = upload(parent, name, body, agent=CHILD, headers=hdrs)
    assert first.status == 201 and again.status == 201, (first, again)
    assert first.header("Location") == again.header("Location")
    rows = [r for r in parent.uploads() if r["name"] == name]
    assert len(rows) == 1 and rows[0]["device"] == "agent1.example", rows


def test_a_child_with_a_bad_device_field_gets_400(start_server, pki):
    parent = start_server(parent_config(pki))
    hdrs = forwarded_headers("agent1.example", "not-hex", 7)
    r = upload(parent, unique_name("bad"), b"x" * 100, agent=CHILD, headers=hdrs)
    assert r.status == 400 and b"Beacon-Cert-SHA256" in r.body, r


def test_an_agent_cannot_forge_the_forwarding_headers(start_server, pki):
    """agent3 (not a child) sends agent1's upload first, with headers naming
    agent1: it is recorded as agent3, and agent1's own upload, forwarded by
    the edge afterwards, is still recorded once under agent1."""
    parent = start_server(parent_config(pki))
    edge = start_server(edge_config(pki, parent))
    name, body = unique_name("forged"), os.urandom(4000)
    hdrs = forwarded_headers("agent1.example", fingerprint(pki, "agent1"), 1)
    forged = upload(parent, name, body, agent="agent3", headers=hdrs)
    assert forged.status == 201, forged
    assert upload(edge, name, body, "agent1").status == 201
    wait_caught_up(edge)
    rows = {r["device"]: r for r in parent.uploads() if r["name"] == name}
    assert sorted(rows) == ["agent1.example", "agent3.example"], rows
    assert rows["agent3.example"]["cert_sha256"] == fingerprint(pki, "agent3")
    assert rows["agent1.example"]["cert_sha256"] == fingerprint(pki, "agent1")
    assert forged.header("Location") != f"/uploads/{rows['agent1.example']['id']}"
    assert parent.upload_bytes(rows["agent1.example"]["id"]) == body


def test_a_refused_upload_is_counted_and_does_not_block_the_queue(start_server, pki):
    """The parent answers 403 (approval = require, the edge not approved):
    each upload is counted failed and left behind, the lag drains to 0,
    and the edge's own copies stay."""
    parent = start_server({**parent_config(pki), "server": {"approval": "require"}})
    edge = start_server(edge_config(pki, parent))
    sent = upload_many(edge, 3)
    s = wait_for(lambda: (s := status(edge))["uploads_failed"] == 3 and s["lag_uploads"] == 0
                 and s, what="three refused uploads")
    assert s["uploads_acked"] == 0 and s["state"] == "connected", s
    assert not [r for r in parent.uploads() if r["name"] in sent]
    assert len([r for r in edge.uploads() if r["name"] in sent]) == 3
    assert "refused for good" in edge.stderr() and "403" in edge.stderr()


def check_config(srv):
    return subprocess.run([str(BEACOND), "-t", "-c", str(srv.conf)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=30)


def test_bad_upstream_keys_name_file_and_line(start_server, pki):
    cases = [
        ("url = http://parent.example:8443", "is not https://host[:port]"),
        ("url = https://parent.example:8443", "needs cert and key"),
        ("children = 12ab", "is not a SHA-256 certificate fingerprint"),
        ("children = " + fingerprint(pki, CHILD) + "\n[store]\ndedupe_window = 0",
         "children needs [store] dedupe_window on"),
        ("beacon_id = edge.one", "[upstream] beacon_id: 'edge.one' is not a"),
    ]
    for line, why in cases:
        srv = start_server(start=False)
        text = srv.conf.read_text().rstrip("\n").splitlines() + ["[upstream]", line]
        srv.conf.write_text("\n".join(text) + "\n")
        at = srv.conf.read_text().splitlines().index("[upstream]") + 2  # the key's line
        p = check_config(srv)
        err = p.stderr.decode()
        assert p.returncode != 0 and f"{srv.conf}:{at}: [upstream]" in err, err
        assert why in err, err


def test_a_keepalive_connection_the_parent_closed_is_not_a_failure(start_server, pki):
    """The parent closes the edge's idle connection (idle_timeout); the next
    upload goes on a fresh one without counting a failure or a disconnect."""
    parent = start_server({**parent_config(pki), "limits": {"idle_timeout": "1s"}})
    edge = start_server(edge_config(pki, parent))
    sent = upload_many(edge, 1)
    wait_caught_up(edge)
    parent_status = lambda: json.loads(parent.beaconctl(  # noqa: E731
        "--socket", parent.control_socket, "--json", "status").stdout)
    wait_for(lambda: parent_status()["connections_open"] == 0, what="the parent's idle close")
    sent.update(upload_many(edge, 1))
    s = wait_for(lambda: (s := status(edge))["uploads_acked"] == 2 and s, what="2 acked")
    assert s["uploads_failed"] == 0 and s["last_error"] == "", s
    assert_exactly_once(parent, sent)


class FakeParent:
    """A plain HTTPS server as the parent (any server that takes the upload
    path will do): mutual TLS with the demo server certificate; it answers
    each PUT with the next status in `answers` (the last one repeats) and
    keeps every request's head fields and body."""

    def __init__(self, pki, answers):
        import socket
        import ssl
        import threading
        self.answers, self.requests = list(answers), []
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(pki / "server.pem"), str(pki / "server.key"))
        ctx.load_verify_locations(str(pki / "agents-ca2.pem"))
        ctx.verify_mode = ssl.CERT_REQUIRED
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.ctx = ctx
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            try:
                with self.ctx.wrap_socket(raw, server_side=True) as tls:
                    self._conn(tls)
            except OSError:
                pass

    def _conn(self, tls):
        f = tls.makefile("rb")
        while True:
            line = f.readline()
            if not line:
                return
            fields = {}
            while (h := f.readline()) not in (b"\r\n", b""):
                k, v = h.decode().split(":", 1)
                fields[k.strip().lower()] = v.strip()
            body = f.read(int(fields.get("content-length", "0")))
            self.requests.append((line.decode().strip(), fields, body))
            status = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
            tls.sendall(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n".encode())

    def close(self):
        self.sock.close()


def test_a_429_is_retried_and_the_headers_reach_any_parent(start_server, pki):
    fake = FakeParent(pki, [429, 201])
    try:
        edge = start_server(edge_config(pki, fake))
        name, body = unique_name("any parent"), os.urandom(2500)
        assert upload(edge, name.replace(" ", "%20"), body, "agent2").status == 201
        s = wait_for(lambda: (s := status(edge))["uploads_acked"] == 1
                     and s["lag_uploads"] == 0 and s, what="the retried upload acknowledged")
        assert len(fake.requests) == 2, fake.requests
        (line1, f1, b1), (line2, f2, b2) = fake.requests
        assert line1 == line2 == f"PUT /ManageSoftRL/Inventories/{name.replace(' ', '%20')} HTTP/1.1"
        assert f1 == f2 and b1 == b2 == body
        assert f1["beacon-origin"] == "edge1" and f1["beacon-device"] == "agent2.example"
        assert f1["beacon-cert-sha256"] == fingerprint(pki, "agent2")
        assert f1["beacon-upload-id"] == str(next(
            r["id"] for r in edge.uploads() if r["name"] == name))
    finally:
        fake.close()


def test_a_device_blocked_at_the_parent_stays_out_through_a_child(start_server, pki):
    """The attack: a device the parent blocks sends through an edge that
    does not block it. The parent judges the forwarded device by its own
    block list, answers 403, and the edge counts the upload refused for
    good; the other device's uploads arrive."""
    parent = start_server(parent_config(pki))
    parent.beaconctl("--socket", parent.control_socket, "devices", "block", "agent2.example")
    edge = start_server(edge_config(pki, parent))
    sent = upload_many(edge, 6)
    s = wait_for(lambda: (s := status(edge))["lag_uploads"] == 0 and s["uploads_failed"] == 3
                 and s, what="three refused, three forwarded")
    assert s["uploads_acked"] == 3, s
    at_parent = [r for r in parent.uploads() if r["name"] in sent]
    assert sorted(r["device"] for r in at_parent) == ["agent1.example"] * 3, at_parent
    assert edge.stderr().count("refused for good, left behind: parent answered 403") == 3, \
        edge.stderr()[-2000:]
