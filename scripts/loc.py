#!/usr/bin/env python3
"""Counts the lines of Rust files, for the size targets of the shells (issue #23).

    scripts/loc.py FILE...
    scripts/loc.py $(find shell-smol/src -name '*.rs')

Prints, per file and in total: all lines, non-test lines (without `#[cfg(test)]` items), and
non-test code (non-test lines without blank lines and comment lines: //, /// and //!).
"""
import sys


def strip_tests(lines):
    """The lines without each `#[cfg(test)]` item (up to its balanced braces or `;`)."""
    out, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "#[cfg(test)]":
            j, depth, started = i + 1, 0, False
            while j < len(lines):
                depth += lines[j].count("{") - lines[j].count("}")
                started = started or "{" in lines[j]
                j += 1
                if started and depth <= 0:
                    break
                if not started and lines[j - 1].rstrip().endswith(";"):
                    break
            i = j
            continue
        out.append(lines[i])
        i += 1
    return out


def main(paths):
    total = [0, 0, 0]
    for path in paths:
        lines = open(path, encoding="utf-8").read().split("\n")
        if lines and lines[-1] == "":
            lines = lines[:-1]
        non_test = strip_tests(lines)
        code = [l for l in non_test if l.strip() and not l.strip().startswith("//")]
        counts = (len(lines), len(non_test), len(code))
        print(f"{counts[0]:6} {counts[1]:6} {counts[2]:6}  {path}")
        total = [t + c for t, c in zip(total, counts)]
    print(f"{total[0]:6} {total[1]:6} {total[2]:6}  total (all / non-test / non-test code)")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
