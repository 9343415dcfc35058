"""The latency split of perf/burst.sh (issue 18 item 7) against a real
beacond, so that the figures that say where a tail's time went cannot rot:
agentsim --stages cuts every upload that came with its own connection, and
only those, into stages that add up to its whole; perf/wire_stages.py finds
every connection in a real tcpdump capture of the loopback, and its stages
add up too. No timing is asserted: only that the parts make the whole."""

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from helpers import BEACOND, REPO

AGENTSIM = Path(os.environ.get("AGENTSIM", BEACOND.parent / "perf" / "agentsim"))
WIRE_STAGES = REPO / "perf" / "wire_stages.py"
STAGES = ["client_wait", "tcp_connect", "server_first", "client_hs", "response"]
WIRE = ["connect", "client_first", "server_first", "client_second", "server_second"]


def agentsim(server, tmp_path, *args):
    assert AGENTSIM.exists(), f"agentsim not found at {AGENTSIM} (ninja -C build perf/agentsim)"
    pki = server.pki
    p = subprocess.run(
        [str(AGENTSIM), "--certs", "20", "--quiet", "--timeout", "30",
         "--ca-cert", str(pki / "agents-ca.pem"), "--ca-key", str(pki / "agents-ca.key"),
         "--cache", str(tmp_path / "agents"), *map(str, args),
         f"https://127.0.0.1:{server.port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
    lines = p.stdout.decode().strip().splitlines()
    assert lines, f"agentsim printed no result (status {p.returncode}):\n{p.stderr.decode()}"
    result = json.loads(lines[-1])
    assert not any(result["errors"].values()), f"{result['errors']}\n{p.stderr.decode()}"
    return result


def assert_parts_make_the_whole(split, parts):
    """Over the slowest 1% the stages' means add up to the whole's mean
    (each stage is cut at instants of the same clock; rounding to the
    microsecond is all that may differ)."""
    whole = split["total"]["tail_mean"]
    assert whole > 0, split
    assert abs(sum(split[s]["tail_mean"] for s in parts) - whole) < 0.01, split
    for s in parts:
        assert 0 <= split[s]["p50"] <= split[s]["p99"], (s, split)


def test_every_upload_on_its_own_connection_is_cut_into_stages(server, tmp_path):
    r = agentsim(server, tmp_path, "--mode", "full", "--concurrency", "4", "--requests", 120,
                 "--stages")
    st = r["stages_ms"]
    assert r["uploads"] == 120
    assert st["recorded"] == 120 and st["dropped"] == 0, st
    assert_parts_make_the_whole(st, STAGES)


def test_kept_alive_uploads_after_the_first_are_not_cut(server, tmp_path):
    r = agentsim(server, tmp_path, "--mode", "keepalive", "--concurrency", "3", "--requests", 60,
                 "--stages")
    assert r["uploads"] == 60
    # one handshake per connection: only the upload that came with it
    assert r["stages_ms"]["recorded"] == 3, r["stages_ms"]


def test_without_the_option_there_is_no_split(server, tmp_path):
    r = agentsim(server, tmp_path, "--mode", "full", "--concurrency", "2", "--requests", 10)
    assert "stages_ms" not in r


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("tcpdump"),
                    reason="capturing the loopback needs root and tcpdump")
def test_the_capture_finds_every_connection_and_splits_it(server, tmp_path):
    pcap = tmp_path / "open.pcap"
    cap = subprocess.Popen(
        ["tcpdump", "-i", "lo", "-n", "-s", "96", "--immediate-mode", "--time-stamp-precision=nano",
         "-w", str(pcap), f"tcp port {server.port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # tcpdump says "listening on lo" once its capture is open
        said = ""
        while "listening on" not in said:
            line = cap.stderr.readline().decode()
            assert line, f"tcpdump ended before it listened: {said}"
            said += line
        agentsim(server, tmp_path, "--mode", "full", "--rate", 100, "--requests", 50,
                 "--concurrency", "50", "--stages")
    finally:
        cap.send_signal(subprocess.signal.SIGINT)
        rest = cap.communicate(timeout=30)[1].decode()
    assert "0 packets dropped by kernel" in rest, rest
    out = subprocess.run(["python3", str(WIRE_STAGES), str(pcap), str(server.port), "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    assert out.returncode == 0, out.stderr.decode()
    split = json.loads(out.stdout)
    assert split["connections"] == 50, split
    assert_parts_make_the_whole(split, WIRE)
    server_share = split["server"]["tail_mean"]
    client_share = split["client"]["tail_mean"]
    assert abs(server_share - split["server_first"]["tail_mean"]
               - split["server_second"]["tail_mean"]) < 0.01, split
    assert abs(client_share - split["client_first"]["tail_mean"]
               - split["client_second"]["tail_mean"]) < 0.01, split


def test_a_capture_without_the_port_is_refused_with_the_reason(tmp_path):
    # a capture file with its header only: no connection to find
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(bytes.fromhex("d4c3b2a1020004000000000000000000ffff000001000000"))
    out = subprocess.run(["python3", str(WIRE_STAGES), str(empty), "8443"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    assert out.returncode == 1
    assert f"{empty}: no whole connection to port 8443" in out.stderr.decode()
