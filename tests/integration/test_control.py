"""Control plane (issue 4) against running servers with real clients.

Triggers (control socket / beaconctl reload, SIGHUP, file watch), revocation
and the block list in the handshake, resumption that stays honest (Python ssl
session reuse and openssl s_client -sess_out/-sess_in, TLS 1.3 and 1.2), bad
reload inputs refused with the old trust kept, shared ticket key files,
ticket rotation, approval, metrics/healthz/status, control socket mode.

beaconctl --socket is used where `beaconctl --socket S status` works (the
reload and devices commands go through it and their exit status is checked);
the raw JSON-lines socket is used alongside it.
"""

import json
import os
import shutil
import signal
import ssl
import stat
import time

import pytest

from certkit import alert_name
from helpers import free_port, s_client
from trustkit import (assert_admitted, assert_refused, beaconctl_sock,
                      beaconctl_works, cert_fingerprint, corrupt_crl_signature,
                      ctl, drop, http_get, make_crl, new_ticket_key_line,
                      parse_metrics, reload, upload, wait_until)
from helpers import client_context

TLS13 = ssl.TLSVersion.TLSv1_3
TLS12 = ssl.TLSVersion.TLSv1_2
VERSIONS = [pytest.param(TLS13, id="tls1.3"), pytest.param(TLS12, id="tls1.2")]


@pytest.fixture
def trust(tmp_path, pki, start_server):
    """Factory: a server whose issuers, cert/key, crl_dir and blocklist are
    copies it may edit. Returns (server, paths dict)."""

    def factory(server=None, tls=None, start=True, crls=(), blocklist="# empty\n"):
        d = tmp_path / f"trust-{len(os.listdir(tmp_path))}"
        paths = {
            "issuers": d / "issuers",
            "crl_dir": d / "crl",
            "blocklist": d / "blocklist.txt",
            "cert": d / "server.pem",
            "key": d / "server.key",
        }
        paths["issuers"].mkdir(parents=True)
        paths["crl_dir"].mkdir()
        for f in (pki / "issuers").iterdir():
            shutil.copy(f, paths["issuers"] / f.name)
        shutil.copy(pki / "server.pem", paths["cert"])
        shutil.copy(pki / "server.key", paths["key"])
        os.chmod(paths["key"], 0o600)
        paths["blocklist"].write_text(blocklist)
        for name, data in crls:
            (paths["crl_dir"] / name).write_bytes(data)
        tls_sec = {k: str(v) for k, v in paths.items()}
        tls_sec.update(tls or {})
        srv_sec = {"watch": "no"}
        srv_sec.update(server or {})
        srv = start_server({"server": srv_sec, "tls": tls_sec}, start=start)
        return srv, paths

    return factory


@pytest.fixture(scope="module")
def crl_agent2(pki, tmp_path_factory):
    """PEM bytes of a CRL from agents-ca revoking agent2."""
    out = tmp_path_factory.mktemp("crl") / "agent2.crl.pem"
    return make_crl(pki, out, revoke=["agent2"]).read_bytes()


def bctl_ok(srv, *args):
    """A control command through beaconctl when it works, else the socket."""
    if beaconctl_works(srv):
        p = beaconctl_sock(srv, *args)
        assert p.returncode == 0, f"beaconctl {args} exited {p.returncode}: {p.stdout} {p.stderr}"
        return p
    cmd = {"reload": lambda: {"cmd": "reload", "what": args[1] if len(args) > 1 else "all"},
           "devices": lambda: {"cmd": "device_" + args[1], "device": args[2]},
           "tickets": lambda: {"cmd": "tickets_rotate"}}[args[0]]()
    r = ctl(srv, cmd)
    assert r.get("ok") is True, r
    return r


def generation(srv):
    return ctl(srv, {"cmd": "status"})["snapshot_generation"]


# --------------------------------------------------------------------------
# Control socket basics


def test_control_socket_mode_and_status(trust):
    srv, _ = trust()
    st = os.stat(srv.control_socket)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
    s = ctl(srv, {"cmd": "status"})
    assert s["ok"] is True and s["issuers"] == 2 and s["revoked_serials"] == 0
    st2 = ctl(srv, {"cmd": "stats"})
    assert st2["ok"] is True and "handshakes" in st2
    bad = ctl(srv, {"cmd": "no-such-command"})
    assert bad["ok"] is False and bad["error"]
    assert beaconctl_works(srv), "beaconctl --socket S status does not work"
    p = beaconctl_sock(srv, "status", json_out=False)
    assert "issuers" in p.stdout


