#!/usr/bin/env bash
# Static analysis of the project's own C (dataplane/, control/, perf/*.c):
# clang-tidy with the checks of .clang-tidy, then cppcheck, then
# clang-format over every tracked .c and .h (the whole tree). Uses
# build/compile_commands.json (made by `meson setup build`; run
# scripts/setup.sh first). Exits non-zero on any finding of either tool.
#
#   scripts/analyze.sh              everything
#   scripts/analyze.sh FILE...      only these files (paths from the repo root)
#
# A false positive is silenced where it is, with NOLINT(check) or
# cppcheck-suppress ID and a comment saying why, never here.
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
build=${BUILD:-build}
db="$build/compile_commands.json"
for tool in clang-tidy cppcheck clang-format; do
  command -v "$tool" >/dev/null || { echo "analyze: $tool is not installed (scripts/setup.sh)" >&2; exit 2; }
done
[ -f "$db" ] || { echo "analyze: no $db (meson setup $build)" >&2; exit 2; }
ninja -C "$build" >/dev/null || { echo "analyze: build failed" >&2; exit 2; }

if [ $# -gt 0 ]; then
  files=("$@")
else
  mapfile -t files < <(python3 - "$db" <<'PY'
import json, os, sys
db = sys.argv[1]
seen = set()
for e in json.load(open(db)):
    f = os.path.relpath(os.path.normpath(os.path.join(e["directory"], e["file"])))
    top = f.split("/")[0]
    if top in ("dataplane", "control") or (top == "perf" and f.count("/") == 1):
        seen.add(f)
print("\n".join(sorted(seen)))
PY
)
fi
[ ${#files[@]} -gt 0 ] || { echo "analyze: no files" >&2; exit 2; }

status=0
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

echo "analyze: clang-tidy on ${#files[@]} files"
printf '%s\n' "${files[@]}" |
  xargs -P "$(nproc)" -I{} sh -c 'o="$3/$(echo "$2" | tr / _)"; clang-tidy -p "$1" --quiet "$2" >"$o.tidy" 2>&1; echo $? >"$o.rc"' \
    _ "$build" {} "$out"
# A clang-tidy that crashed or could not parse a file finds nothing: its
# exit status says so, and that is a failure, not "clean".
for f in "${files[@]}"; do
  o="$out/$(echo "$f" | tr / _)"
  rc=$(cat "$o.rc" 2>/dev/null || echo missing)
  if [ "$rc" != 0 ]; then
    echo "analyze: clang-tidy on $f exited $rc"
    tail -5 "$o.tidy" 2>/dev/null
    status=1
  fi
done
tidy=$(cat "$out"/*.tidy | grep -E '^[^ ]+:[0-9]+:[0-9]+: (warning|error):' | sort -u)
if [ -n "$tidy" ]; then
  cat "$out"/*.tidy | grep -vE '^[0-9]+ warnings? (and [0-9]+ errors? )?generated' \
    | grep -v '^Suppressed ' | grep -v 'Use -header-filter' | grep -v '^Error while processing'
  echo "analyze: clang-tidy: $(echo "$tidy" | wc -l) findings"
  status=1
fi

echo "analyze: cppcheck"
filters=()
for f in "${files[@]}"; do filters+=("--file-filter=*$f"); done
# Run from the build directory: the database names files as ../dir/file.c.
if ! (cd "$build" && cppcheck --project=compile_commands.json "${filters[@]}" -i"$top/.deps" \
     --enable=warning,performance,portability --inline-suppr \
     --suppress=missingIncludeSystem --suppress=unmatchedSuppression \
     --suppress='*:*/.deps/*' --suppress='*:/usr/*' \
     --std=c11 -D__GNUC__ --quiet --error-exitcode=1 -j "$(nproc)" \
     --template='{file}:{line}:{column}: {severity}: {message} [{id}]') 2>"$out/cppcheck"; then
  status=1
fi
if [ -s "$out/cppcheck" ]; then
  cat "$out/cppcheck"
  echo "analyze: cppcheck: $(grep -c ': \(error\|warning\|performance\|portability\|style\):' "$out/cppcheck") findings"
  status=1
fi
# Formatting: the whole tree follows .clang-format (applied in one commit,
# listed in .git-blame-ignore-revs). A file that differs is a finding.
echo "analyze: clang-format"
mapfile -t fmt_files < <(git -C "$top" ls-files '*.c' '*.h' | grep -v '^tests/fuzz/corpus/')
unformatted=()
for f in "${fmt_files[@]}"; do
  clang-format --dry-run --Werror "$f" >/dev/null 2>&1 || unformatted+=("$f")
done
if [ ${#unformatted[@]} -gt 0 ]; then
  printf 'analyze: not formatted (clang-format -i FILE): %s\n' "${unformatted[@]}"
  status=1
fi
[ $status -eq 0 ] && echo "analyze: clean"
exit $status
