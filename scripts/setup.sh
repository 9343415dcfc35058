#!/usr/bin/env bash
# Installs everything beacond needs to build and test on Debian 12, then
# builds wolfSSL from Debian's trixie source package into .deps/ (see README,
# "Dependencies", for why not bookworm's binary package). Idempotent: a second
# run installs nothing new and skips the wolfSSL build when it is current.
#
# The Debian mirror for trixie's source package is the one this machine's
# own apt sources use for bookworm (a local mirror or a proxy's URL), found by
# debian_mirror below; deb.debian.org only when the sources name none.

# debian_mirror SUITE: the URI that the machine's apt sources use for SUITE's
# main component (deb or deb-src lines; one-line .list files and deb822
# .sources files, under $APT_ETC, default /etc/apt). Only http(s) URIs
# count (a cdrom: or file: source would not hold trixie). Prints the first
# match without a trailing slash; prints nothing and returns 1 when none.
debian_mirror() {
  local suite=$1 etc=${APT_ETC:-/etc/apt} f
  local files=()
  [ -f "$etc/sources.list" ] && files+=("$etc/sources.list")
  for f in "$etc"/sources.list.d/*.list "$etc"/sources.list.d/*.sources; do
    [ -f "$f" ] && files+=("$f")
  done
  [ ${#files[@]} -gt 0 ] || return 1
  local uri
  uri=$(for f in "${files[@]}"; do
          case $f in
            *.sources) awk -v want="$suite" -f <(debian_mirror_deb822_awk) "$f" ;;
            *) awk -v want="$suite" -f <(debian_mirror_oneline_awk) "$f" ;;
          esac
        done | head -n1)
  [ -n "$uri" ] || return 1
  echo "${uri%/}"
}

# One-line format: "deb [opt=val ...] URI SUITE COMPONENT...".
debian_mirror_oneline_awk() {
  cat <<'AWK'
{ sub(/#.*/, "") }
$1 != "deb" && $1 != "deb-src" { next }
{
  i = 2
  if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
  uri = $i; suite = $(i + 1)
  if (suite != want || uri !~ /^https?:\/\//) next
  for (j = i + 2; j <= NF; j++) if ($j == "main") { print uri; exit }
}
AWK
}

