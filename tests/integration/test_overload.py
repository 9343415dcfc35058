"""Overload: when the store has as many uploads in flight as it may hold,
new uploads get 503 with Retry-After at once, the ones in flight finish,
and nothing acknowledged is lost."""

import concurrent.futures
import hashlib
import os

from helpers import build_request, tls_connect, unique_name

UP = "/ManageSoftRL/Inventories/"


def one_upload(server, size):
    data = os.urandom(size)
    name = unique_name("overload")
    with tls_connect(server, timeout=30) as c:
        # Two halves with a pause between them keep the upload in flight
        # long enough for the others to pile up behind it.
        head = build_request("PUT", UP + name, [f"Content-Length: {size}"], b"",
                             content_length=False)
        c.send(head + data[: size // 2])
        c.send(data[size // 2:])
        resp = c.read_response(timeout=30)
    return name, hashlib.sha256(data).hexdigest(), resp


def test_store_full_answers_503_and_keeps_the_rest(start_server):
    # One worker, at most 2 uploads in flight, small buffers: 16 clients
    # at once are 8 times what it takes.
    srv = start_server({"server": {"workers": "1"},
                        "store": {"max_open_uploads": "2", "upload_buffer": "16k"}})
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: one_upload(srv, 2 * 1024 * 1024), range(16)))
    statuses = sorted(r.status for _, _, r in results)
    assert set(statuses) <= {201, 503}, statuses
    assert 503 in statuses, f"no upload was refused at 8x the store's capacity: {statuses}"
    assert 201 in statuses, statuses
    for name, digest, resp in results:
        if resp.status == 503:
            assert resp.header("Retry-After"), resp
            assert not [r for r in srv.uploads() if r.get("name") == name], name
        else:
            rec = srv.find_upload(name)
            assert hashlib.sha256(srv.upload_bytes(rec["id"])).hexdigest() == digest
    # Once the wave is over, the server takes uploads again.
    name, digest, resp = one_upload(srv, 4096)
    assert resp.status == 201, resp
