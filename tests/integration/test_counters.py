"""Every counted value is reported: the counter table (include/beacon/
counters.h, and the DPDK stack's TRANSPORT_NET_COUNTERS in transport.h) is
read here, and a running beacond, after a real upload and download, must
show each row in /metrics (its HELP and TYPE lines and its series) and in
`beaconctl --json stats` (its key), with the same value in both; `beaconctl
stats` lists each key too. Nothing outside the table is reported, apart from
the two figures /metrics derives at scrape time.
"""

import json
import os
import subprocess
from pathlib import Path
import re

from helpers import BACKEND, BEACOND, DOWNLOAD_FILES, REPO, curl, curl_upload, free_port, unique_name
from trustkit import beaconctl_sock, http_get, wait_until

COUNTERS_H = REPO / "include" / "beacon" / "counters.h"
TRANSPORT_H = REPO / "include" / "beacon" / "transport.h"

PROM_TYPE = {"COUNTER": "counter", "ALSO_COUNTER": "counter", "GAUGE": "gauge",
             "COUNTER_BY_RESULT": "counter", "HISTOGRAM": "histogram"}
# Values that move with the clock alone: present in both, compared by nothing.
# The disk's free bytes are the machine's, not beacond's: any other
# process writing to the same filesystem moves them (a loaded CI run never
# saw them hold still for three reads).
TICKING = {"uptime_s", "worker_busy_ns", "worker_work_ns", "store_disk_free_bytes"}
# Figures /metrics computes from the table's values when it is scraped.
DERIVED = {"beacond_resumption_ratio", "beacond_snapshot_age_seconds", "beacond_build_info",
           "process_start_time_seconds"}
# Labelled series of variable count, rendered beside the derived figures
# and given as arrays in stats; their values are checked in
# test_metrics_ops.py.
LABELLED = {"beacond_certificate_not_after_seconds": "certificate_expiry",
            "beacond_crl_next_update_seconds": "crl_next_update",
            "beacond_worker_busy_seconds_total": "worker_busy_ns",
            "beacond_worker_work_seconds_total": "worker_work_ns"}
DERIVED |= set(LABELLED)

_STR = r'((?:"(?:[^"\\]|\\.)*"\s*)+)'  # a C string literal, maybe split in pieces
_ROW = re.compile(r'X\(\s*(\w+)\s*,\s*(\w+)\s*,\s*' + _STR + r',\s*' + _STR + r',\s*' + _STR
                  + r'\)')
_NET_ROW = re.compile(r'X\(\s*(\w+)\s*,\s*' + _STR + r'\)')


def c_string(literal):
    pieces = re.findall(r'"((?:[^"\\]|\\.)*)"', literal)
    return re.sub(r'\\(.)', r'\1', "".join(pieces))


def macro_body(path, name):
    """The body of `#define NAME(X) ...`, continuation lines joined."""
    lines = path.read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(f"#define {name}(X)"))
    body = []
    for ln in lines[start:]:
        body.append(ln.rstrip().rstrip("\\"))
        if not ln.rstrip().endswith("\\"):
            break
    return "\n".join(body)[len(f"#define {name}(X)"):]


def table(name):
    body = macro_body(COUNTERS_H, name)
    rows = [{"field": m[0], "type": m[1], "metric": c_string(m[2]), "labels": c_string(m[3]),
             "help": c_string(m[4])} for m in _ROW.findall(body)]
    assert len(rows) == body.count("X("), f"{name}: a row this test cannot read"
    return rows


def net_table():
    body = macro_body(TRANSPORT_H, "TRANSPORT_NET_COUNTERS")
    rows = [{"field": m[0], "help": c_string(m[1])} for m in _NET_ROW.findall(body)]
    assert len(rows) == body.count("X("), "TRANSPORT_NET_COUNTERS: a row this test cannot read"
    return rows


ROWS = table("COUNTERS_PROCESS") + table("COUNTERS_WORKER")

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?\s+(\S+)$')


def scrape(port):
    """(samples {(name, labels): value}, help {family: text}, type {family:
    type}) of /metrics."""
    status, body = http_get(port, "/metrics")
    assert status == 200, body
    samples, helps, types = {}, {}, {}
    for line in body.decode().splitlines():
        if line.startswith("# HELP "):
            name, _, text = line[7:].partition(" ")
            assert name not in helps, f"{name}: two HELP lines (a family split in two)"
            helps[name] = text
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert name not in types, f"{name}: two TYPE lines (a family split in two)"
            types[name] = kind
        elif line:
            m = _SAMPLE.match(line)
            assert m, f"not a Prometheus sample line: {line!r}"
            samples[(m[1], m[2] or "")] = float(m[3])
    return samples, helps, types