# --------------------------------------------------------------------------
# Triggers


def test_reload_crl_via_beaconctl_revokes(trust, crl_agent2):
    srv, paths = trust()
    assert_admitted(srv, "agent2")
    g0 = generation(srv)
    drop(paths["crl_dir"] / "agents.crl", crl_agent2)
    # watch = no: nothing may change without a trigger. An absence has no
    # event to wait on: this gives a (wrongly running) watch, which looks
    # once a second, more than one look.
    time.sleep(2.5)
    assert_admitted(srv, "agent2")
    assert generation(srv) == g0
    bctl_ok(srv, "reload", "crl")
    assert generation(srv) > g0
    assert ctl(srv, {"cmd": "status"})["revoked_serials"] == 1
    assert_refused(srv, "agent2", alert="certificate_revoked")
    assert_refused(srv, "agent2", alert="certificate_revoked", max_version=TLS12)
    assert_admitted(srv, "agent1")
    assert_admitted(srv, "agent3")
    assert wait_until(lambda: "refused: certificate is revoked" in srv.stderr(), 3), srv.stderr()


def test_reload_crl_der(trust, pki, tmp_path):
    srv, paths = trust()
    make_crl(pki, paths["crl_dir"] / "agents.crl", revoke=["agent3"], der=True)
    reload(srv, "crl")
    assert_refused(srv, "agent3", alert="certificate_revoked")
    assert_admitted(srv, "agent2")


def test_sighup_rereads_tls_section(trust, pki, crl_agent2, tmp_path):
    """SIGHUP re-reads the config file: a crl_dir and a blocklist added to
    [tls] after start-up take effect."""
    srv, paths = trust(tls={"crl_dir": None, "blocklist": None})
    assert_admitted(srv, "agent2")
    assert_admitted(srv, "agent3")
    drop(paths["crl_dir"] / "agents.crl", crl_agent2)
    paths["blocklist"].write_text("# added later\ndevice:agent3.example\n")
    text = srv.conf.read_text().replace(
        "[tls]\n", f"[tls]\ncrl_dir = {paths['crl_dir']}\nblocklist = {paths['blocklist']}\n", 1)
    srv.conf.write_text(text)
    g0 = generation(srv)
    srv.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: generation(srv) > g0, 5), srv.stderr()
    assert_refused(srv, "agent2", alert="certificate_revoked")
    assert_refused(srv, "agent3", alert="access_denied")
    assert_admitted(srv, "agent1")
    s = ctl(srv, {"cmd": "status"})
    assert s["revoked_serials"] == 1 and s["blocked_entries"] >= 1, s


def test_watch_crl_drop(trust, crl_agent2):
    srv, paths = trust(server={"watch": "yes"})
    assert_admitted(srv, "agent2")
    g0 = generation(srv)
    drop(paths["crl_dir"] / "agents.crl", crl_agent2)
    # The watch's own reload, not a timing: a new snapshot appears with
    # nobody asking for it, and it refuses agent2.
    assert wait_until(lambda: generation(srv) > g0, 30), \
        f"no reload after a CRL was dropped\n{srv.stderr()}"
    assert_refused(srv, "agent2", alert="certificate_revoked")
    assert_admitted(srv, "agent1")


def test_watch_blocklist_edit(trust, pki):
    srv, paths = trust(server={"watch": "yes"})
    assert_admitted(srv, "agent3")
    fp = cert_fingerprint(pki / "agent3.pem")
    g0 = generation(srv)
    paths["blocklist"].write_text(f"# compromised\nsha256:{fp}\n")
    assert wait_until(lambda: generation(srv) > g0, 30), srv.stderr()
    assert_refused(srv, "agent3", alert="access_denied")
    assert_admitted(srv, "agent1")
    paths["blocklist"].write_text("# nothing blocked\n")
    assert wait_until(lambda: status_ok(srv, "agent3"), 6, 0.2), srv.stderr()


def status_ok(srv, name):
    r = upload(srv, name)
    return r[0] == "response" and r[1].status == 201


