"""No private key and no ticket key ever reaches a log line or a metric."""

import base64

from helpers import free_port
from trustkit import http_get, new_ticket_key_line, reload, status_of, upload


def test_no_key_material_in_logs_or_metrics(start_server, tmp_path, pki):
    keys = [new_ticket_key_line(), new_ticket_key_line()]
    keyfile = tmp_path / "tickets.keys"
    keyfile.write_text("\n".join(keys) + "\n")
    port = free_port()
    srv = start_server({"server": {"metrics": f"127.0.0.1:{port}"},
                        "tls": {"ticket_key_file": str(keyfile)}})
    assert status_of(upload(srv)) == 201
    reload(srv, "all")
    status, metrics = http_get(port, "/metrics")
    assert status == 200
    _, page = http_get(port, "/status")
    # The server's private key as it is in its file (base64 lines) and as
    # raw bytes; each ticket key's name and key, in hex either case and as
    # base64.
    server_key = (pki / "server.key").read_text()
    secrets = [line for line in server_key.splitlines()
               if line and not line.startswith("-----")]
    for k in keys:
        raw = bytes.fromhex(k)
        secrets += [k, k.upper(), k[32:], k[32:].upper(),
                    base64.b64encode(raw[16:]).decode()]
    seen = srv.stderr() + metrics.decode(errors="replace") + page.decode(errors="replace")
    leaked = [s for s in secrets if s in seen]
    assert not leaked, f"key material found in logs or metrics: {leaked}"
    assert "PRIVATE KEY" not in seen