def stats_json(srv):
    p = beaconctl_sock(srv, "stats")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def json_keys(row):
    """The keys a row gives `beaconctl --json stats`."""
    f = row["field"]
    if row["type"] == "HISTOGRAM":
        return [f"{f}_bucket", f"{f}_le_us", f"{f}_sum_us", f"{f}_count"]
    return [f]


def series(row, st):
    """{(metric, labels): value in stats} of the samples a row gives /metrics."""
    f, name, labels = row["field"], row["metric"], row["labels"]
    if row["type"] == "COUNTER_BY_RESULT":
        return {(name, f'result="{r}"'): v for r, v in st[f].items()}
    if row["type"] == "HISTOGRAM":
        out = {(f"{name}_bucket", f'le="{le / 1e6:g}"'): v
               for le, v in zip(st[f"{f}_le_us"], st[f"{f}_bucket"])}
        out[(f"{name}_bucket", 'le="+Inf"')] = st[f"{f}_bucket"][-1]
        out[(f"{name}_sum", "")] = st[f"{f}_sum_us"] / 1e6
        out[(f"{name}_count", "")] = st[f"{f}_count"]
        return out
    return {(name, labels): st[f]}


def test_table_is_well_formed():
    """The renderers rely on it: known types, a family's rows adjacent and of
    one help and type, no series twice."""
    seen_families, seen_series, prev = set(), set(), None
    for row in ROWS:
        assert row["type"] in PROM_TYPE, row
        assert row["help"].endswith("."), row
        fam = row["metric"]
        if fam != (prev or {}).get("metric"):
            assert fam not in seen_families, f"{fam}: its rows are not adjacent"
            seen_families.add(fam)
        else:
            assert row["help"] == prev["help"], f"{fam}: two HELP texts"
            assert PROM_TYPE[row["type"]] == PROM_TYPE[prev["type"]], f"{fam}: two types"
        assert (fam, row["labels"]) not in seen_series, row
        seen_series.add((fam, row["labels"]))
        prev = row
    also = [r["field"] for r in ROWS if r["type"] == "ALSO_COUNTER"]
    first = {r["field"] for r in ROWS if r["type"] != "ALSO_COUNTER"}
    assert set(also) <= first, "an ALSO_COUNTER row without its first row"
    assert len(first) == len([r for r in ROWS if r["type"] != "ALSO_COUNTER"]), "a field twice"


def settled(srv, port):
    """stats, /metrics, stats again, until the two stats agree on every
    counter (uptime aside): then /metrics was read in between, from the
    same values."""
    def once():
        before = stats_json(srv)
        m = scrape(port)
        after = stats_json(srv)
        still = all(before[k] == after[k] for k in before if k not in TICKING)
        return (before, m) if still else None
    got = wait_until(once, 30)
    assert got, "the counters never held still"
    return got


def test_every_counter_in_metrics_and_stats(start_server, tmp_path):
    port = free_port()
    srv = start_server({"server": {"metrics": f"127.0.0.1:{port}"}})  # READY=1: it listens
    body = b"counted " * 1000
    code, p = curl_upload(srv, srv.pki / "agent1.pem", srv.pki / "agent1.key",
                          f"/ManageSoftRL/Inventories/{unique_name('counters')}", body)
    assert code == 201, p.stderr.decode()
    out = tmp_path / "policy.xml"
    p = curl(srv, "-o", out, "-w", "%{http_code}", srv.url("/ManageSoftDL/policy.xml"))
    assert p.stdout == b"200", p.stderr.decode()
    assert out.read_bytes() == DOWNLOAD_FILES["policy.xml"]

    assert wait_until(lambda: stats_json(srv)["download_bytes"] > 0, 10), stats_json(srv)
    st, (samples, helps, types) = settled(srv, port)
    missing = []
    for row in ROWS:
        fam = row["metric"]
        for key in json_keys(row):
            if key not in st:
                missing.append(f"stats lacks {key!r}")
        if helps.get(fam) != row["help"]:
            missing.append(f"/metrics: {fam} HELP {helps.get(fam)!r}, table {row['help']!r}")
        if types.get(fam) != PROM_TYPE[row["type"]]:
            missing.append(f"/metrics: {fam} TYPE {types.get(fam)!r}")
        if row["field"] in TICKING or any(k not in st for k in json_keys(row)):
            if (fam, row["labels"]) not in samples:
                missing.append(f"/metrics lacks {fam}{{{row['labels']}}}")
            continue
        for sample, want in series(row, st).items():
            got = samples.get(sample)
            if got is None:
                missing.append(f"/metrics lacks {sample[0]}{{{sample[1]}}}")
            elif abs(got - want) > 1e-6 * max(1.0, abs(want)):
                missing.append(f"{sample[0]}{{{sample[1]}}} = {got}, stats {row['field']} {want}")
    assert not missing, "\n".join(missing)

    # What the traffic above did, so the rows are wired to what they count.
    assert st["uploads"] == 1 and st["upload_bytes"] == len(body), st
    assert st["downloads"] == 1, st
    assert st["download_bytes"] == len(DOWNLOAD_FILES["policy.xml"]), st
    assert st["handshakes"]["ok"] == 2 and st["commit_latency_count"] == 1, st
    assert (st["responses_201"], st["responses_200"]) == (1, 1), st
    assert samples[("beacond_responses_by_status_total", 'code="201"')] == 1, samples

    # Nothing reported from outside the table.
    families = {r["metric"] for r in ROWS}
    net_names = {f"beacond_net_{r['field']}_total" for r in net_table()}
    stray = set(types) - families - DERIVED - net_names
    assert not stray, f"/metrics families not in the counter table: {stray}"
    keys = {k for r in ROWS for k in json_keys(r)} | {"ok", "net"} | set(LABELLED.values())
    assert not set(st) - keys, f"stats keys not in the counter table: {set(st) - keys}"
    for fam, key in LABELLED.items():
        assert fam in types and key in st, f"{fam} / stats {key!r} missing"

    check_net(st, samples, helps)
    check_text_stats(srv)
    check_process(srv, samples)