def test_reload_blocklist_device_and_fingerprint(trust, pki):
    srv, paths = trust()
    paths["blocklist"].write_text(
        f"device:agent2.example\n# comment\nsha256:{cert_fingerprint(pki / 'agent3.pem')}\n")
    bctl_ok(srv, "reload", "blocklist")
    assert_refused(srv, "agent2", alert="access_denied")
    assert_refused(srv, "agent3", alert="access_denied")
    assert_admitted(srv, "agent1")
    assert wait_until(lambda: "refused:" in srv.stderr(), 3)


# --------------------------------------------------------------------------
# Resumption stays honest


def _session(srv, name, version):
    ctx = client_context(srv.pki, name, max_version=version, min_version=version)
    kind, resp, info = upload(srv, name, ctx=ctx)
    assert kind == "response" and resp.status == 201, resp
    assert info["session"] is not None
    # The ticket resumes before anything changes.
    kind, resp, info2 = upload(srv, name, ctx=ctx, session=info["session"])
    assert kind == "response" and resp.status == 201, resp
    assert info2["reused"] is True, f"{name} {version}: session not resumed before the change"
    return ctx, info["session"]


@pytest.mark.parametrize("version", VERSIONS)
def test_revoked_resumption_python(trust, crl_agent2, version):
    srv, paths = trust()
    ctx2, sess2 = _session(srv, "agent2", version)
    ctx1, sess1 = _session(srv, "agent1", version)
    drop(paths["crl_dir"] / "agents.crl", crl_agent2)
    reload(srv, "crl")
    kind, detail, info = upload(srv, "agent2", ctx=ctx2, session=sess2)
    assert kind != "response", f"revoked agent2 resumed and got {detail}"
    assert info["reused"] is not True, "revoked agent2's session was resumed"
    assert alert_name(info["error"]) == "certificate_revoked", detail
    kind, resp, info = upload(srv, "agent1", ctx=ctx1, session=sess1)
    assert kind == "response" and resp.status == 201, resp
    assert info["reused"] is True, "agent1's resumption stopped working after the reload"
    assert wait_until(lambda: "refused: certificate is revoked" in srv.stderr(), 3)


@pytest.mark.parametrize("version", VERSIONS)
def test_blocked_resumption_python(trust, version):
    srv, _ = trust()
    ctx2, sess2 = _session(srv, "agent2", version)
    ctx1, sess1 = _session(srv, "agent1", version)
    bctl_ok(srv, "devices", "block", "agent2.example")
    kind, detail, info = upload(srv, "agent2", ctx=ctx2, session=sess2)
    assert kind != "response", f"blocked agent2 resumed and got {detail}"
    assert info["reused"] is not True
    assert alert_name(info["error"]) == "access_denied", detail
    assert_refused(srv, "agent2", alert="access_denied", max_version=version)
    kind, resp, info = upload(srv, "agent1", ctx=ctx1, session=sess1)
    assert kind == "response" and resp.status == 201 and info["reused"] is True
    bctl_ok(srv, "devices", "unblock", "agent2.example")
    assert_admitted(srv, "agent2", max_version=version)


@pytest.mark.parametrize("flag,label", [("-tls1_3", "TLSv1.3"), ("-tls1_2", "TLSv1.2")])
def test_revoked_resumption_s_client(trust, crl_agent2, tmp_path, flag, label):
    srv, paths = trust()
    sess = {n: tmp_path / f"{n}.sess" for n in ("agent1", "agent2")}
    for n in sess:
        out, _ = s_client(srv, flag, "-sess_out", sess[n], name=n)
        assert "HTTP/1.1 200" in out, out
        assert sess[n].exists() and sess[n].stat().st_size > 0
        out, _ = s_client(srv, flag, "-sess_in", sess[n], name=n)
        assert f"Reused, {label}" in out and "HTTP/1.1 200" in out, out
    drop(paths["crl_dir"] / "agents.crl", crl_agent2)
    reload(srv, "crl")
    out, _ = s_client(srv, flag, "-sess_in", sess["agent2"], name="agent2")
    assert "HTTP/1.1" not in out, f"revoked agent2 got an HTTP response:\n{out}"
    assert f"Reused, {label}" not in out, out
    out, _ = s_client(srv, flag, "-sess_in", sess["agent1"], name="agent1")
    assert f"Reused, {label}" in out and "HTTP/1.1 200" in out, out


