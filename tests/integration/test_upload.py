"""Uploads to /ManageSoftRL/<category>/<name> reach the store byte for byte."""

import os
import threading

import pytest

from helpers import (build_request, chunked, curl, curl_upload, tls_connect,
                     unique_name)

SIZES = {"0B": 0, "1KiB": 1024}


def agent(server, name="agent1"):
    return server.pki / f"{name}.pem", server.pki / f"{name}.key"


def assert_stored(server, name, data, device="agent1.example", category="Inventories"):
    row = server.find_upload(name, device)
    assert row["device"] == device
    assert row["category"] == category
    assert row["name"] == name
    assert int(row["length"]) == len(data)
    got = server.upload_bytes(row["id"])
    assert len(got) == len(data)
    assert got == data, "stored bytes differ from the uploaded bytes"
    return row


@pytest.mark.parametrize("method", ["PUT", "POST"])
@pytest.mark.parametrize("size", list(SIZES))
def test_upload_small(server, method, size):
    data = os.urandom(SIZES[size])
    name = unique_name(f"{method.lower()}-{size}")
    code, p = curl_upload(server, *agent(server), f"/ManageSoftRL/Inventories/{name}",
                          data, method=method)
    assert code == 201, p.stderr.decode()
    assert_stored(server, name, data)


@pytest.mark.parametrize("method", ["PUT", "POST"])
def test_upload_10mib(server, big_file, method):
    name = unique_name(f"{method.lower()}-10MiB")
    code, p = curl_upload(server, *agent(server), f"/ManageSoftRL/Inventories/{name}",
                          big_file, method=method)
    assert code == 201, p.stderr.decode()
    assert_stored(server, name, big_file.read_bytes())


def test_upload_other_category(server):
    data = b"usage data\n" * 50
    name = unique_name("usage", "mmi")
    code, p = curl_upload(server, *agent(server), f"/ManageSoftRL/UsageData/{name}", data)
    assert code == 201, p.stderr.decode()
    assert_stored(server, name, data, category="UsageData")


def test_identity_is_certificate_cn(server):
    """Each upload is filed under the CN of the certificate that sent it."""
    name = unique_name("identity")
    data = b"from agent2\n"
    code, p = curl_upload(server, *agent(server, "agent2"),
                          f"/ManageSoftRL/Inventories/{name}", data)
    assert code == 201, p.stderr.decode()
    assert_stored(server, name, data, device="agent2.example")
    assert [r for r in server.uploads("agent1.example") if r["name"] == name] == []
    assert [r for r in server.uploads("agent3.example") if r["name"] == name] == []


def test_upload_second_issuer(server):
    """An agent of the second trusted issuer uploads too."""
    name = unique_name("ca2")
    data = b"issued by the second agents CA\n"
    code, p = curl_upload(server, *agent(server, "agent-ca2"),
                          f"/ManageSoftRL/Inventories/{name}", data)
    assert code == 201, p.stderr.decode()
    assert_stored(server, name, data, device="agent-ca2.example")


def test_same_name_twice_keeps_both(server):
    """An upload never overwrites an earlier one: both are kept."""
    name = unique_name("twice")
    a, b = b"first version\n", b"second version, longer\n"
    for data in (a, b):
        code, p = curl_upload(server, *agent(server), f"/ManageSoftRL/Inventories/{name}", data)
        assert code == 201, p.stderr.decode()
    rows = [r for r in server.uploads("agent1.example") if r["name"] == name]
    assert len(rows) == 2
    assert rows[0]["id"] != rows[1]["id"]
    assert sorted(server.upload_bytes(r["id"]) for r in rows) == sorted([a, b])


def test_curl_chunked(server, big_file):
    name = unique_name("curl-chunked")
    code, p = curl_upload(server, *agent(server), f"/ManageSoftRL/Inventories/{name}",
                          big_file, extra_args=["-H", "Transfer-Encoding: chunked", "-v"])
    assert code == 201, p.stderr.decode()
    assert b"transfer-encoding: chunked" in p.stderr.lower(), "curl did not send chunked"
    assert_stored(server, name, big_file.read_bytes())


def test_raw_chunked_odd_sizes(server):
    data = os.urandom(300_001)
    name = unique_name("raw-chunked")
    body = chunked(data, [1, 7, 4093, 65537, 2, 16385, 3])
    with tls_connect(server) as c:
        c.send(build_request("PUT", f"/ManageSoftRL/Inventories/{name}",
                             ["Transfer-Encoding: chunked"], body))
        resp = c.read_response()
    assert resp.status == 201, resp
    assert_stored(server, name, data)


def test_raw_chunked_sent_in_pieces(server):
    """Chunk framing split at every awkward place across TLS records."""
    data = os.urandom(5000)
    name = unique_name("raw-chunked-pieces")
    body = chunked(data, [999, 1, 4000])
    head = build_request("POST", f"/ManageSoftRL/Inventories/{name}",
                         ["Transfer-Encoding: chunked"], b"")
    with tls_connect(server) as c:
        c.send(head)
        for i in range(0, len(body), 333):
            c.send(body[i:i + 333])
        # the terminating "0\r\n\r\n" one byte at a time is covered by 333
        # not dividing the framing; also send nothing more and read.
        resp = c.read_response()
    assert resp.status == 201, resp
    assert_stored(server, name, data)