def check_process(srv, samples):
    """build_info carries the version beacond --version prints; the start
    time is the kernel's for the process (/proc), as printed (2 decimals)."""
    version = subprocess.run([str(BEACOND), "--version"], capture_output=True,
                             text=True).stdout.split()[1]
    assert samples.get(("beacond_build_info", f'version="{version}"')) == 1, samples
    ticks = os.sysconf("SC_CLK_TCK")
    start_ticks = int(Path(f"/proc/{srv.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    boot = next(int(l.split()[1]) for l in open("/proc/stat") if l.startswith("btime"))
    started = boot + start_ticks / ticks
    got = samples[("process_start_time_seconds", "")]
    assert got == round(started, 2), (got, started)


def test_responses_counted_by_status(start_server):
    """507, 503 and 413 look alike as "5xx"/"4xx"; each code has its own
    series. A 404, a 405 and a 413 on one server, counted exactly."""
    port = free_port()
    srv = start_server({"server": {"metrics": f"127.0.0.1:{port}"},
                        "limits": {"max_body": "1k"}})
    key = (srv.pki / "agent1.pem", srv.pki / "agent1.key")
    p = curl(srv, "-o", "/dev/null", "-w", "%{http_code}", srv.url("/ManageSoftDL/none.xml"))
    assert p.stdout == b"404", p.stderr.decode()
    p = curl(srv, "-o", "/dev/null", "-w", "%{http_code}", "-X", "DELETE",
             srv.url("/ManageSoftDL/policy.xml"))
    assert p.stdout == b"405", p.stderr.decode()
    code, p = curl_upload(srv, *key, f"/ManageSoftRL/Inventories/{unique_name('big')}",
                          b"x" * 4096)
    assert code == 413, p.stderr.decode()
    st, (samples, _, _) = settled(srv, port)
    by_code = {k[1]: v for k, v in samples.items() if k[0] == "beacond_responses_by_status_total"}
    assert {c: v for c, v in by_code.items() if v} == \
        {'code="404"': 1, 'code="405"': 1, 'code="413"': 1}, by_code
    assert st["responses_4xx"] == 3, st


def check_net(st, samples, helps):
    """The DPDK stack's list: every counter in both with backend = dpdk;
    none in either with the kernel's TCP, which counts for itself."""
    net = net_table()
    if BACKEND != "dpdk":
        assert "net" not in st, st["net"]
        assert not [s for s in samples if s[0].startswith("beacond_net_")]
        return
    missing = []
    for row in net:
        name = f"beacond_net_{row['field']}_total"
        if row["field"] not in st.get("net", {}):
            missing.append(f"stats lacks net.{row['field']}")
        if (name, "") not in samples:
            missing.append(f"/metrics lacks {name}")
        if helps.get(name) != "DPDK stack: " + row["help"]:
            missing.append(f"/metrics: {name} HELP {helps.get(name)!r}")
    assert not missing, "\n".join(missing)


def check_text_stats(srv):
    """`beaconctl stats` (for people) lists every key too."""
    p = beaconctl_sock(srv, "stats", json_out=False)
    assert p.returncode == 0, p.stderr
    names = {ln.split()[0] for ln in p.stdout.splitlines() if ln.strip()}
    for row in ROWS:
        if row["type"] == "COUNTER_BY_RESULT":
            want = [f"{row['field']}.ok"]
        elif row["type"] == "HISTOGRAM":
            want = [f"{row['field']}_bucket[0]", f"{row['field']}_sum_us",
                    f"{row['field']}_count"]
        else:
            want = [row["field"]]
        for w in want:
            assert w in names, f"`beaconctl stats` lacks {w}:\n{p.stdout}"
