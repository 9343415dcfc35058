"""agentsim's GET mode (perf/poll.sh, issue 17 item 5) against a real
beacond, so the poll benchmark cannot rot: the 200/304 split it counts is
the one it asked for, the bodies of the 200s are counted to the byte, a
wrong length is caught, and the resumed connections of the warm-up are
left out of the window. No timing is asserted."""

import json
import os
import subprocess
import time
from email.utils import formatdate
from pathlib import Path

import pytest

from helpers import BEACOND, curl

AGENTSIM = Path(os.environ.get("AGENTSIM", BEACOND.parent / "perf" / "agentsim"))
AGENTS = 100  # many more than connections: an agent polls again only after its last poll ended
POLICY_SIZE = 3000
PACKAGE_SIZE = 200 * 1024
MTIME = 1767225600  # 2026-01-01 00:00:00 UTC: long settled
SINCE = formatdate(MTIME, usegmt=True)


@pytest.fixture(scope="module")
def files(server):
    """Per-device policies and one package, all dated MTIME. Returns once
    beacond gives them validators (a file changed under 2 s ago has none)."""
    dl = server.download_dir
    (dl / "Policy").mkdir(exist_ok=True)
    (dl / "Packages").mkdir(exist_ok=True)
    for i in range(1, AGENTS + 1):
        (dl / "Policy" / f"agent-{i:06d}.npl").write_bytes(bytes([i]) * POLICY_SIZE)
    (dl / "Packages" / "package.bin").write_bytes(os.urandom(PACKAGE_SIZE))
    for p in list((dl / "Policy").iterdir()) + [dl / "Packages" / "package.bin"]:
        os.utime(p, (MTIME, MTIME))
    deadline = time.monotonic() + 60
    while True:
        head = curl(server, "-I", server.url("/ManageSoftDL/Packages/package.bin"))
        if b"last-modified:" in head.stdout.lower():
            return head.stdout.decode()
        assert time.monotonic() < deadline, f"no Last-Modified within 60 s:\n{head.stdout}"
        time.sleep(0.2)


def agentsim(server, tmp_path, *args):
    assert AGENTSIM.exists(), f"agentsim not found at {AGENTSIM} (ninja -C build perf/agentsim)"
    pki = server.pki
    p = subprocess.run(
        [str(AGENTSIM), "--method", "GET", "--certs", str(AGENTS), "--concurrency", "4",
         "--quiet", "--timeout", "30", "--ca-cert", str(pki / "agents-ca.pem"),
         "--ca-key", str(pki / "agents-ca.key"), "--cache", str(tmp_path / "agents"),
         "--server-pid", str(server.proc.pid), *map(str, args),
         f"https://127.0.0.1:{server.port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
    lines = p.stdout.decode().strip().splitlines()
    assert lines, f"agentsim printed no result (status {p.returncode}):\n{p.stderr.decode()}"
    return json.loads(lines[-1]), p.stderr.decode()


def no_errors(result, stderr):
    assert not any(result["errors"].values()), f"{result['errors']}\n{stderr}"


def test_keepalive_polls_count_304_and_200_with_their_bodies(server, files, tmp_path):
    r, err = agentsim(server, tmp_path, "--mode", "keepalive",
                      "--path", "/ManageSoftDL/Policy/{device}.npl",
                      "--if-modified-since", SINCE, "--stale", "0.3",
                      "--expect-length", POLICY_SIZE, "--requests", 300)
    no_errors(r, err)
    assert r["requests"] == 300
    assert r["http_200"] + r["http_304"] == 300
    # 30% stale: 90 expected, far from both ends of a binomial(300, 0.3)
    assert 30 <= r["http_200"] <= 160, r
    assert r["body_bytes"] == r["http_200"] * POLICY_SIZE
    assert r["server_cpu_s"] >= 0


def test_resumed_polls_after_warmup_are_all_resumptions(server, files, tmp_path):
    r, err = agentsim(server, tmp_path, "--mode", "resume",
                      "--path", "/ManageSoftDL/Policy/{device}.npl",
                      "--if-modified-since", SINCE, "--stale", "0.1",
                      "--expect-length", POLICY_SIZE, "--warmup", AGENTS, "--requests", 60)
    no_errors(r, err)
    assert r["requests"] == 60
    assert r["http_200"] + r["http_304"] == 60
    assert r["body_bytes"] == r["http_200"] * POLICY_SIZE
    # every agent had its full handshake in the warm-up, so the window's
    # are resumptions (a handshake is in the window by when it happened:
    # the first few polls' were before it). Now and then one or two of 60
    # are full handshakes on a busy machine (cause not found; perf/README
    # says so); a warm-up or resumption that does not work makes them all
    # full, so the bound is set far from both.
    assert r["handshakes"] > 0 and r["resumed_fraction"] >= 0.5, r


def test_if_none_match_polls_of_a_package(server, files, tmp_path):
    etag = next(line.split(":", 1)[1].strip() for line in files.splitlines()
                if line.lower().startswith("etag:"))
    r, err = agentsim(server, tmp_path, "--mode", "keepalive",
                      "--path", "/ManageSoftDL/Packages/package.bin",
                      "--if-none-match", etag, "--stale", "0.5",
                      "--expect-length", PACKAGE_SIZE, "--requests", 100)
    no_errors(r, err)
    assert r["http_200"] + r["http_304"] == 100
    assert 10 <= r["http_200"] <= 90, r
    assert r["body_bytes"] == r["http_200"] * PACKAGE_SIZE


def test_a_wrong_body_length_is_an_error(server, files, tmp_path):
    r, err = agentsim(server, tmp_path, "--mode", "keepalive",
                      "--path", "/ManageSoftDL/Packages/package.bin",
                      "--expect-length", PACKAGE_SIZE - 1, "--requests", 10)
    assert r["http_200"] == 0 and r["errors"]["protocol"] == 10, r
    assert f"HTTP 200 with {PACKAGE_SIZE} body bytes, not {PACKAGE_SIZE - 1}" in err


def test_up_to_date_polls_get_304_only(server, files, tmp_path):
    r, err = agentsim(server, tmp_path, "--mode", "keepalive",
                      "--path", "/ManageSoftDL/Policy/{device}.npl",
                      "--if-modified-since", SINCE, "--stale", "0",
                      "--expect-length", POLICY_SIZE, "--requests", 50)
    no_errors(r, err)
    assert r["http_304"] == 50 and r["http_200"] == 0 and r["body_bytes"] == 0, r


def test_a_200_where_a_304_is_due_is_a_status_error(server, files, tmp_path):
    # the "up-to-date" agents send a date older than the files: the server
    # rightly sends them whole, and agentsim must not count that as a poll
    r, err = agentsim(server, tmp_path, "--mode", "keepalive",
                      "--path", "/ManageSoftDL/Policy/{device}.npl",
                      "--if-modified-since", formatdate(MTIME - 86400, usegmt=True),
                      "--stale", "0", "--requests", 10)
    assert r["http_200"] == 0 and r["errors"]["status"] == 10, r
    assert "HTTP status 200, not 304" in err


def test_an_unknown_option_is_refused_with_the_usage():
    # it used to index the option table with getopt's '?' and crash
    p = subprocess.run([str(AGENTSIM), "--no-such-option", "https://127.0.0.1:1"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    assert p.returncode == 2, p
    assert b"unrecognized option '--no-such-option'" in p.stderr
    assert b"usage: agentsim" in p.stderr
