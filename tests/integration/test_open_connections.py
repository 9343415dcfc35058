"""Open keep-alive connections against a newer trust snapshot (issue 12).

A connection keeps the snapshot of its handshake, but before each request
after a reload it is checked against the newest one (README, "Trust at run
time"). A device blocked (beaconctl devices block), revoked (a CRL reload)
or left without a trusted issuer while its connection is open gets, at its
next request on that same connection, 403 with the reason and Connection:
close; the connection ends and nothing of the request is stored. Before
this, such a connection kept uploading until the agent chose to disconnect.

Every attack is a raw mutual-TLS client (Python ssl) that keeps one
connection open across the trust change; the store is read with beaconctl.
"""

import os
import shutil
import ssl

import pytest

from helpers import build_request, client_context, tls_connect, unique_name
from trustkit import beaconctl_sock, beaconctl_works, ctl, make_crl, reload, upload, wait_until

TLS13 = ssl.TLSVersion.TLSv1_3
TLS12 = ssl.TLSVersion.TLSv1_2
VERSIONS = [pytest.param(TLS13, id="tls1.3"), pytest.param(TLS12, id="tls1.2")]


@pytest.fixture
def editable_trust(tmp_path, pki, start_server):
    """A server whose issuers directory and crl_dir are copies the test may
    change; reloads only when the test asks (watch = no)."""
    issuers, crl_dir = tmp_path / "issuers", tmp_path / "crl"
    issuers.mkdir()
    crl_dir.mkdir()
    for f in (pki / "issuers").iterdir():
        shutil.copy(f, issuers / f.name)
    srv = start_server({"server": {"watch": "no"},
                        "tls": {"issuers": str(issuers), "crl_dir": str(crl_dir)}})
    # The control socket opens after the TLS listener start_server waits for.
    assert wait_until(lambda: beaconctl_works(srv), 20), srv.stderr()
    return srv, issuers, crl_dir


def put(conn, name, body=b"inventory\n"):
    conn.send(build_request("PUT", f"/ManageSoftRL/Inventories/{name}", body=body))
    return conn.read_response()


def stored_names(srv, device):
    return {r["name"] for r in srv.uploads(device)}


def beaconctl_ok(srv, *args):
    p = beaconctl_sock(srv, *args, json_out=False)
    assert p.returncode == 0, f"beaconctl {args} exited {p.returncode}: {p.stdout} {p.stderr}"
    return p.stdout


def assert_closed_with_403(conn, srv, device, name, reason):
    """The request after the trust change: 403 naming the reason, then the
    connection ends, and nothing was stored."""
    resp = put(conn, name)
    closed, rest = conn.wait_closed(10.0)
    assert name not in stored_names(srv, device), (
        f"{device} uploaded on its open connection after the trust change: {resp}")
    assert resp.status == 403, f"expected 403 ({reason}), got {resp}"
    assert reason.encode() in resp.body, resp
    assert b"trust changed while this connection was open" in resp.body, resp
    assert (resp.header("connection") or "").lower() == "close", resp
    assert closed, f"the connection stayed open after the 403; read {rest!r}"
    assert rest == b"", rest


@pytest.mark.parametrize("version", VERSIONS)
def test_blocked_device_stops_on_its_open_connection(editable_trust, version):
    srv, _, _ = editable_trust
    with tls_connect(srv, "agent2", max_version=version) as agent2, \
            tls_connect(srv, "agent1", max_version=version) as agent1:
        first = unique_name("before-block")
        assert put(agent2, first).status == 201
        assert put(agent1, unique_name("agent1")).status == 201
        beaconctl_ok(srv, "devices", "block", "agent2.example")
        assert_closed_with_403(agent2, srv, "agent2.example", unique_name("after-block"),
                               "blocked")
        # Others on their open connections carry on.
        assert put(agent1, unique_name("agent1-after")).status == 201
    assert first in stored_names(srv, "agent2.example")
    assert "agent2.example" in srv.stderr() and "403" in srv.stderr()


@pytest.mark.parametrize("version", VERSIONS)
def test_revoked_certificate_stops_on_its_open_connection(editable_trust, pki, tmp_path,
                                                          version):
    srv, _, crl_dir = editable_trust
    with tls_connect(srv, "agent2", max_version=version) as agent2, \
            tls_connect(srv, "agent1", max_version=version) as agent1:
        assert put(agent2, unique_name("before-crl")).status == 201
        crl = make_crl(pki, tmp_path / "agent2.crl.pem", revoke=["agent2"])
        shutil.copy(crl, crl_dir / "agents-ca.crl.pem")
        out = beaconctl_ok(srv, "reload", "crl")
        assert "1 revoked serials" in out, out
        assert_closed_with_403(agent2, srv, "agent2.example", unique_name("after-crl"),
                               "revoked")
        assert put(agent1, unique_name("agent1-after")).status == 201


@pytest.mark.parametrize("version", VERSIONS)
def test_resumed_connection_stops_when_revoked(editable_trust, pki, tmp_path, version):
    """A resumed session knows its peer from the ticket, not a certificate:
    its open connection is checked the same way."""
    srv, _, crl_dir = editable_trust
    ctx = client_context(pki, "agent2", max_version=version)
    kind, detail, info = upload(srv, "agent2", ctx=ctx)
    assert kind == "response" and detail.status == 201 and info["session"], (kind, detail)
    with tls_connect(srv, "agent2", ctx=ctx, session=info["session"]) as agent2:
        assert agent2.tls.session_reused, "the session was not resumed"
        assert put(agent2, unique_name("resumed-before")).status == 201
        crl = make_crl(pki, tmp_path / "agent2.crl.pem", revoke=["agent2"])
        shutil.copy(crl, crl_dir / "agents-ca.crl.pem")
        beaconctl_ok(srv, "reload", "crl")
        assert_closed_with_403(agent2, srv, "agent2.example", unique_name("resumed-after"),
                               "revoked")


def test_removed_issuer_stops_its_open_connections(editable_trust):
    """agent-ca2's issuer leaves the issuers directory: its open connection
    ends at its next request; agent1 (the other issuer) carries on."""
    srv, issuers, _ = editable_trust
    with tls_connect(srv, "agent-ca2") as ca2, tls_connect(srv, "agent1") as agent1:
        assert put(ca2, unique_name("before")).status == 201
        os.unlink(issuers / "agents-ca2.pem")
        r = reload(srv, "issuers")
        assert ctl(srv, {"cmd": "status"})["issuers"] == 1, r
        assert_closed_with_403(ca2, srv, "agent-ca2.example", unique_name("after"),
                               "issuer is no longer trusted")
        assert put(agent1, unique_name("agent1-after")).status == 201


def test_reload_without_change_keeps_connections(editable_trust):
    """A new snapshot that still admits the device: the same connection
    goes on uploading (the check does not close every connection)."""
    srv, _, _ = editable_trust
    with tls_connect(srv, "agent2") as agent2:
        assert put(agent2, unique_name("before")).status == 201
        reload(srv, "all")
        assert put(agent2, unique_name("after")).status == 201
        beaconctl_ok(srv, "devices", "block", "agent3.example")
        assert put(agent2, unique_name("after-other-blocked")).status == 201
