"""beacond's log lines as journald, syslog and a log shipper read them:
every line carries an RFC 5424 priority that matches its level and a UTC
timestamp (text), or is one JSON object (json); [log] level drops the less
severe lines. A message with quotes, backslashes and braces in it (here:
a path) cannot break a JSON line."""
import json
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

from certkit import client_ctx, refusal_alert
from helpers import BEACOND, build_request, tls_connect, unique_name
from trustkit import ctl, wait_until

PRIORITY = {"error": 3, "warn": 4, "info": 6, "debug": 7}
TEXT_LINE = re.compile(r"^<(\d)>(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) beacond\[(\w+)\]: \S")


def lines(srv):
    return [l for l in srv.stderr().splitlines() if l]


def odd_issuers(pki, tmp_path):
    """A copy of the issuers under a directory whose name has a quote, a
    backslash and a brace: it shows up in the error a bad reload logs."""
    d = tmp_path / 'is"su\\ers}{'
    shutil.copytree(Path(pki) / "issuers", d)
    return d


def break_issuers(d):
    for f in d.iterdir():
        f.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")


def test_text_lines_carry_priority_and_timestamp(start_server, pki, tmp_path):
    issuers = odd_issuers(pki, tmp_path)
    srv = start_server({"tls": {"issuers": str(issuers)}})
    break_issuers(issuers)
    r = ctl(srv, {"cmd": "reload", "what": "issuers"})
    assert r["ok"] is False, r
    assert wait_until(lambda: any("beacond[error]" in l for l in lines(srv)), 10), srv.stderr()
    seen = set()
    stamps = []
    for line in lines(srv):
        m = TEXT_LINE.match(line)
        assert m, f"a line without priority and timestamp: {line!r}"
        pri, stamp, level = int(m.group(1)), m.group(2), m.group(3)
        assert PRIORITY[level] == pri, line
        stamps.append(datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ"))
        seen.add(level)
    assert {"info", "error"} <= seen, seen
    assert stamps == sorted(stamps), "timestamps out of order"


def test_json_lines_parse_and_escape(start_server, pki, tmp_path):
    issuers = odd_issuers(pki, tmp_path)
    srv = start_server({"tls": {"issuers": str(issuers)}, "log": {"format": "json"}})
    break_issuers(issuers)
    r = ctl(srv, {"cmd": "reload", "what": "issuers"})
    assert r["ok"] is False, r
    assert wait_until(lambda: '"level":"error"' in srv.stderr(), 10), srv.stderr()
    records = []
    for line in lines(srv):
        rec = json.loads(line)  # raises on a broken line
        assert set(rec) == {"time", "priority", "level", "msg"}, rec
        assert PRIORITY[rec["level"]] == rec["priority"], rec
        datetime.strptime(rec["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
        records.append(rec)
    errors = [r for r in records if r["level"] == "error"]
    assert any(str(issuers) in r["msg"] for r in errors), errors


def test_level_drops_less_severe_lines(start_server):
    srv = start_server({"log": {"level": "warn"}})
    assert ctl(srv, {"cmd": "reload", "what": "all"})["ok"] is True
    # The reload's own "reloaded" line is info: dropped. The stop line too;
    # only warnings and errors may be there.
    for line in lines(srv):
        m = TEXT_LINE.match(line)
        assert m and int(m.group(1)) <= 4, f"a line below warn: {line!r}"


def test_bad_log_keys_refused_with_file_and_line(tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text("[log]\nformat = xml\n")
    p = subprocess.run([str(BEACOND), "-t", "-c", str(conf)], capture_output=True, text=True)
    assert p.returncode == 1, p
    assert f"{conf}:2: [log] format: 'xml' is not one of text, json" in p.stderr, p.stderr


ACCESS = re.compile(r"beacond\[info\]: access: (\S+) (\S+) (\S+) (\S+) (\S+) in=(\d+) out=(\d+) "
                    r"upload=(\d+) (\d+)ms$")


def access_lines(srv):
    return [m.groups() for m in map(ACCESS.search, lines(srv)) if m]


def test_access_log_one_line_per_request(start_server):
    srv = start_server()
    name = unique_name("access")
    body = b"a" * 3000
    with tls_connect(srv) as c:
        c.send(build_request("PUT", f"/ManageSoftRL/Inventories/{name}", body=body))
        created = c.read_response()
        assert created.status == 201, created
        c.send(build_request("GET", "/ManageSoftDL/no-such.xml"))
        missing = c.read_response()
        assert missing.status == 404
        c.send(build_request("GET", "/ManageSoftDL/policy.xml"))
        policy = c.read_response()
        assert policy.status == 200
    upload_id = created.header("location").rsplit("/", 1)[1]
    assert wait_until(lambda: len(access_lines(srv)) >= 3, 10), srv.stderr()
    got = [g[1:8] for g in access_lines(srv)]
    assert got == [
        ("agent1.example", "PUT", f"/ManageSoftRL/Inventories/{name}", "201", "3000",
         str(len(created.body)), upload_id),
        ("agent1.example", "GET", "/ManageSoftDL/no-such.xml", "404", "0",
         str(len(missing.body)), "0"),
        ("agent1.example", "GET", "/ManageSoftDL/policy.xml", "200", "0",
         str(len(policy.body)), "0"),
    ], got


def test_access_log_off(start_server):
    srv = start_server({"log": {"access": "no"}})
    with tls_connect(srv) as c:
        c.send(build_request("GET", "/ManageSoftDL/policy.xml"))
        assert c.read_response().status == 200
    srv.stop()
    assert not access_lines(srv), srv.stderr()


def test_refusal_flood_summed_up_not_lost(start_server):
    """A flood of refused handshakes is logged at most 10 lines a second;
    the rest are counted, on the next line or, once the flood stops, in a
    summary line: every refusal is accounted for exactly once."""
    srv = start_server()
    ctx = client_ctx(srv.pki / "untrusted.pem", srv.pki / "untrusted.key", srv.pki / "server-ca.pem")
    n = 60
    with ThreadPoolExecutor(max_workers=30) as pool:
        got = list(pool.map(lambda _: refusal_alert(srv, ctx), range(n)))
    assert got == ["unknown_ca"] * n, got

    def accounted():
        text = srv.stderr()
        lines_ = len(re.findall(r"refused: .*\(unknown_issuer\)", text))
        before = sum(map(int, re.findall(r"\[(\d+) refusal lines left out before this one\]", text)))
        summed = sum(map(int, re.findall(r"(\d+) more refused handshakes in the second from \d+ "
                                         r"were not logged one by one", text)))
        return lines_ + before + summed
    assert wait_until(lambda: accounted() >= n, 30), (accounted(), srv.stderr()[-3000:])
    assert accounted() == n, srv.stderr()[-3000:]
