"""A reload names the changed keys it does not apply (issue 12).

A reload (SIGHUP, beaconctl reload) applies the trust keys of [tls] only.
It used to ignore every other changed key in silence: max_body lowered to
4k in the file, SIGHUP, and a 5,000-byte upload still got 201, with nothing
in the log to say why. Now the log and beaconctl's answer name each such
key and say a restart is needed (README, "Trust at run time"); the running
value stays in force, as the answer says.
"""

import signal

from helpers import curl_upload, unique_name
from trustkit import beaconctl_sock, beaconctl_works, wait_until

BODY = b"x" * 5000


def lower_max_body(srv):
    text = srv.conf.read_text()
    assert "max_body = 1G" in text
    srv.conf.write_text(text.replace("max_body = 1G", "max_body = 4k"))


def upload_status(srv):
    code, p = curl_upload(srv, srv.pki / "agent1.pem", srv.pki / "agent1.key",
                          f"/ManageSoftRL/Inventories/{unique_name('restart')}", BODY)
    assert code, p.stderr.decode()
    return code


def restart_lines(srv):
    return [ln for ln in srv.stderr().splitlines()
            if "max_body" in ln and "restart" in ln]


def test_sighup_logs_keys_that_need_a_restart(start_server):
    srv = start_server({"server": {"watch": "no"}})
    lower_max_body(srv)
    srv.proc.send_signal(signal.SIGHUP)
    lines = wait_until(lambda: restart_lines(srv), 20)
    assert lines, ("SIGHUP with a changed max_body: no log line names it\n"
                   f"stderr:\n{srv.stderr()[-3000:]}")
    assert "[limits] max_body" in lines[0], lines
    # What the line says is true: the running limit is still 1G.
    assert upload_status(srv) == 201


def test_beaconctl_reload_names_keys_that_need_a_restart(start_server):
    srv = start_server({"server": {"watch": "no"}})
    # The control socket opens after the TLS listener start_server waits for.
    assert wait_until(lambda: beaconctl_works(srv), 20), srv.stderr()
    p = beaconctl_sock(srv, "reload", json_out=False)
    assert p.returncode == 0, p.stderr
    assert "restart" not in p.stdout, f"nothing changed, yet: {p.stdout}"

    lower_max_body(srv)
    p = beaconctl_sock(srv, "reload", json_out=False)
    assert p.returncode == 0, p.stderr
    assert "[limits] max_body" in p.stdout and "restart" in p.stdout, p.stdout
    assert upload_status(srv) == 201
    assert restart_lines(srv), srv.stderr()[-3000:]

    # A trust key changed alone is applied, and not reported.
    srv.conf.write_text(srv.conf.read_text().replace("max_body = 4k", "max_body = 1G")
                        .replace("advertise = all", "advertise = none"))
    p = beaconctl_sock(srv, "reload", json_out=False)
    assert p.returncode == 0, p.stderr
    assert "restart" not in p.stdout, p.stdout
