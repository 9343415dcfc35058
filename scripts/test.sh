#!/usr/bin/env bash
# Sets everything up and runs every test: the unit tests (cmocka) and the
# integration tests (pytest against the real binary with real clients), once
# in the normal build and once under AddressSanitizer + UBSan, and the
# upload and rejection suites over the DPDK transport in the normal build.
# The last line is "N passed, N failed".
#
#   scripts/test.sh            everything: unit and integration tests in the
#                              normal and the sanitizer builds, the fuzz
#                              smoke (each target FUZZ_SECONDS, default 5)
#                              and the static analysis
#   scripts/test.sh --quick    normal build only
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

quick=0
[ "${1:-}" = "--quick" ] && quick=1

bash scripts/setup.sh || { echo "setup failed"; echo "0 passed, 1 failed"; exit 1; }

source scripts/count.sh

# Most of an integration test's time is waiting (on a handshake, a
# certificate to expire, a server to stop), not CPU: pytest-xdist runs four
# test files at once (BEACON_TEST_JOBS, default 4; 1 runs them one at a
# time), each file's tests in one worker so a module's server is started
# once. Ports are locked per process (helpers.free_port), so workers, and
# other runs on the machine, never share one.
jobs=${BEACON_TEST_JOBS:-4}
parallel=()
if [ "$jobs" -gt 1 ] && /usr/bin/python3 -c 'import xdist' 2>/dev/null; then
  parallel=(-n "$jobs" --dist loadfile)
fi

run_build() {
  local dir=$1; shift
  echo "== build $dir $*"
  if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" "$@" >/dev/null || { failed=$((failed + 1)); return 1; }
  fi
  ninja -C "$dir" >/dev/null || { ninja -C "$dir" | tail -30; failed=$((failed + 1)); return 1; }
  echo "== unit tests ($dir)"
  count_meson_suite "$dir" unit --num-processes 2
  echo "== integration tests ($dir)"
  count_pytest "integration ($dir)" "$dir/integration.xml" 2400 \
    env BEACOND="$top/$dir/beacond" BEACONCTL="$top/$dir/beaconctl" \
    /usr/bin/python3 -m pytest -q -p no:cacheprovider "${parallel[@]}" \
    --junitxml="$dir/integration.xml" tests/integration
}

# The upload and rejection suites again with backend = dpdk (a tap in a
# network namespace, tests/integration/over_dpdk.sh); every test skips
# where DPDK cannot run (not root, no DPDK in the build).
run_over_dpdk() {
  local dir=$1
  echo "== upload and rejection tests over DPDK ($dir)"
  count_pytest "integration over DPDK ($dir)" "$dir/integration-dpdk.xml" 1800 \
    env BEACOND="$top/$dir/beacond" BEACONCTL="$top/$dir/beaconctl" \
    bash tests/integration/over_dpdk.sh -q -p no:cacheprovider \
    --junitxml="$dir/integration-dpdk.xml" \
    tests/integration/test_upload.py tests/integration/test_rejections.py
}

# Each line "fuzz: TARGET ok|FAIL ..." of scripts/fuzz.sh is one test.
run_fuzz() {
  echo "== fuzz smoke (${FUZZ_SECONDS:-5} s a target)"
  local log=build/fuzz.log
  bash scripts/fuzz.sh "${FUZZ_SECONDS:-5}" > "$log" 2>&1
  local rc=$?
  grep '^fuzz: ' "$log"
  local ok bad
  ok=$(grep -c '^fuzz: .* ok ' "$log")
  bad=$(grep -c '^fuzz: .* FAIL ' "$log")
  passed=$((passed + ok))
  failed=$((failed + bad))
  if [ "$rc" -ne 0 ] && [ "$bad" -eq 0 ]; then
    tail -20 "$log"
    failed=$((failed + 1))
  fi
}

run_analysis() {
  echo "== static analysis (clang-tidy, cppcheck)"
  if bash scripts/analyze.sh > build/analyze.log 2>&1; then
    tail -1 build/analyze.log
    passed=$((passed + 1))
  else
    grep -E 'error:|warning:|analyze:' build/analyze.log | head -40
    failed=$((failed + 1))
  fi
}

# The counting itself first: a hanging, a crashing and a skipping test must
# come out as failed or skipped (tests/selftest/run.sh).
run_counting_selftest() {
  echo "== self-test of the counting (tests/selftest)"
  mkdir -p build
  if bash tests/selftest/run.sh > build/selftest.log 2>&1; then
    tail -1 build/selftest.log
    passed=$((passed + 1))
  else
    tail -30 build/selftest.log
    failed=$((failed + 1))
  fi
}

SECONDS=0
run_counting_selftest
run_build build && run_over_dpdk build
if [ "$quick" = 0 ]; then
  # Minutes, not the half hour the sanitizer build takes: a finding shows early.
  run_analysis
  # LeakSanitizer on: a leak fails the run.
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    run_build build-asan -Dsanitize=true
  run_fuzz
fi
echo "(took ${SECONDS} s)"

echo "$skipped skipped"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
