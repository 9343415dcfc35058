#!/usr/bin/env bash
# Runs integration tests against backend = dpdk (issue 5): pytest itself
# runs inside a new network namespace, with BEACON_TEST_BACKEND=dpdk, so
# every beacond the `server` and `start_server` fixtures start is on a DPDK
# tap whose kernel side is in that namespace, and every client there (curl,
# openssl s_client, Python's ssl) reaches it through our TCP stack. Only
# 198.18.0.0/15 addresses, only inside the namespace, which is deleted at
# the end. The run holds /tmp/beacon-dpdk.lock: one DPDK run at a time on a
# machine.
#
#   tests/integration/over_dpdk.sh [PYTEST ARGS...]
#   e.g. tests/integration/over_dpdk.sh -q tests/integration/test_upload.py
#
# BEACOND and BEACONCTL name the binaries, as for pytest. Not root, or no
# `ip netns`: pytest runs as it is and skips every test, saying why.
set -uo pipefail
export BEACON_TEST_BACKEND=dpdk
py=/usr/bin/python3

if [ "$(id -u)" -ne 0 ] || ! ip netns list >/dev/null 2>&1; then
	exec "$py" -m pytest "$@"
fi

ns=bcs$(printf %05d $(($$ % 100000)))
ip netns add "$ns" || exit 1
trap 'ip netns del "$ns" 2>/dev/null' EXIT
ip netns exec "$ns" ip link set lo up || exit 1
flock -w 900 -E 75 /tmp/beacon-dpdk.lock ip netns exec "$ns" "$py" -m pytest "$@"
rc=$?
[ "$rc" -eq 75 ] && echo "over_dpdk.sh: /tmp/beacon-dpdk.lock still held after 900 s" >&2
exit "$rc"
