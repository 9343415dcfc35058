#!/usr/bin/env bash
# demo-pki.sh OUTDIR: a demo PKI for beacond (openssl CLI only, EC P-256).
#
#   server-ca.pem/key          the CA agents trust for the server
#   server.pem/key             CN=localhost, SAN localhost, 127.0.0.1, 198.18.0.1
#   agents-ca.pem/key          "Beacon Demo Agents CA", the agents' issuer
#   agents-ca2.pem/key         "Beacon Demo Agents CA 2", a second trusted issuer
#   issuers/ and issuers.pem   both agents CAs, as a directory and as a bundle
#   rogue-ca.pem/key           an issuer beacond does not trust
#   agent1..3                  valid agent certificates (agents-ca)
#   agent-ca2                  valid, issued by agents-ca2
#   expired, notyet            outside their validity period
#   noclientauth, nodigsig     wrong extended / key usage
#   untrusted                  issued by rogue-ca
#   agent1-bundle.pem          agent1 certificate and key in one file
#
# Idempotent: does nothing when OUTDIR/.complete exists.
set -euo pipefail

if [ $# -ne 1 ]; then
	echo "usage: $0 OUTDIR" >&2
	exit 2
fi
out=$1
if [ -e "$out/.complete" ]; then
	exit 0
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
umask 077
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

O="/O=beacond demo"

newkey() { # FILE
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
		-pkeyopt ec_param_enc:named_curve -out "$1" 2>/dev/null
	chmod 600 "$1"
}

# selfsigned_ca NAME SUBJECT
selfsigned_ca() {
	newkey "$out/$1.key"
	openssl req -new -x509 -sha256 -days 3650 -key "$out/$1.key" \
		-subj "$2" -out "$out/$1.pem" \
		-addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,keyCertSign,cRLSign" \
		-addext "subjectKeyIdentifier=hash"
	chmod 644 "$out/$1.pem"
}

# issue NAME CA SUBJECT STARTDATE ENDDATE EXTENSIONS...
# Signs with `openssl ca` so that any validity window can be given.
issue() {
	local name=$1 ca=$2 subj=$3 start=$4 end=$5
	shift 5
	local d="$tmp/ca-$name"
	mkdir -p "$d"
	: >"$d/index.txt"
	openssl rand -hex 16 >"$d/serial"
	{
		echo "[ca]"
		echo "default_ca = demo"
		echo "[demo]"
		echo "database = $d/index.txt"
		echo "new_certs_dir = $d"
		echo "serial = $d/serial"
		echo "default_md = sha256"
		echo "policy = policy_any"
		echo "unique_subject = no"
		echo "copy_extensions = none"
		echo "[policy_any]"
		echo "commonName = supplied"
		echo "organizationName = optional"
		echo "[ext]"
		echo "basicConstraints = critical,CA:FALSE"
		echo "subjectKeyIdentifier = hash"
		echo "authorityKeyIdentifier = keyid"
		for e in "$@"; do
			echo "$e"
		done
	} >"$d/ca.cnf"
	newkey "$out/$name.key"
	openssl req -new -sha256 -key "$out/$name.key" -subj "$subj" -out "$d/req.csr"
	openssl ca -batch -notext -config "$d/ca.cnf" -extensions ext \
		-cert "$out/$ca.pem" -keyfile "$out/$ca.key" \
		-startdate "$start" -enddate "$end" \
		-in "$d/req.csr" -out "$out/$name.pem" 2>"$d/err" || {
		cat "$d/err" >&2
		exit 1
	}
	chmod 644 "$out/$name.pem"
}

now() { date -u -d "$1" +%Y%m%d%H%M%SZ; }
past=$(now '-1 hour')
year=$(now '+825 days')
AGENT_KU="keyUsage = critical,digitalSignature"
AGENT_EKU="extendedKeyUsage = clientAuth"

# agent NAME CA [START END KU EKU]
agent() {
	local name=$1 ca=$2 cn=$1.example
	issue "$name" "$ca" "/CN=$cn$O" "${3:-$past}" "${4:-$year}" \
		"${5:-$AGENT_KU}" "${6:-$AGENT_EKU}" "subjectAltName = DNS:$cn"
}

# Server side.
selfsigned_ca server-ca "/CN=Beacon Demo Server CA$O"
issue server server-ca "/CN=localhost$O" "$past" "$year" \
	"keyUsage = critical,digitalSignature" \
	"extendedKeyUsage = serverAuth" \
	"subjectAltName = DNS:localhost,IP:127.0.0.1,IP:198.18.0.1"

# Agents' issuers.
selfsigned_ca agents-ca "/CN=Beacon Demo Agents CA$O"
selfsigned_ca agents-ca2 "/CN=Beacon Demo Agents CA 2$O"
selfsigned_ca rogue-ca "/CN=Rogue Agents CA/O=somebody else"
mkdir -p "$out/issuers"
chmod 755 "$out/issuers"
cp "$out/agents-ca.pem" "$out/agents-ca2.pem" "$out/issuers/"
cat "$out/agents-ca.pem" "$out/agents-ca2.pem" >"$out/issuers.pem"
chmod 644 "$out/issuers/"*.pem "$out/issuers.pem"

# Agents.
agent agent1 agents-ca
agent agent2 agents-ca
agent agent3 agents-ca
agent agent-ca2 agents-ca2
agent expired agents-ca "$(now '-30 days')" "$(now '-1 day')"
agent notyet agents-ca "$(now '+1 day')" "$(now '+30 days')"
agent noclientauth agents-ca "$past" "$year" "$AGENT_KU" \
	"extendedKeyUsage = serverAuth"
agent nodigsig agents-ca "$past" "$year" "keyUsage = critical,keyEncipherment"
agent untrusted rogue-ca

cat "$out/agent1.pem" "$out/agent1.key" >"$out/agent1-bundle.pem"
chmod 600 "$out/agent1-bundle.pem"

touch "$out/.complete"
