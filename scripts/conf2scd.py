#!/usr/bin/env python3
"""Writes beacond.conf(5), in scdoc, from config/beacond.conf.

The commented example configuration is the one place every key is
described; the man page is made from it at build time so the two cannot
drift. Usage: conf2scd.py beacond.conf > beacond.conf.5.scd"""
import re
import sys


def escape(text):
    return re.sub(r"([\\*_])", r"\\\1", text)


def blocks(lines):
    """Yields ("intro", comment lines), ("section", name) and
    ("keys", comment lines, [key lines]) in file order."""
    comment, keys, intro_done = [], [], False
    for raw in lines + [""]:
        line = raw.rstrip("\n")
        if line.startswith("#"):
            if keys:
                yield ("keys", comment, keys)
                comment, keys = [], []
            comment.append(line[2:].rstrip() if line.startswith("# ") else line[1:].strip())
        elif re.match(r"^\[[a-z]+\]$", line):
            if not intro_done:
                yield ("intro", comment)
                intro_done, comment = True, []
            yield ("section", line[1:-1])
        elif "=" in line and intro_done:
            keys.append(line.strip())
        elif not line.strip():
            if keys:
                yield ("keys", comment, keys)
                comment, keys = [], []
            elif not intro_done:
                comment.append("")
    if keys:
        yield ("keys", comment, keys)


def paragraphs(comment):
    out, cur = [], []
    for line in comment:
        if not line:
            if cur:
                out.append(cur)
            cur = []
        else:
            cur.append(line)
    if cur:
        out.append(cur)
    return out


def print_paragraph(para):
    """Prose lines are joined; lines indented in the file (a table) are
    kept as they are, as an indented block."""
    prose, table = [], []
    for line in para:
        if line.startswith("  ") or (table and line.startswith(" ")):
            table.append(line[2:] if line.startswith("  ") else line)
        else:
            prose.append(line)
    if prose:
        print(escape(" ".join(prose)) + "\n")
    if table:
        print("```\n" + "\n".join(table) + "\n```\n")


def main():
    src = open(sys.argv[1]).read().splitlines()
    print("beacond.conf(5)\n\n# NAME\n\nbeacond.conf - configuration of the beacond upload server\n")
    print("# SYNOPSIS\n\n/etc/beacond/beacond.conf\n")
    for b in blocks(src):
        if b[0] == "intro":
            print("# DESCRIPTION\n")
            for para in paragraphs(b[1][2:]):  # the first two lines name the file
                print_paragraph(para)
        elif b[0] == "section":
            print(f"# [{b[1]}]\n")
        else:
            _, comment, keys = b
            print(", ".join("*" + escape(k.split("=", 1)[0].strip()) + "*" for k in keys))
            text = " ".join(line for line in comment if line)
            print("\t" + escape(text) + "\n")
            print("\tExample: " + "; ".join("*" + escape(k) + "*" for k in keys) + "\n")
    print("# SEE ALSO\n\n*beacond*(8), *beaconctl*(8)")


if __name__ == "__main__":
    main()
