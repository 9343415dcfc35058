"""GET and HEAD under /ManageSoftDL/ serve the download directory, and
nothing outside it."""

import os

import pytest

from helpers import DOWNLOAD_FILES, SECRET, build_request, curl, request, tls_connect


def test_get_policy_curl(server, tmp_path):
    out = tmp_path / "policy.xml"
    p = curl(server, "-o", out, "-w", "%{http_code}", server.url("/ManageSoftDL/policy.xml"))
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout == b"200"
    assert out.read_bytes() == DOWNLOAD_FILES["policy.xml"]


@pytest.mark.parametrize("rel", list(DOWNLOAD_FILES))
def test_get_raw(server, rel):
    resp = request(server, "GET", f"/ManageSoftDL/{rel}")
    assert resp.status == 200, resp
    assert resp.body == DOWNLOAD_FILES[rel]


def test_head_has_length_and_no_body(server):
    """HEAD gives Content-Length and no body: the next response on the same
    connection starts right after the HEAD response's head."""
    expected = DOWNLOAD_FILES["policy.xml"]
    with tls_connect(server) as c:
        c.send(build_request("HEAD", "/ManageSoftDL/policy.xml"))
        head = c.read_response(head_request=True)
        assert head.status == 200, head
        assert head.header("content-length") == str(len(expected))
        c.send(build_request("GET", "/ManageSoftDL/sub/dir/file.bin"))
        nxt = c.read_response()
    assert nxt.status == 200, f"HEAD sent a body? next response: {nxt}"
    assert nxt.body == DOWNLOAD_FILES["sub/dir/file.bin"]


def test_head_curl(server):
    p = curl(server, "-I", "-w", "%{http_code}", "-o", "/dev/null",
             server.url("/ManageSoftDL/policy.xml"))
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout == b"200"


def test_get_missing_is_404(server):
    resp = request(server, "GET", "/ManageSoftDL/no-such-file.xml")
    assert resp.status == 404, resp
    resp = request(server, "GET", "/ManageSoftDL/sub/nothing/here.bin")
    assert resp.status == 404, resp


def test_get_directory_is_not_a_listing(server):
    resp = request(server, "GET", "/ManageSoftDL/sub/dir")
    assert resp.status in (403, 404), resp
    assert b"file.bin" not in resp.body


TRAVERSALS = [
    "/ManageSoftDL/../secret.txt",
    "/ManageSoftDL/../../../../etc/passwd",
    "/ManageSoftDL/sub/../../secret.txt",
    "/ManageSoftDL/%2e%2e/secret.txt",
    "/ManageSoftDL/%2E%2E/secret.txt",
    "/ManageSoftDL/%2e%2e%2fsecret.txt",
    "/ManageSoftDL/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/ManageSoftDL/sub/%2e%2e/%2e%2e/secret.txt",
    "/ManageSoftDL/..%2fsecret.txt",
    "/ManageSoftDL/..%5csecret.txt",
    "/ManageSoftDL/.%2e/secret.txt",
    "/ManageSoftDL//etc/passwd",
    "/ManageSoftDL/%252e%252e/secret.txt",
]


@pytest.mark.parametrize("target", TRAVERSALS)
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_traversal_refused(server, target, method):
    with tls_connect(server) as c:
        c.send(build_request(method, target))
        resp = c.read_response(head_request=(method == "HEAD"))
        # read anything further the server might have sent
        c.sock.settimeout(0.2)
        try:
            extra = c.buf + c.sock.recv(65536)
        except OSError:
            extra = c.buf
    assert resp.status in (400, 404), resp
    assert SECRET.strip() not in resp.body + extra
    assert b"root:" not in resp.body + extra


def test_fifo_is_refused_and_does_not_stall_the_worker(start_server):
    """A FIFO in the download directory (issue 12): opening it for reading
    used to wait for a writer, and the worker with it, so every connection
    on that worker stopped. Now it gets 404 at once, and the only worker
    answers another connection afterwards. One worker, so a stalled one
    would have no other to hide behind."""
    srv = start_server({"server": {"workers": "1"}})
    fifo = srv.download_dir / "stall.xml"
    os.mkfifo(fifo)
    try:
        with tls_connect(srv) as bystander:  # established before the FIFO GET
            for method in ("GET", "HEAD"):
                with tls_connect(srv) as c:
                    c.send(build_request(method, "/ManageSoftDL/stall.xml"))
                    resp = c.read_response(20.0, head_request=(method == "HEAD"))
                assert resp.status == 404, resp
            bystander.send(build_request("GET", "/ManageSoftDL/policy.xml"))
            other = bystander.read_response(20.0)
        assert other.status == 200, other
        assert other.body == DOWNLOAD_FILES["policy.xml"]
    finally:
        release_fifo_readers(fifo)


def release_fifo_readers(fifo):
    """Opens the FIFO for writing and closes it: a reader stuck in open()
    (the old code) gets EOF, so the server can still be stopped."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return  # ENXIO: nobody is reading it
    os.close(fd)