def test_raw_chunked_with_extension_and_trailer(server):
    data = b"hello, chunk extensions and trailers\n"
    name = unique_name("raw-chunked-trailer")
    body = (b"%x;ext=1\r\n" % 10 + data[:10] + b"\r\n"
            + b"%x\r\n" % (len(data) - 10) + data[10:] + b"\r\n"
            + b"0\r\nX-Checksum: abc\r\n\r\n")
    with tls_connect(server) as c:
        c.send(build_request("PUT", f"/ManageSoftRL/Inventories/{name}",
                             ["Transfer-Encoding: chunked"], body))
        resp = c.read_response()
    assert resp.status == 201, resp
    assert_stored(server, name, data)


def test_expect_100_continue(server):
    """100 Continue arrives before any body byte is sent; then 201."""
    data = os.urandom(200_000)
    name = unique_name("expect")
    head = build_request("PUT", f"/ManageSoftRL/Inventories/{name}",
                         [f"Content-Length: {len(data)}", "Expect: 100-continue"],
                         b"", content_length=False)
    with tls_connect(server) as c:
        c.send(head)
        interim = c.read_response(timeout=5)
        assert interim.status == 100, interim
        assert interim.version == "HTTP/1.1"
        c.send(data)
        resp = c.read_response()
    assert resp.status == 201, resp
    assert_stored(server, name, data)


def test_curl_expect_100_continue(server, big_file):
    """curl sends Expect: 100-continue for large bodies and must get 100."""
    name = unique_name("curl-expect")
    code, p = curl_upload(server, *agent(server), f"/ManageSoftRL/Inventories/{name}",
                          big_file, extra_args=["-H", "Expect: 100-continue", "-v"])
    assert code == 201, p.stderr.decode()
    assert b"HTTP/1.1 100" in p.stderr, "server did not answer 100 Continue"
    assert_stored(server, name, big_file.read_bytes())


def test_keep_alive_curl(server, tmp_path):
    """Two uploads with one curl run share one connection."""
    a, b = unique_name("ka1"), unique_name("ka2")
    fa, fb = tmp_path / "a", tmp_path / "b"
    fa.write_bytes(b"A" * 1000)
    fb.write_bytes(b"B" * 2000)
    p = curl(server, "-w", "%{http_code} %{num_connects}\\n", "-o", "/dev/null",
             "-T", fa, server.url(f"/ManageSoftRL/Inventories/{a}"),
             "-o", "/dev/null",
             "-T", fb, server.url(f"/ManageSoftRL/Inventories/{b}"))
    assert p.returncode == 0, p.stderr.decode()
    lines = p.stdout.decode().split()
    assert lines == ["201", "1", "201", "0"], (
        f"expected two 201s on one connection, curl -w says {lines}")
    assert_stored(server, a, fa.read_bytes())
    assert_stored(server, b, fb.read_bytes())


def test_keep_alive_raw_pipelined(server):
    """Several requests on one connection, the last two pipelined."""
    names = [unique_name(f"ka-raw{i}") for i in range(3)]
    datas = [os.urandom(n) for n in (10, 0, 70_000)]
    with tls_connect(server) as c:
        c.send(build_request("PUT", f"/ManageSoftRL/Inventories/{names[0]}", body=datas[0]))
        r0 = c.read_response()
        c.send(build_request("POST", f"/ManageSoftRL/Inventories/{names[1]}", body=datas[1])
               + build_request("PUT", f"/ManageSoftRL/Inventories/{names[2]}", body=datas[2]))
        r1 = c.read_response()
        r2 = c.read_response()
        c.send(build_request("GET", "/ManageSoftDL/policy.xml"))
        r3 = c.read_response()
    assert [r.status for r in (r0, r1, r2, r3)] == [201, 201, 201, 200]
    for n, d in zip(names, datas):
        assert_stored(server, n, d)


def test_connection_close_honoured(server):
    name = unique_name("close")
    with tls_connect(server) as c:
        c.send(build_request("PUT", f"/ManageSoftRL/Inventories/{name}",
                             ["Connection: close"], b"bye"))
        resp = c.read_response()
        assert resp.status == 201, resp
        closed, rest = c.wait_closed(5)
        assert closed, "server kept the connection open after Connection: close"
        assert rest == b""
    assert_stored(server, name, b"bye")


def test_concurrent_uploads(server):
    """Eight agents' uploads at once are all stored intact."""
    jobs = []
    for i in range(8):
        who = ["agent1", "agent2", "agent3"][i % 3]
        jobs.append((who, unique_name(f"conc{i}"), os.urandom(50_000 + i * 1111)))
    results = {}

    def run(job):
        who, name, data = job
        results[name] = curl_upload(server, *agent(server, who),
                                    f"/ManageSoftRL/Inventories/{name}", data)

    threads = [threading.Thread(target=run, args=(j,)) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for who, name, data in jobs:
        code, p = results[name]
        assert code == 201, p.stderr.decode()
        assert_stored(server, name, data, device=f"{who}.example")


def test_uploads_survive_restart(start_server):
    """A 201 means stored: the upload is there after a restart, and the
    restarted server adds to the same store."""
    srv = start_server()
    first, second = unique_name("before-restart"), unique_name("after-restart")
    data1, data2 = os.urandom(30_000), os.urandom(40_000)
    code, p = curl_upload(srv, *agent(srv), f"/ManageSoftRL/Inventories/{first}", data1)
    assert code == 201, p.stderr.decode()
    srv.stop()
    assert_stored(srv, first, data1)  # beaconctl reads the store with beacond down
    srv.start()
    code, p = curl_upload(srv, *agent(srv), f"/ManageSoftRL/Inventories/{second}", data2)
    assert code == 201, p.stderr.decode()
    assert_stored(srv, first, data1)
    assert_stored(srv, second, data2)