# --------------------------------------------------------------------------
# Bad reload inputs: refused, old snapshot in force


def _bad_garbage_issuer(paths, tmp_path):
    (paths["issuers"] / "zz-garbage.pem").write_text(
        "-----BEGIN CERTIFICATE-----\nnot base64 at all !!!\n-----END CERTIFICATE-----\n")
    return "issuers"


def _bad_empty_issuers(paths, tmp_path):
    for f in paths["issuers"].iterdir():
        f.unlink()
    return "issuers"


def _bad_crl_signature(paths, tmp_path):
    corrupt_crl_signature(paths["crl_dir"] / "agents.crl", paths["crl_dir"] / "bad.crl")
    return "crl"


def _bad_blocklist_line(paths, tmp_path):
    paths["blocklist"].write_text("device:agent3.example\nsha256:nothex\n")
    return "blocklist"


def _bad_missing_key(paths, tmp_path):
    paths["key"].unlink()
    return "all"


def _bad_missing_cert(paths, tmp_path):
    paths["cert"].unlink()
    return "all"


BAD_INPUTS = [
    pytest.param(_bad_garbage_issuer, id="unparsable-issuer-pem"),
    pytest.param(_bad_empty_issuers, id="empty-issuer-dir"),
    pytest.param(_bad_crl_signature, id="crl-bad-signature"),
    pytest.param(_bad_blocklist_line, id="bad-blocklist-line"),
    pytest.param(_bad_missing_key, id="missing-key"),
    pytest.param(_bad_missing_cert, id="missing-cert"),
]


@pytest.mark.parametrize("breakit", BAD_INPUTS)
def test_bad_reload_refused_old_trust_stays(trust, crl_agent2, tmp_path, breakit):
    srv, paths = trust(crls=[("agents.crl", crl_agent2)])
    assert_refused(srv, "agent2", alert="certificate_revoked")
    assert_admitted(srv, "agent1")
    g0 = generation(srv)
    what = breakit(paths, tmp_path)
    # Through the socket.
    r = ctl(srv, {"cmd": "reload", "what": what})
    assert r["ok"] is False and r.get("error"), r
    # Through beaconctl: non-zero exit and a message.
    assert beaconctl_works(srv)
    p = beaconctl_sock(srv, "reload", what, json_out=False)
    assert p.returncode != 0, f"beaconctl reload {what} exited 0 on a bad input: {p.stdout}"
    assert (p.stdout + p.stderr).strip()
    # Through SIGHUP (reloads everything).
    srv.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: srv.stderr().count("refused, the running trust stays") >= 3, 5), \
        srv.stderr()
    assert generation(srv) == g0
    assert_admitted(srv, "agent1")
    assert_admitted(srv, "agent1", max_version=TLS12)
    assert_refused(srv, "agent2", alert="certificate_revoked")
    assert_admitted(srv, "agent3")
    assert_admitted(srv, "agent-ca2")
    srv.assert_alive()


# --------------------------------------------------------------------------
# Ticket keys


@pytest.mark.parametrize("version", VERSIONS)
def test_shared_ticket_key_file(trust, tmp_path, version):
    shared = tmp_path / "tickets.keys"
    shared.write_text(new_ticket_key_line() + "\n" + new_ticket_key_line() + "\n")
    os.chmod(shared, 0o600)
    other = tmp_path / "other.keys"
    other.write_text(new_ticket_key_line() + "\n")
    os.chmod(other, 0o600)
    a, _ = trust(tls={"ticket_key_file": str(shared)})
    b, _ = trust(tls={"ticket_key_file": str(shared)})
    c, _ = trust(tls={"ticket_key_file": str(other)})
    ctx = client_context(a.pki, "agent1", min_version=version, max_version=version)
    kind, resp, info = upload(a, "agent1", ctx=ctx)
    assert kind == "response" and resp.status == 201
    sess = info["session"]
    kind, resp, info = upload(b, "agent1", ctx=ctx, session=sess)
    assert kind == "response" and resp.status == 201, resp
    assert info["reused"] is True, "server B did not accept server A's ticket (same key file)"
    kind, resp, info = upload(c, "agent1", ctx=ctx, session=sess)
    assert kind == "response" and resp.status == 201, resp
    assert info["reused"] is False, "server C accepted a ticket sealed with another key"


