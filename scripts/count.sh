# Sourced by scripts/test.sh and tests/selftest/run.sh: runs a test runner
# and adds its cases to $passed, $failed and $skipped through
# scripts/count.py, which trusts neither a report alone nor an exit status
# alone (see its header). Each run deletes its result files first, so a run
# that dies is never scored from the previous one.

passed=${passed:-0}
failed=${failed:-0}
skipped=${skipped:-0}
count_py="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/count.py"

# Adds "P F S", the last line of count.py's output; prints its other lines.
count_add() {
  local out last p f s
  out=$(/usr/bin/python3 "$count_py" "$@")
  last=$(tail -n 1 <<<"$out")
  sed '$d' <<<"$out"
  read -r p f s <<<"$last"
  case "$p$f$s" in '' | *[!0-9]*) p=0 f=1 s=0; echo "count: count.py printed '$last'" ;; esac
  echo "count: $p passed, $f failed, $s skipped"
  passed=$((passed + p))
  failed=$((failed + f))
  skipped=$((skipped + s))
}

# count_meson_suite BUILD_DIR SUITE [meson test args...]: every cmocka
# case of the suite, each counted from the XML its executable prints.
count_meson_suite() {
  local dir=$1 suite=$2; shift 2
  local log="$dir/meson-logs/testlog.json"
  rm -f "$log" "$dir/meson-logs/testlog.junit.xml"
  CMOCKA_MESSAGE_OUTPUT=XML meson test -C "$dir" --suite "$suite" --print-errorlogs "$@" \
    > "$dir/meson-logs/$suite.out" 2>&1
  local rc=$?
  grep -E '^ *[0-9]+/[0-9]+ ' "$dir/meson-logs/$suite.out" | grep -v ' OK ' | tail -20
  count_add meson "$log" "$rc"
}

# count_pytest NAME XML TIMEOUT_S CMD...: runs CMD (a pytest that writes
# its JUnit report to XML) under `timeout`, then counts the report.
count_pytest() {
  local name=$1 xml=$2 limit=$3; shift 3
  rm -f "$xml"
  timeout -k 10 "$limit" "$@" 2>&1 | tail -25
  local rc=${PIPESTATUS[0]}
  [ "$rc" -eq 124 ] && echo "count: $name: killed after $limit s"
  count_add junit "$xml" "$rc" "$name"
}
