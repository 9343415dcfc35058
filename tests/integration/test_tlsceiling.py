"""perf/tlsceiling, the TLS ceiling perf/bench.sh divides by: one exchange of
each kind runs and prints its row, and the in-memory server really demands
a client certificate from the agents' CA (a ceiling measured without mutual
authentication would flatter nothing and mean nothing). No timing is
asserted: the figures are the benchmark's business."""

import json
import subprocess

import pytest

from helpers import BEACOND

TLSCEILING = BEACOND.parent / "perf" / "tlsceiling"


def ceiling(pki, agent, *extra):
    if not TLSCEILING.exists():
        pytest.skip(f"{TLSCEILING} is not built")
    return subprocess.run(
        [str(TLSCEILING), "--server-cert", str(pki / "server.pem"),
         "--server-key", str(pki / "server.key"), "--ca", str(pki / "agents-ca.pem"),
         "--client-cert", str(pki / f"{agent}.pem"), "--client-key", str(pki / f"{agent}.key"),
         *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)


def test_one_exchange_of_each_kind(pki):
    p = ceiling(pki, "agent1", "--handshakes", "1", "--json")
    assert p.returncode == 0, p.stderr
    rows = {r["scenario"]: r for r in map(json.loads, p.stdout.splitlines())}
    assert sorted(rows) == ["full12", "full13", "resume13"]
    for name, row in rows.items():
        assert row["server"] == "ceiling"
        assert row["handshakes"] == 1, row
        assert row["server_cpu_s"] > 0, row
        assert row["handshakes_per_server_cpu_s"] > 0, row
    # the resumed kind resumes (its warm-up got the ticket); the others do not
    assert rows["resume13"]["resumed_fraction"] == 1.0
    assert rows["full13"]["resumed_fraction"] == 0.0
    assert rows["full12"]["resumed_fraction"] == 0.0


def test_human_rows(pki):
    p = ceiling(pki, "agent1", "--handshakes", "1", "--kinds", "full13")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("full13 ")
    assert "/ server CPU s" in lines[0]


def test_client_from_another_ca_is_refused(pki):
    p = ceiling(pki, "untrusted", "--handshakes", "1", "--kinds", "full13")
    assert p.returncode == 1
    assert p.stdout == ""
    # ASN_NO_SIGNER_E: the server found no signer for the client's chain
    assert "server handshake: certificate verify failed (-188)" in p.stderr


def test_p256_operations_alone():
    if not TLSCEILING.exists():
        pytest.skip(f"{TLSCEILING} is not built")
    p = subprocess.run([str(TLSCEILING), "--ops", "--json"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    assert [r["op"] for r in rows] == ["keygen", "ecdh", "sign", "verify"]
    assert all(r["curve"] == "P-256" and r["us"] > 0 for r in rows), rows


def test_interleaved_connections_all_finish(pki):
    p = ceiling(pki, "agent1", "--interleave", "16", "--handshakes", "64",
                "--kinds", "full13 full12", "--json")
    assert p.returncode == 0, p.stderr
    rows = {r["scenario"]: r for r in map(json.loads, p.stdout.splitlines())}
    assert sorted(rows) == ["full12", "full13"]
    for row in rows.values():
        assert row["interleave"] == 16
        # whole turns of 16: the count is checked between turns
        assert row["handshakes"] == 64, row
        assert row["client_failures"] == row["server_failures"] == 0, row


def test_interleaved_failures_are_counted_and_the_run_goes_on(pki):
    # every handshake of a client from another CA fails at the server: the
    # soak says each one, counts it, and ends with status 1
    p = ceiling(pki, "untrusted", "--interleave", "4", "--handshakes", "1",
                "--seconds", "0.05", "--kinds", "full13", "--json")
    assert p.returncode == 1
    row = json.loads(p.stdout)
    assert row["handshakes"] == 0 and row["client_failures"] == 0
    assert row["server_failures"] >= 4, row
    said = p.stderr.count("server handshake: certificate verify failed (-188)")
    assert said == row["server_failures"], p.stderr


def test_interleave_is_for_full_handshakes(pki):
    p = ceiling(pki, "agent1", "--interleave", "4", "--handshakes", "1")
    assert p.returncode == 2
    assert "--interleave: full handshakes only" in p.stderr
