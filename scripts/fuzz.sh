#!/usr/bin/env bash
# Fuzz smoke: builds the libFuzzer targets of tests/fuzz into build-fuzz with
# clang and runs each for SECONDS (default 20) on a copy of its seed corpus
# (libFuzzer writes new inputs into its first corpus directory; the copy
# keeps tests/fuzz/corpus/ as committed). Fails on any crash, leak, timeout
# or out-of-memory, and prints one line per target.
#
#   scripts/fuzz.sh            every target, 20 s each (what CI runs)
#   scripts/fuzz.sh 600        ten minutes each
#   FUZZ_TARGETS="fuzz_crl_resign fuzz_control" scripts/fuzz.sh 3600
#
# Longer runs, by hand, keeping what they find in a corpus of your own and
# using every core (-fork):
#
#   mkdir -p /var/tmp/corpus-crl && cp tests/fuzz/corpus/crl/* /var/tmp/corpus-crl/
#   build-fuzz/tests/fuzz/fuzz_crl -fork=$(nproc) -max_total_time=28800 \
#       -timeout=10 -rss_limit_mb=2048 /var/tmp/corpus-crl
#
# A crash leaves crash-<sha1> (or leak-, timeout-, oom-) in the current
# directory; replay it with `build-fuzz/tests/fuzz/fuzz_X crash-<sha1>`. Worth
# keeping new seeds from a long run: minimise them first with
#   fuzz_X -merge=1 tests/fuzz/corpus/X /var/tmp/corpus-X
# and commit only a few small files. Artifacts of this script go to
# build-fuzz/fuzz-out/<target>/.
#
# Needs clang 14 and its runtime (libclang-rt-14-dev; scripts/setup.sh).
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

secs=${1:-20}
case $secs in '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;; esac
build=build-fuzz
# target name -> corpus directory under tests/fuzz/corpus
declare -A corpus=(
  [fuzz_http]=http [fuzz_config]=config [fuzz_control]=control [fuzz_crl]=crl
  [fuzz_crl_resign]=crl_resign [fuzz_spool]=spool [fuzz_blocklist]=blocklist
  [fuzz_packet]=packet [fuzz_certid]=certid [fuzz_psk]=psk
  [fuzz_proxy]=proxy
)
targets=${FUZZ_TARGETS:-fuzz_http fuzz_config fuzz_control fuzz_crl fuzz_crl_resign fuzz_spool fuzz_blocklist fuzz_certid fuzz_packet fuzz_psk fuzz_proxy}

command -v clang >/dev/null || { echo "fuzz: clang not found (scripts/setup.sh)" >&2; exit 1; }
if [ ! -f "$build/build.ninja" ]; then
  mkdir -p "$build"
  CC=clang meson setup "$build" -Dfuzz=true -Db_lundef=false \
    -Db_sanitize=address,undefined -Dc_args=-fsanitize=fuzzer-no-link >"$build/setup.log" 2>&1 ||
    { cat "$build/setup.log" >&2; echo "fuzz: meson setup failed" >&2; exit 1; }
fi
exes=()
for t in $targets; do exes+=("tests/fuzz/$t"); done
ninja -C "$build" "${exes[@]}" >"$build/fuzz-build.log" 2>&1 ||
  { tail -n 40 "$build/fuzz-build.log" >&2; echo "fuzz: build failed" >&2; exit 1; }

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
failed=0
for t in $targets; do
  dir=${corpus[$t]:-}
  [ -n "$dir" ] || { echo "fuzz: unknown target $t" >&2; failed=1; continue; }
  out="$top/$build/fuzz-out/$t"
  rm -rf "$out"; mkdir -p "$out/corpus"
  cp -r "tests/fuzz/corpus/$dir/." "$out/corpus/"
  seeds=$(find "$out/corpus" -type f | wc -l)
  (cd "$out" && "$top/$build/tests/fuzz/$t" -max_total_time="$secs" -timeout=10 \
     -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$out/" corpus \
     >"$out/log" 2>&1)
  rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/log" | tail -n1)
  cov=$(grep -o 'cov: [0-9]*' "$out/log" | tail -n1 | cut -d' ' -f2)
  now=$(find "$out/corpus" -type f | wc -l)
  artifacts=$(find "$out" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'leak-*' \
    -o -name 'timeout-*' -o -name 'oom-*' -o -name 'slow-unit-*' \) ! -name 'slow-unit-*' -printf '%f ')
  if [ "$rc" -eq 0 ] && [ -z "$artifacts" ]; then
    printf 'fuzz: %-16s ok    %ss, %s runs, cov %s, corpus %s -> %s\n' \
      "$t" "$secs" "${runs:-?}" "${cov:-?}" "$seeds" "$now"
  else
    why=$(grep -m1 -E 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error|CHECK failed' \
      "$out/log" | sed 's/^==[0-9]*==//')
    printf 'fuzz: %-16s FAIL  rc %s: %s %s(log: %s)\n' "$t" "$rc" "${why:-see log}" \
      "${artifacts:+artifacts: $artifacts}" "$out/log"
    failed=1
  fi
done
exit $failed
