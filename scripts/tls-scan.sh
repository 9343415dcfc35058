#!/usr/bin/env bash
# Protocol-level scan of beacond with testssl.sh (Debian package
# testssl.sh): starts build/beacond on loopback with a demo PKI, scans it, and
# fails on any finding rated MEDIUM or worse (its --jsonfile output).
#
#   scripts/tls-scan.sh [BUILD_DIR]       (default: build)
#   TLS_SCAN_KEEP=DIR scripts/tls-scan.sh  keeps the PKI, log and JSON in DIR
#   TLS_SCAN_ARGS=--fast scripts/tls-scan.sh  more testssl options (a full
#                                         run took 22 minutes on a busy 2-core machine)
#
# beacond requires a client certificate. Debian 12's testssl.sh 3.0.8 has no
# --mtls (3.2 has), so the scan goes through an `openssl` wrapper that adds
# the demo agent's certificate and key to every `s_client` testssl runs;
# testssl's own socket probes need no certificate (the server's choices come
# before client authentication). Exit status: 0 clean, 1 findings, 2 could
# not scan.
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
beacond="$top/$build/beacond"

command -v testssl >/dev/null || { echo "tls-scan: testssl not found (scripts/setup.sh installs testssl.sh)" >&2; exit 2; }
[ -x "$beacond" ] || { echo "tls-scan: $beacond not built" >&2; exit 2; }

work=${TLS_SCAN_KEEP:-$(mktemp -d)}
mkdir -p "$work"
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  [ -n "${TLS_SCAN_KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

bash "$top/config/demo-pki.sh" "$work/pki" >/dev/null || { echo "tls-scan: demo-pki.sh failed" >&2; exit 2; }
# The server certificate a production beacon would carry, not the demo's:
# valid 365 days (testssl rates more than 825 MEDIUM; the demo PKI's runs
# longer) and naming a CRL distribution point (without one, HIGH).
printf '%s\n' "subjectAltName = DNS:localhost, IP:127.0.0.1" \
  "keyUsage = critical, digitalSignature" "extendedKeyUsage = serverAuth" \
  "crlDistributionPoints = URI:http://localhost/server-ca.crl" > "$work/scan.ext"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
  -keyout "$work/scan.key" -out "$work/scan.csr" 2>/dev/null &&
  openssl x509 -req -in "$work/scan.csr" -CA "$work/pki/server-ca.pem" \
    -CAkey "$work/pki/server-ca.key" -CAcreateserial -days 365 -sha256 \
    -extfile "$work/scan.ext" -out "$work/scan.pem" 2>/dev/null ||
  { echo "tls-scan: cannot make the server certificate" >&2; exit 2; }
chmod 600 "$work/scan.key"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$work/data" "$work/download"
cat > "$work/beacond.conf" <<EOF
[server]
listen = 127.0.0.1:$port
workers = 1
data_dir = $work/data
download_dir = $work/download
control_socket = $work/control.sock
watch = no
[tls]
cert = $work/scan.pem
key = $work/scan.key
issuers = $work/pki/issuers
EOF
"$beacond" -c "$work/beacond.conf" > "$work/beacond.log" 2>&1 &
pid=$!
# Ready when it says it listens (no fixed sleep; 30 s is the bound).
for _ in $(seq 300); do
  grep -q "listening on" "$work/beacond.log" && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/beacond.log" >&2; echo "tls-scan: beacond exited" >&2; exit 2; }
  sleep 0.1
done
grep -q "listening on" "$work/beacond.log" || { echo "tls-scan: beacond not listening" >&2; exit 2; }

# The client certificate for every openssl s_client testssl starts.
cat > "$work/openssl" <<EOF
#!/bin/sh
if [ "\$1" = s_client ]; then
  shift
  exec /usr/bin/openssl s_client -cert "$work/pki/agent1.pem" -key "$work/pki/agent1.key" "\$@"
fi
exec /usr/bin/openssl "\$@"
EOF
chmod +x "$work/openssl"

json="$work/testssl.json"
rm -f "$json"
testssl ${TLS_SCAN_ARGS:-} --quiet --warnings off --color 0 --openssl "$work/openssl" --ip 127.0.0.1 \
  --nodns none --connect-timeout 10 --openssl-timeout 10 --add-ca "$work/pki/server-ca.pem" \
  --jsonfile "$json" "localhost:$port" > "$work/testssl.txt" 2>&1
rc=$?
[ -s "$json" ] || { tail -n 30 "$work/testssl.txt" >&2; echo "tls-scan: testssl wrote no JSON (exit $rc)" >&2; exit 2; }
kill -0 "$pid" 2>/dev/null || { echo "tls-scan: beacond died during the scan" >&2; exit 1; }

python3 - "$json" <<'PY'
import json, sys
rank = {"MEDIUM": 3, "HIGH": 4, "CRITICAL": 5}
findings = json.load(open(sys.argv[1]))
bad = [f for f in findings if rank.get(f.get("severity", "").upper(), 0) >= 3]
scanned = [f for f in findings if f.get("id") in ("TLS1_2", "TLS1_3", "cipher_order")]
if not scanned:
    print("tls-scan: testssl reported no protocol results: the scan did not run")
    sys.exit(2)
for f in bad:
    print(f"tls-scan: {f['severity']}: {f['id']}: {f.get('finding', '')}")
print(f"tls-scan: {len(findings)} results, {len(bad)} rated MEDIUM or worse")
sys.exit(1 if bad else 0)
PY
