#!/usr/bin/env python3
"""Counts test cases for scripts/test.sh, so that nothing but a passing
case counts as passed.

    count.py meson TESTLOG_JSON RC     cmocka cases of one `meson test` run
    count.py junit XML RC [NAME]       pytest cases of one run (its JUnit file)

Prints "PASSED FAILED SKIPPED" on the last line, and one line per problem
before it. The rules, each from a way a broken run once read as green:

- A runner's exit status counts as well as its report: a non-zero status
  with a report that shows no failure is one failure (a pytest killed by a
  signal, a meson test that timed out: meson 1.0 writes no <failure> then).
- A missing, unparsable or empty report is a failure, never "0 passed".
- cmocka executables run with CMOCKA_MESSAGE_OUTPUT=XML: each case is
  counted from the XML on the executable's stdout (in meson's testlog.json);
  skip() is a skip. An executable with no XML (it hung, crashed, or exited
  before the end of its group) is a failure, unless meson saw it exit 77
  (the GNU "skipped" status, e.g. a DPDK test without root): one skip.
"""

import json
import re
import sys
import xml.etree.ElementTree as ET

XML_RE = re.compile(r"<\?xml.*?</testsuites>", re.S)


def cases_of(root):
    """(passed, failed, skipped) over every <testcase> under root."""
    p = f = s = 0
    for case in root.iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            f += 1
        elif case.find("skipped") is not None:
            s += 1
        else:
            p += 1
    return p, f, s


def count_meson(testlog, rc):
    p = f = s = 0
    problems = []
    try:
        with open(testlog) as fh:
            entries = [json.loads(line) for line in fh if line.strip()]
    except (OSError, ValueError) as e:
        return 0, 1, 0, [f"{testlog}: no usable meson test log ({e})"]
    if not entries:
        return 0, 1, 0, [f"{testlog}: no tests ran"]
    for t in entries:
        name, result = t.get("name", "?"), t.get("result", "?")
        docs = XML_RE.findall(t.get("stdout") or "")
        if not docs:
            if result == "SKIP":
                s += 1
            else:
                f += 1
                problems.append(f"{name}: {result}, no per-case report (hung or crashed?)")
            continue
        tp = tf = ts = 0
        try:
            for doc in docs:
                dp, df, ds = cases_of(ET.fromstring(doc))
                tp, tf, ts = tp + dp, tf + df, ts + ds
        except ET.ParseError as e:
            f += 1
            problems.append(f"{name}: {result}, unparsable report ({e})")
            continue
        if tp + tf + ts == 0:
            tf = 1
            problems.append(f"{name}: {result}, report lists no cases")
        elif result not in ("OK", "SKIP") and tf == 0:
            tf = 1
            problems.append(f"{name}: {result}, though its report shows no failed case")
        p, f, s = p + tp, f + tf, s + ts
    if rc != 0 and f == 0:
        f = 1
        problems.append(f"meson test exited {rc} with no failed case counted")
    return p, f, s, problems


def count_junit(path, rc, name):
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        return 0, 1, 0, [f"{name}: no usable report {path} ({e}); runner exited {rc}"]
    p, f, s = cases_of(root)
    problems = []
    if p + f + s == 0:
        f = 1
        problems.append(f"{name}: report {path} lists no cases; runner exited {rc}")
    elif rc != 0 and f == 0:
        f = 1
        problems.append(f"{name}: runner exited {rc}, though its report shows no failed case")
    elif rc == 0 and f > 0:
        problems.append(f"{name}: runner exited 0 with {f} failed cases")
    return p, f, s, problems


def main(argv):
    if len(argv) >= 4 and argv[1] == "meson":
        p, f, s, problems = count_meson(argv[2], int(argv[3]))
    elif len(argv) >= 4 and argv[1] == "junit":
        p, f, s, problems = count_junit(argv[2], int(argv[3]), argv[4] if len(argv) > 4 else argv[2])
    else:
        print(__doc__, file=sys.stderr)
        print("0 1 0")
        return 2
    for line in problems:
        print(f"count: {line}")
    print(p, f, s)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
