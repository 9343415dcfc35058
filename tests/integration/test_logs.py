"""beacond's log lines as journald, syslog and a log shipper read them:
every line carries an RFC 5424 priority that matches its level and a UTC
timestamp (text), or is one JSON object (json); [log] level drops the less
severe lines. A message with quotes, backslashes and braces in it (here:
a path) cannot break a JSON line."""
import json
import re
import shutil
import subprocess
from datetime import datetime
from pathlib import Path

from helpers import BEACOND
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
