#!/bin/bash
# Shows that tests/integration/test_powercut.py catches a server that
# answers 201 before its fdatasync: builds beacond with
# ack-before-sync.patch (the worker answers as soon as the record is
# written, before the writer's fdatasync and index commit) in a scratch
# copy of this tree, and runs the power-cut test against it.
# Exits 0 when the test FAILED there, as it must; 1 when it passed.
#   tests/powercut/ack-before-sync.sh [ROUNDS]   (default 3)
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
rounds=${1:-3}
scratch=$(mktemp -d /tmp/beacon-ack-before-sync-XXXXXX)
trap 'rm -rf "$scratch"' EXIT
cd "$repo"
git ls-files -co --exclude-standard | tar -cf - -T - | tar -xf - -C "$scratch"
ln -s "$(readlink -f .deps)" "$scratch/.deps"
patch -s -d "$scratch" -p1 < tests/powercut/ack-before-sync.patch
meson setup "$scratch/build" "$scratch" > /dev/null
ninja -C "$scratch/build" beacond beaconctl tests/powercut/beacon-powercut.so > /dev/null
if BEACOND="$scratch/build/beacond" BEACONCTL="$scratch/build/beaconctl" \
	BEACON_POWERCUT_SHIM="$scratch/build/tests/powercut/beacon-powercut.so" \
	BEACON_POWERCUT_ROUNDS="$rounds" \
	"${PYTHON:-/usr/bin/python3}" -m pytest -q -p no:cacheprovider \
	tests/integration/test_powercut.py; then
	echo "ack-before-sync: test_powercut.py PASSED on a build that answers 201 before fdatasync" >&2
	exit 1
fi
echo "ack-before-sync: test_powercut.py failed on the broken build, as it must"