# deb822 format: stanzas separated by blank lines, multi-valued fields
# (URIs, Suites, Components), "Enabled: no" turns a stanza off.
debian_mirror_deb822_awk() {
  cat <<'AWK'
function flush(   n, u, s, c, i, j, k, us, ss, cs, hasmain) {
  if (types ~ /(^| )deb(-src)?( |$)/ && enabled != "no") {
    n = split(comps, cs, " "); hasmain = 0
    for (k = 1; k <= n; k++) if (cs[k] == "main") hasmain = 1
    split(suites, ss, " "); split(uris, us, " ")
    for (i = 1; hasmain && (i in ss); i++)
      if (ss[i] == want)
        for (j = 1; j in us; j++)
          if (us[j] ~ /^https?:\/\//) { print us[j]; found = 1; exit }
  }
  types = uris = suites = comps = enabled = ""; field = ""
}
/^[ \t]*#/ { next }
/^[ \t]*$/ { flush(); next }
/^[ \t]/ { # a continuation line of the field above
  v = $0; sub(/^[ \t]+/, "", v)
  if (field == "types") types = types " " v
  else if (field == "uris") uris = uris " " v
  else if (field == "suites") suites = suites " " v
  else if (field == "components") comps = comps " " v
  next
}
{
  k = tolower($0); sub(/:.*/, "", k)
  v = $0; sub(/^[^:]*:[ \t]*/, "", v); sub(/[ \t]+$/, "", v)
  field = k
  if (k == "types") types = v
  else if (k == "uris") uris = v
  else if (k == "suites") suites = v
  else if (k == "components") comps = v
  else if (k == "enabled") enabled = tolower(v)
}
END { if (!found) flush() }
AWK
}

# Sourced (tests/integration/test_setup_mirror.py): the functions only.
if (return 0 2>/dev/null); then
  return 0
fi

set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

WOLFSSL_VERSION=5.7.2
# Only what beacond, its tests and perf/agentsim use, not --enable-all:
# features compiled in grow each connection's WOLFSSL object or keep
# handshake state alive after the handshake (--enable-all's session
# certificate slots, alternate chains, post-handshake auth, secure
# renegotiation). With --enable-all and the client's certificate kept, an
# idle mutual-TLS connection cost beacond about 62 KiB of RSS; with this
# list and NO_KEEP_PEER_CERT below, about 6 KiB (perf/agentsim --mode idle,
# 2,000 TLS 1.3 connections, one worker).
#   opensslextra: the X509/X509_NAME/GENERAL_NAME calls of tls.c, the CA name
#     list, set1_sigalgs_list, set_groups
#   session-ticket: resumption; crl: the revocation index's signature checks
#   certgen, certext, keygen: perf/agentsim's agent certificates (certs.c)
#   curve25519, chacha/poly1305, aesgcm, ecc, rsapss, sni, supportedcurves:
#     the groups, suites and signatures tls.c allows and agentsim sends
WOLFSSL_FLAGS="--enable-tls13 --disable-oldtls --disable-sslv3 --enable-opensslextra \
--enable-session-ticket --enable-crl --enable-certgen --enable-certext --enable-keygen \
--enable-ecc --enable-curve25519 --enable-aesgcm --enable-chacha --enable-poly1305 \
--enable-rsapss --enable-sni --enable-supportedcurves \
--enable-aesni --enable-intelasm --enable-sp --enable-sp-asm \
--disable-examples --disable-crypttests --enable-static --disable-shared"
prefix="$top/.deps/wolfssl"
# ALWAYS_VERIFY_CB: the verify callback sees every client certificate,
# including a good one, to check usage and identity.
# NO_KEEP_PEER_CERT (scripts/wolfssl-patches/no-keep-peer-cert.patch): the
# callback gets each certificate as a temporary X509; no connection keeps a
# decoded copy of its client's certificate after the handshake (tls.c has
# copied the identity out by then).
# TICKET_EXTRA_PADDING_SZ: room in each session ticket for the client
# certificate's identity, so a resumed session can be checked against the
# trust snapshot of today, not of the day the ticket was issued.
# MAX_CHAIN_DEPTH: agents send a leaf and at most a few intermediates
# (longer chains are refused, as before).
# GETRANDOM: RNG seeds from getrandom(2), one system call, instead of
# open/read/close of /dev/urandom (wolfSSL seeds three RNGs per handshake).
# VERIFY_CB_ALL_CERTS: the callback also sees every CA certificate the client
# sends, verified or not, so that each is checked against its issuer's CRL.
# IGNORE_KEY_EXTENSIONS: wolfSSL does not judge the client certificate's key
# usages itself. When it does, its usage error overwrites an earlier chain
# error (untrusted issuer, expired) of the same certificate, so a callback
# that waives the usage error (require_client_auth_eku = no) also waived
# the chain. tls.c checks usage itself, only on a verified chain. (The CA's
# keyCertSign check is a different switch and stays on.)
WOLFSSL_CFLAGS="-O2 -DWOLFSSL_ALWAYS_VERIFY_CB -DWOLFSSL_VERIFY_CB_ALL_CERTS -DIGNORE_KEY_EXTENSIONS -DWOLFSSL_NO_KEEP_PEER_CERT -DWOLFSSL_TICKET_EXTRA_PADDING_SZ=384 -DMAX_CHAIN_DEPTH=4 -DWOLFSSL_GETRANDOM"
# Our patches on top of Debian's (each says why at its top).
patches=("$top"/scripts/wolfssl-patches/*.patch)
stamp="$prefix/.built-$WOLFSSL_VERSION-$(cat <(echo "$WOLFSSL_FLAGS $WOLFSSL_CFLAGS") "${patches[@]}" | md5sum | cut -c1-8)"

PACKAGES=(
  build-essential meson ninja-build pkg-config
  liblmdb-dev lmdb-utils liburing-dev libdpdk-dev dpdk libinih-dev
  libcmocka-dev libcjson-dev python3 python3-pytest python3-pytest-xdist curl openssl iproute2
  autoconf automake libtool dpkg-dev clang libclang-rt-14-dev python3-scapy
  clang-tidy clang-format cppcheck libisal-dev patch tcpdump libsystemd-dev python3-cryptography testssl.sh
  scdoc man-db systemd prometheus chromium haproxy nats-server libnats-dev libssl-dev
  # strace: test_download_http's system-call count (it skips without);
  # gdb: the stacks of a beacond that does not stop, in a test's failure
  strace gdb
  # zlib1g-dev: meson.build's zlib, until now only there as libdpdk-dev's
  # dependency; jq: the perf/ scripts read agentsim's and beaconctl's JSON
  zlib1g-dev jq
)

need_apt=0
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || { need_apt=1; break; }
done
if [ "$need_apt" = 1 ]; then
  echo "setup: installing Debian packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
fi

if [ -f "$stamp" ]; then
  echo "setup: wolfSSL $WOLFSSL_VERSION already built in $prefix"
  exit 0
fi

# Our own apt state for trixie's source lists: the machine's sources stay as
# they are, but their mirror is used (a mirror or proxy that serves bookworm
# serves trixie too).
mirror=$(debian_mirror bookworm) || mirror=http://deb.debian.org/debian
security=$(debian_mirror bookworm-security) || security=http://deb.debian.org/debian-security
echo "setup: Debian mirror $mirror, security $security"
apt_state="$top/.deps/apt"
mkdir -p "$apt_state/etc" "$apt_state/lists/partial" "$apt_state/cache/archives/partial"
cat > "$apt_state/etc/trixie.sources" <<SRC
Types: deb-src
URIs: $mirror
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: $security
Suites: trixie-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
APTO=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$apt_state/etc"
      -o "Dir::State::Lists=$apt_state/lists" -o "Dir::Cache=$apt_state/cache")
echo "setup: fetching wolfssl source from trixie"
apt-get "${APTO[@]}" update -qq
ver=$(apt-cache "${APTO[@]}" showsrc wolfssl | awk '/^Version:/{print $2}' |
      grep "^$WOLFSSL_VERSION" | sort -V | tail -n1)
[ -n "$ver" ] || { echo "setup: no wolfssl $WOLFSSL_VERSION in trixie sources" >&2; exit 1; }
src="$top/.deps/src"
rm -rf "$src"; mkdir -p "$src"
(cd "$src" && apt-get "${APTO[@]}" source -qq "wolfssl=$ver" >/dev/null)
dir=$(find "$src" -maxdepth 1 -type d -name "wolfssl-$WOLFSSL_VERSION*" | head -n1)
echo "setup: building wolfSSL $ver (Debian patches applied) into $prefix"
(
  cd "$dir"
  for p in "${patches[@]}"; do
    patch -p1 -s < "$p" || { echo "setup: $p does not apply" >&2; exit 1; }
  done
  ./autogen.sh >/dev/null 2>&1 || autoreconf -fi >/dev/null
  CFLAGS="$WOLFSSL_CFLAGS" \
  ./configure --prefix="$prefix" $WOLFSSL_FLAGS >/dev/null
  make -j"$(nproc)" >/dev/null
  rm -rf "$prefix"
  make install >/dev/null
)
touch "$stamp"
rm -rf "$src"
echo "setup: wolfSSL $ver ready"
