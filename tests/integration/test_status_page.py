"""The /status page on the loopback admin listener, against the real
beacond: successes and refusals are made with real clients, the page is
parsed (panels by id, the refusal table's rows, axis labels apart, a
hostile certificate subject shown as text) and rendered by headless
Chromium, whose screenshot must be a real picture of the page.

Standard library only, plus Debian's `chromium` (scripts/setup.sh).
"""

import os
import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser

import pytest
from cryptography import x509

from certkit import cn, make_ca, make_cert
from helpers import client_context, free_port
from trustkit import assert_admitted, assert_refused, http_get, parse_metrics, wait_until

HOSTILE_CN = "<script>alert(1)</script>&x"
PANELS = ("summary", "auth", "auth-bars", "auth-chart", "auth-totals", "failures",
          "refusals", "http", "http-codes", "expiry", "expiry-dates", "store", "disk-free", "drain",
          "drain-state", "trust")


class Page(HTMLParser):
    """What the tests look at: element ids, script elements, the rows of the
    refusal table as cell texts, tables by id as rows of cell texts, and the
    positions of the chart's axis labels."""

    def __init__(self, html):
        super().__init__(convert_charrefs=True)
        self.ids, self.scripts = set(), 0
        self.tables, self.refusals = {}, []
        self.ylabels, self.xlabels, self.lines = [], [], 0
        self._table, self._row, self._cell = None, None, None
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            assert a["id"] not in self.ids, f"id {a['id']} twice"
            self.ids.add(a["id"])
        if tag == "script":
            self.scripts += 1
        elif tag == "table":
            self._table = self.tables.setdefault(a.get("id"), [])
        elif tag == "tr":
            self._row = []
            if a.get("class") == "refusal":
                self.refusals.append(self._row)
            if self._table is not None:
                self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "path" and a.get("class") == "series":
            self.lines += 1
        elif tag == "text" and a.get("class") == "ylabel":
            self.ylabels.append(float(a["y"]))
        elif tag == "text" and a.get("class") == "xlabel":
            self.xlabels.append(float(a["x"]))

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def png_pixels(data):
    """(width, height, rows) of an 8-bit RGB or RGBA PNG, its row filters
    undone; each row a list of RGB colours as bytes."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    w, h, depth, ctype, _, _, interlace = ihdr
    assert depth == 8 and ctype in (2, 6) and interlace == 0, ihdr
    bpp = 3 if ctype == 2 else 4
    raw, stride = zlib.decompress(idat), w * bpp
    prev, rows = bytearray(stride), []
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up, ul = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + left) & 255
            elif f == 2:
                line[i] = (line[i] + up) & 255
            elif f == 3:
                line[i] = (line[i] + (left + up) // 2) & 255
            elif f == 4:
                p = left + up - ul
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - ul)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else ul
                line[i] = (line[i] + pred) & 255
        rows.append([bytes(line[x:x + 3]) for x in range(0, stride, bpp)])
        prev = line
    return w, h, rows


def longest_run(rows, colour):
    """The most pixels of `colour` side by side in one row."""
    best = 0
    for row in rows:
        run = 0
        for c in row:
            run = run + 1 if c == colour else 0
            best = max(best, run)
    return best


@pytest.fixture
def hostile_client(tmp_path, pki):
    """A client certificate whose subject is markup, from an issuer the
    server does not trust: refused as unknown_ca, and listed on /status."""
    ca = make_ca(cn("Rogue Markup CA"))
    leaf = make_cert(cn(HOSTILE_CN), ca)
    crt, key = leaf.write(tmp_path, "hostile", chain=[ca])
    ctx = client_context(pki, None)
    ctx.load_cert_chain(str(crt), str(key))
    return ctx


def page_when(mport, pred, timeout=10):
    def get():
        code, body = http_get(mport, "/status")
        assert code == 200, code
        page = Page(body.decode())
        return (page, body) if pred(page) else None
    got = wait_until(get, timeout)
    assert got, "the status page never showed the expected state"
    return got


N_OK, N_EXPIRED = 6, 2


@pytest.fixture
def busy_server(start_server, hostile_client):
    """A server with a metrics listener that has seen N_OK uploads, N_EXPIRED
    expired certificates, one untrusted one and the hostile one."""
    mport = free_port()
    srv = start_server({"server": {"metrics": f"127.0.0.1:{mport}"}})
    for _ in range(N_OK):
        assert_admitted(srv, "agent1")
    for _ in range(N_EXPIRED):
        assert_refused(srv, "expired", alert="certificate_expired")
    assert_refused(srv, "untrusted", alert="unknown_ca")
    assert_refused(srv, None, alert="unknown_ca", ctx=hostile_client)
    return srv, mport


def test_status_page_panels_and_refusals(busy_server):
    srv, mport = busy_server
    page, body = page_when(mport, lambda p: len(p.refusals) == N_EXPIRED + 2)
    assert set(PANELS) <= page.ids, f"panels missing: {set(PANELS) - page.ids}"
    # The hostile subject is text in a cell, not markup.
    assert page.scripts == 0, "a <script> element made it into the page"
    assert b"<script" not in body
    assert any(HOSTILE_CN in cell for row in page.refusals for cell in row), page.refusals
    # Newest first: the hostile one was refused last; then the untrusted one.
    header = page.tables["refusals"][0]
    col = {name: header.index(name) for name in ("result", "source", "device", "reason")}
    results = [r[col["result"]] for r in page.refusals]
    assert results == ["unknown_issuer", "unknown_issuer", "expired", "expired"], results
    assert all(r[col["source"]].startswith("127.0.0.1:") for r in page.refusals)
    # An expired certificate our CA signed names its device; an untrusted
    # one names none.
    assert page.refusals[2][col["device"]] == "expired.example", page.refusals[2]
    assert page.refusals[1][col["device"]] == "-", page.refusals[1]
    assert "expired.example" in page.refusals[2][header.index("subject")]
    # Counts and shares as printed.
    totals = {r[0]: r[1:] for r in page.tables["auth-totals"][1:]}
    assert totals["succeeded"][:2] == [str(N_OK), "60.0%"], totals
    assert totals["unknown issuer"][:2] == ["2", "20.0%"], totals
    assert totals["revoked"][:2] == ["0", "0%"], totals
    codes = {r[0]: r[1] for r in page.tables["http-codes"][1:]}
    assert codes.get("201") == str(N_OK), codes
    m = parse_metrics(http_get(mport, "/metrics")[1].decode())
    store = {r[0]: r[1] for r in page.tables["store-counts"]}
    assert store["Uploads the store made durable."] == \
        str(int(m[("beacond_store_uploads_committed_total", "")]))
    trust = {r[0]: r[1] for r in page.tables["trust-counts"]}
    assert trust["Trusted issuing CAs."] == str(int(m[("beacond_issuers", "")]))
    assert int(store["Bytes free to beacond on the data directory's filesystem."]) > 0, store
    assert "Trust reloads refused, the running trust left in force." in trust, trust
    # The server certificate's notAfter, as the certificate says.
    not_after = x509.load_pem_x509_certificate((srv.pki / "server.pem").read_bytes())
    not_after = not_after.not_valid_after.strftime("%Y-%m-%d %H:%M:%S")
    dates = [r for r in page.tables["expiry-dates"][1:]]
    assert ["server certificate notAfter", not_after] == \
        [r for r in dates if r[0].startswith("server")][0][::2][:2], dates
    assert any(r[0] == "issuer certificate notAfter" for r in dates), dates
    # Axis labels cannot overlap: 14 px apart upright, 80 px across.
    ys, xs = sorted(page.ylabels), sorted(page.xlabels)
    assert len(ys) >= 2 and len(xs) >= 2, (ys, xs)
    assert all(b - a >= 14 for a, b in zip(ys, ys[1:])), ys
    assert all(b - a >= 80 for a, b in zip(xs, xs[1:])), xs


def test_status_page_screenshot(busy_server, tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (scripts/setup.sh installs it)")
    srv, mport = busy_server
    # Once a history sample is taken (every 10 s) the hour chart has lines:
    # succeeded, unknown issuer and expired.
    page_when(mport, lambda p: len(p.refusals) == N_EXPIRED + 2 and p.lines == 3, timeout=30)
    shot = tmp_path / "status.png"
    keep = os.environ.get("STATUS_SCREENSHOT")  # where to keep a copy, to look at
    p = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
         "--window-size=1200,2400", f"http://127.0.0.1:{mport}/status"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    assert p.returncode == 0 and shot.exists(), p.stdout.decode(errors="replace")[-3000:]
    if keep:
        shutil.copy(shot, keep)
    w, h, rows = png_pixels(shot.read_bytes())
    assert (w, h) == (1200, 2400), (w, h)
    colours = {c for row in rows for c in row}
    assert len(colours) >= 8, f"{len(colours)} colours: a blank or broken page"
    # The 2 unknown-issuer and 2 expired refusals next to 6 successes are
    # bars one can see, wider than any legend square (10 px).
    for hex_ in ("2e7d32", "6a1b9a", "ef6c00"):
        run = longest_run(rows, bytes.fromhex(hex_))
        assert run >= 40, f"#{hex_}: widest bar {run} px"


def test_status_history_survives_restart(busy_server):
    """The hour chart is kept in the data directory: after a restart the
    refusals and successes from before it are still drawn (the live
    counters start again from zero, so without the file there is no line)."""
    srv, mport = busy_server
    page_when(mport, lambda p: len(p.refusals) == N_EXPIRED + 2)
    srv.stop()  # the last sample is written on the way out
    kept = (srv.data_dir / "status-history").read_text().splitlines()
    assert kept[0].split()[:2] == ["beacond-status-history", "1"], kept[0]
    results = kept[0].split()[2:]
    sums = [sum(int(line.split()[1 + i]) for line in kept[1:]) for i in range(len(results))]
    by_result = dict(zip(results, sums))
    assert by_result["ok"] == N_OK, by_result
    assert by_result["expired"] == N_EXPIRED, by_result
    assert by_result["unknown_issuer"] == 2, by_result
    srv.start()
    page, _ = page_when(mport, lambda p: p.lines == 3)
    totals = {r[0]: r[1:] for r in page.tables["auth-totals"][1:]}
    assert totals["succeeded"][0] == "0", totals  # "since start" means this start


def test_status_history_unreadable_is_named_and_dropped(busy_server):
    srv, mport = busy_server
    srv.stop()
    hist = srv.data_dir / "status-history"
    lines = hist.read_text().splitlines()
    lines.insert(2, "12 not-a-number")
    hist.write_text("\n".join(lines) + "\n")
    srv.start()
    assert f"{hist}:3: not a status history this beacond can read" in srv.stderr(), srv.stderr()
    page, _ = page_when(mport, lambda p: "auth-chart" in p.ids)
    assert page.lines == 0
