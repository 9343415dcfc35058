#!/usr/bin/env bash
# perf/memif.sh: both ends kernel-free (issue 18 item 4). beacond with
# backend = dpdk on the server end of a net_memif pair, agentsim --dpdk
# (beacond's own TCP/IPv4 stack as the client) on the other; no kernel TCP,
# no namespace, no tap. Scenarios, 32 connections each as in bench.sh:
# full13 (full TLS 1.3 mutual handshake and a 1 KiB PUT per connection),
# resume13 (the same with session tickets), ka16k and ka1m (keep-alive PUTs).
#
#   perf/memif.sh [--duration S] [--scenarios "full13 resume13 ka16k ka1m"]
#
# Root (the EAL). Both EALs run without hugepages or PCI, each under its own
# --file-prefix; the pair meets at a Unix socket file in the run's directory
# (socket-abstract=no). beacond (1 worker, lcore 0) is pinned to CPU 0,
# agentsim (lcore 1) to CPU 1. Both poll: each burns its core by design, so
# beacond's CPU seconds are wall seconds here. JSON lines, one a scenario,
# go to perf/out/memif.jsonl, and each end's stack counters (the lines both
# log when their transport stops) to perf/out/memif-beacond.log and
# memif-agentsim.log. Run it under `flock /tmp/beacon-dpdk.lock`.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
duration=10
scenarios="full13 resume13 ka16k ka1m"
while [ $# -gt 0 ]; do
	case $1 in
	--duration) duration=$2; shift 2 ;;
	--scenarios) scenarios=$2; shift 2 ;;
	-h|--help) sed -n '2,18p' "$0"; exit 0 ;;
	*) echo "perf/memif.sh: unknown option $1" >&2; exit 2 ;;
	esac
done
[ "$(id -u)" = 0 ] || { echo "perf/memif.sh: needs root (the DPDK EAL)" >&2; exit 1; }

out=$root/perf/out
run=$(mktemp -d /tmp/bmemif.XXXXXX)
tag=$$
server_pid=
. "$root/perf/lib.sh" # stop_server

cleanup() {
	stop_server
	cp "$run/beacond.log" "$out/memif-beacond.log" 2>/dev/null || true
	rm -rf "$run" "/var/run/dpdk/bms$tag" "/var/run/dpdk/bmc$tag"
}
trap cleanup EXIT

eal() { # ROLE LCORE PREFIX
	echo "--no-huge -m 256 --no-pci --no-telemetry --vdev=net_memif0,role=$1,socket=$run/memif.sock,socket-abstract=no -l $2 --file-prefix $3"
}

scenario_args() { # SCENARIO
	local common="--concurrency 32 --duration $duration --quiet"
	case $1 in
	full13) echo "--mode full --tls 1.3 --body-size 1k --certs 1000 $common" ;;
	resume13) echo "--mode resume --tls 1.3 --body-size 1k --certs 100 $common" ;;
	ka16k) echo "--mode keepalive --tls 1.3 --body-size 16k --certs 1000 $common" ;;
	ka1m) echo "--mode keepalive --tls 1.3 --body-size 1M --certs 1000 $common" ;;
	*) echo "perf/memif.sh: unknown scenario $1" >&2; exit 2 ;;
	esac
}

# beacond says when it is ready: its ready line (as bench.sh waits).
start_beacond() {
	mkdir -p "$run/data" "$run/dl"
	cat >"$run/beacond.conf" <<-EOF
	[server]
	listen = 198.18.0.1:8443
	backend = dpdk
	workers = 1
	data_dir = $run/data
	download_dir = $run/dl
	control_socket = $run/beacond.sock
	[tls]
	cert = $out/pki/server.pem
	key = $out/pki/server.key
	issuers = $out/pki/agents-ca.pem
	[log]
	access = no
	[dpdk]
	eal_args = $(eal server 0 "bms$tag")
	address = 198.18.0.1/15
	EOF
	taskset -c 0 "$root/build/beacond" -c "$run/beacond.conf" >"$run/beacond.log" 2>&1 &
	server_pid=$!
	for _ in $(seq 600); do
		grep -q ": ready: listening on" "$run/beacond.log" && return 0
		kill -0 "$server_pid" 2>/dev/null || break
		sleep 0.1
	done
	cat "$run/beacond.log" >&2
	exit 1
}

ninja -C "$root/build" beacond perf/agentsim >/dev/null
mkdir -p "$out"
bash "$root/config/demo-pki.sh" "$out/pki" >/dev/null
start_beacond
: >"$out/memif.jsonl"
: >"$out/memif-agentsim.log"
for sc in $scenarios; do
	# shellcheck disable=SC2046 # the scenario's arguments are words
	taskset -c 1 timeout -s KILL $((duration + 120)) "$root/build/perf/agentsim" \
		--dpdk "$(eal client 1 "bmc$tag")" --dpdk-addr 198.18.0.2/15 \
		$(scenario_args "$sc") --ca-cert "$out/pki/agents-ca.pem" \
		--ca-key "$out/pki/agents-ca.key" --cache "$out/agents" \
		--server-pid "$server_pid" https://198.18.0.1:8443 >"$run/sim.json" 2>"$run/sim.err" ||
		{ cat "$run/sim.err" >&2; exit 1; }
	sed -n "s/^.*dpdk queue/$sc: dpdk queue/p" "$run/sim.err" >>"$out/memif-agentsim.log"
	jq -c --arg s "$sc" '{scenario: $s} + .' "$run/sim.json" | tee -a "$out/memif.jsonl"
done
