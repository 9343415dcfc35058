#!/usr/bin/env bash
# Self-test of scripts/test.sh's counting (scripts/count.sh, count.py):
# each misbehaving test here must come out as failed or skipped, never as
# passed. Runs the same functions test.sh runs, on executables and pytest
# files the product's suites never run. Exits 0 when every expectation holds.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
cd "$top"
out="$top/build-selftest"
rm -rf "$out"
mkdir -p "$out"
source scripts/count.sh

meson setup "$out/meson" "$here" >/dev/null && ninja -C "$out/meson" >/dev/null ||
  { echo "selftest: cannot build $here"; exit 1; }

bad=0
# expect WHAT P F S: the counts the last run added must match exactly
# (F as "at least one" where given as +).
expect() {
  local what=$1 ep=$2 ef=$3 es=$4
  local dp=$((passed - p0)) df=$((failed - f0)) ds=$((skipped - s0))
  local fok=0
  if [ "$ef" = "+" ]; then [ "$df" -ge 1 ] && fok=1; else [ "$df" -eq "$ef" ] && fok=1; fi
  if [ "$dp" -eq "$ep" ] && [ "$fok" = 1 ] && [ "$ds" -eq "$es" ]; then
    echo "selftest: ok   $what: $dp passed, $df failed, $ds skipped"
  else
    echo "selftest: FAIL $what: $dp passed, $df failed, $ds skipped; wanted $ep, $ef, $es"
    bad=$((bad + 1))
  fi
}
mark() { p0=$passed f0=$failed s0=$skipped; }

for t in pass skip hang crash exit77; do
  mark
  count_meson_suite "$out/meson" "$t" > "$out/$t.log"
  case $t in
    pass) expect "cmocka case that passes" 1 0 0 ;;
    skip) expect "cmocka case that calls skip()" 0 0 1 ;;
    hang) expect "cmocka executable that hangs after a passing case" 0 + 0 ;;
    crash) expect "cmocka executable killed after a passing case" 0 + 0 ;;
    exit77) expect "executable that exits 77 (skipped)" 0 0 1 ;;
  esac
done

py() { count_pytest "$1" "$out/$1.xml" "$2" /usr/bin/python3 -m pytest -q -p no:cacheprovider \
         --junitxml="$out/$1.xml" "$here/pytest/$3" > "$out/$1.log"; }
mark; py pass_skip 60 test_pass_skip.py; expect "pytest: a pass and a skip" 1 0 1
# A stale passing report where the crashed run's would be: it must not count.
cp "$out/pass_skip.xml" "$out/crash.xml"
mark; py crash 60 crash_test.py; expect "pytest killed mid-run (stale report present)" 0 + 0
mark; py hang 5 hang_test.py; expect "pytest that hangs (killed by the time limit)" 0 + 0
mark; py broken 60 broken_test.py; expect "pytest with a collection error" 0 + 0
# A report that cannot be parsed, and one with no cases.
echo '<testsuite><testcase' > "$out/garbled.xml"
mark; count_add junit "$out/garbled.xml" 0 garbled > /dev/null; expect "unparsable report" 0 + 0
echo '<testsuites><testsuite tests="0"/></testsuites>' > "$out/empty.xml"
mark; count_add junit "$out/empty.xml" 0 empty > /dev/null; expect "report with no cases" 0 + 0

if [ "$bad" -eq 0 ]; then
  echo "selftest: counting ok (every misbehaving test came out failed or skipped)"
fi
[ "$bad" -eq 0 ]
