"""beacond -t checks a configuration; errors name the file and line."""

import subprocess

from helpers import BEACOND


def check(conf):
    return subprocess.run([str(BEACOND), "-t", "-c", str(conf)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)


def test_good_config_passes(start_server):
    srv = start_server(start=False)
    p = check(srv.conf)
    assert p.returncode == 0, p.stderr.decode()


def test_check_does_not_serve(start_server):
    """-t checks and exits: it neither listens nor stays running. The
    configured port is held by another listener all along: a beacond that
    tried to bind it would fail (or, had it bound, would still be running
    when subprocess.run returned: run waits for the exit)."""
    import socket
    srv = start_server(start=False)
    with socket.socket() as holder:
        holder.bind((srv.host, srv.port))
        holder.listen(1)
        p = check(srv.conf)
        assert p.returncode == 0, p.stderr.decode()
        # The same configuration served for real cannot start beside it.
        served = subprocess.run([str(BEACOND), "-c", str(srv.conf)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, timeout=30)
        assert served.returncode != 0 and b"Address already in use" in served.stderr, served


def test_bad_value_names_file_and_line(start_server):
    srv = start_server(start=False)
    text = srv.conf.read_text().splitlines()
    assert text[0] == "[server]"
    # line 3 of the file becomes "workers = banana"
    text = [ln for ln in text if not ln.startswith("workers")]
    text.insert(2, "workers = banana")
    srv.conf.write_text("\n".join(text) + "\n")
    assert srv.conf.read_text().splitlines()[2] == "workers = banana"
    p = check(srv.conf)
    assert p.returncode != 0
    assert f"{srv.conf}:3:" in p.stderr.decode(), p.stderr.decode()


def test_bad_config_refuses_to_start(start_server):
    srv = start_server(start=False)
    srv.conf.write_text(srv.conf.read_text().replace("max_body = 1G", "max_body = lots"))
    line = next(i for i, ln in enumerate(srv.conf.read_text().splitlines(), 1)
                if ln.startswith("max_body"))
    p = subprocess.run([str(BEACOND), "-c", str(srv.conf)], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30)
    assert p.returncode != 0
    assert f"{srv.conf}:{line}:" in p.stderr.decode(), p.stderr.decode()


def test_unknown_key_is_an_error(start_server):
    srv = start_server(start=False)
    srv.conf.write_text(srv.conf.read_text() + "[limits]\nmax_bodyy = 1M\n")
    n = len(srv.conf.read_text().splitlines())
    p = check(srv.conf)
    assert p.returncode != 0
    assert f"{srv.conf}:{n}:" in p.stderr.decode(), p.stderr.decode()


def test_missing_certificate_file_is_an_error(start_server, tmp_path):
    srv = start_server({"tls": {"cert": str(tmp_path / "nope.pem")}}, start=False)
    p = check(srv.conf)
    assert p.returncode != 0
    assert "nope.pem" in p.stderr.decode(), p.stderr.decode()


def test_empty_issuers_is_an_error(start_server, tmp_path):
    empty = tmp_path / "empty-issuers"
    empty.mkdir()
    srv = start_server({"tls": {"issuers": str(empty)}}, start=False)
    p = check(srv.conf)
    assert p.returncode != 0, "an empty issuer list must not be accepted"


def test_sigterm_exits_zero(start_server):
    """The factory's teardown also checks this; here it is explicit."""
    srv = start_server()
    srv.stop()


def test_store_limit_named_with_file_and_line(start_server):
    """The store's limits are checked once, by the configuration, with the
    file and line: an upload_buffer under the store's minimum (8 KiB) fails
    beacond -t and names the minimum. It used to pass -t (the check allowed
    4 KiB) and then fail at store_open, with neither file nor line."""
    srv = start_server({"store": {"upload_buffer": "6k"}}, start=False)
    line = next(i for i, ln in enumerate(srv.conf.read_text().splitlines(), 1)
                if ln.startswith("upload_buffer"))
    p = check(srv.conf)
    err = p.stderr.decode()
    assert p.returncode != 0, err
    assert (f"{srv.conf}:{line}: [store] upload_buffer: '6k' is out of range (8k to 1G)"
            in err), err
    assert "configuration OK" not in err, err
