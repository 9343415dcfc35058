#!/usr/bin/env bash
# gen-crl.sh [-D] [-l LAST] [-n NEXT] [-s EXTRA] [-w LIST] CA_CERT CA_KEY N OUT
#
# Writes OUT, a CRL signed by CA_CERT/CA_KEY revoking N random 16-byte
# serials (plus the hex serials in EXTRA, one a line), with `openssl ca
# -gencrl` over an index.txt written by awk: 1,000,000 serials take about
# 1 s for the index and 8 s for openssl to sign (48 MB of PEM).
#
#   -D       DER instead of PEM
#   -l, -n   lastUpdate / nextUpdate, YYYYMMDDHHMMSSZ (default: now, +30 days)
#   -s FILE  also revoke these hex serials (e.g. from `openssl x509 -serial`)
#   -w FILE  write every revoked serial, upper-case hex, one a line
set -euo pipefail

der=0 last= next= extra= list=
while getopts "Dl:n:s:w:" o; do
	case $o in
	D) der=1 ;;
	l) last=$OPTARG ;;
	n) next=$OPTARG ;;
	s) extra=$OPTARG ;;
	w) list=$OPTARG ;;
	*) exit 2 ;;
	esac
done
shift $((OPTIND - 1))
if [ $# -ne 4 ]; then
	echo "usage: $0 [-D] [-l LAST] [-n NEXT] [-s EXTRA] [-w LIST] CA_CERT CA_KEY N OUT" >&2
	exit 2
fi
cert=$1 key=$2 n=$3 out=$4
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

{
	if [ "$n" -gt 0 ]; then
		openssl rand -hex $((16 * n)) | fold -w 32
	fi
	if [ -n "$extra" ]; then
		tr -d ' \r' <"$extra" | grep -v '^$'
	fi
} | tr a-f A-F >"$tmp/serials"
# index.txt: status, expiry, revocation date, serial, file, subject.
awk -v OFS='\t' '{ print "R", "351231235959Z", "240101000000Z", $0, "unknown", "/CN=r" NR }' \
	"$tmp/serials" >"$tmp/index.txt"
echo "unique_subject = no" >"$tmp/index.txt.attr"
echo 01 >"$tmp/crlnumber"
cat >"$tmp/ca.cnf" <<CNF
[ca]
default_ca = c
[c]
database = $tmp/index.txt
crlnumber = $tmp/crlnumber
default_md = sha256
default_crl_days = 30
CNF

args=()
[ -n "$last" ] && args+=(-crl_lastupdate "$last")
[ -n "$next" ] && args+=(-crl_nextupdate "$next")
openssl ca -batch -config "$tmp/ca.cnf" -gencrl -cert "$cert" -keyfile "$key" \
	"${args[@]}" -out "$tmp/crl.pem" 2>"$tmp/err" || { cat "$tmp/err" >&2; exit 1; }
if [ "$der" = 1 ]; then
	openssl crl -in "$tmp/crl.pem" -outform DER -out "$out"
else
	mv "$tmp/crl.pem" "$out"
fi
if [ -n "$list" ]; then
	cp "$tmp/serials" "$list"
fi