@pytest.mark.parametrize("version", VERSIONS)
def test_tickets_rotate(trust, version):
    srv, _ = trust()
    ctx = client_context(srv.pki, "agent1", min_version=version, max_version=version)
    kind, resp, info = upload(srv, "agent1", ctx=ctx)
    old = info["session"]
    bctl_ok(srv, "tickets", "rotate")
    kind, resp, info = upload(srv, "agent1", ctx=ctx, session=old)
    assert kind == "response" and resp.status == 201
    assert info["reused"] is True, "a ticket from before one rotation was not accepted"
    # Documented: the previous three keys stay accepted; after four
    # rotations the first key is gone and the ticket falls back to a full
    # handshake (which still succeeds).
    for _ in range(3):
        bctl_ok(srv, "tickets", "rotate")
    kind, resp, info = upload(srv, "agent1", ctx=ctx, session=old)
    assert kind == "response" and resp.status == 201
    assert info["reused"] is False, "a ticket four rotations old was still accepted"


# --------------------------------------------------------------------------
# Approval


def test_approval_require(trust):
    srv, _ = trust(server={"approval": "require"})
    r = upload(srv, "agent3")
    assert r[0] == "response", r
    assert r[1].status == 403, r[1]
    bctl_ok(srv, "devices", "approve", "agent3.example")
    assert_admitted(srv, "agent3")
    r = upload(srv, "agent1")
    assert r[0] == "response" and r[1].status == 403, r[1]


def device_record(srv, device):
    """The device's record as `beaconctl devices show` prints it, or None."""
    p = srv.beaconctl("--json", "devices", "show", device, check=False)
    if p.returncode != 0:
        return None
    return json.loads(p.stdout.decode())


def test_refusals_recorded_for_known_devices_only(trust, crl_agent2):
    """A blocked or revoked agent's record says why it stays out; a
    certificate from an issuer we do not trust creates no record."""
    srv, paths = trust()
    drop(paths["crl_dir"] / "agents.crl", crl_agent2)
    bctl_ok(srv, "reload", "crl")
    bctl_ok(srv, "devices", "block", "agent3.example")
    assert_refused(srv, "agent2", alert="certificate_revoked")
    assert_refused(srv, "agent3", alert="access_denied")
    assert_refused(srv, "untrusted", alert="unknown_ca")
    assert_admitted(srv, "agent1")
    assert wait_until(lambda: (device_record(srv, "agent2.example") or {}).get(
        "last_result") == "revoked", 5), device_record(srv, "agent2.example")
    assert wait_until(lambda: (device_record(srv, "agent3.example") or {}).get(
        "last_result") == "blocked", 5), device_record(srv, "agent3.example")
    assert device_record(srv, "agent1.example")["last_result"] == "ok"
    assert device_record(srv, "untrusted.example") is None


# --------------------------------------------------------------------------
# Metrics


def test_metrics_counts(trust, crl_agent2):
    mport = free_port()
    srv, _ = trust(server={"metrics": f"127.0.0.1:{mport}"},
                   crls=[("agents.crl", crl_agent2)])
    n_ok, n_revoked = 5, 3
    for i in range(n_ok):
        assert_admitted(srv, "agent1", max_version=TLS12 if i % 2 else None)
    for _ in range(n_revoked):
        assert_refused(srv, "agent2", alert="certificate_revoked")

    def sample():
        code, body = http_get(mport, "/metrics")
        assert code == 200
        return parse_metrics(body.decode())

    def matches():
        m = sample()
        return (m.get(("beacond_handshakes_total", '{result="ok"}')) == n_ok
                and m.get(("beacond_handshakes_total", '{result="revoked"}')) == n_revoked)

    assert wait_until(matches, 3), sample()
    m = sample()
    assert m[("beacond_uploads_total", "")] == n_ok
    assert m[("beacond_handshakes_by_version_total", '{version="1.2"}')] >= n_ok // 2
    assert m[("beacond_revoked_serials", "")] == 1
    # The kernel transport has no stack of ours to count.
    assert not [k for k in m if k[0].startswith("beacond_net_")], m
    code, _ = http_get(mport, "/healthz")
    assert code == 200
    code, body = http_get(mport, "/status")
    assert code == 200 and b"<svg" in body
