#!/usr/bin/env python3
"""Lists public (and open) declarations that have no `///` documentation comment.

Usage: scripts/doc-coverage.py [MODULE ...]   (default: every module under Sources/ except the command)
Exit status 1 when any declaration is undocumented, so CI can hold the line.
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
DECL = re.compile(
    r"^\s*(?:@\w+(?:\([^)]*\))?\s+)*(?:public|open)(?:\s*\((?:set)\))?\s+"
    r"(?:(?:static|final|class|override|mutating|nonmutating|nonisolated|convenience|required|indirect|lazy|private\(set\)|internal\(set\)|fileprivate\(set\)|package\(set\))\s+)*"
    r"(func|var|let|init|subscript|struct|class|enum|protocol|typealias|actor|case|extension|static|associatedtype)\b"
)


def undocumented(path):
    missing = []
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    for index, line in enumerate(lines):
        if line.lstrip().startswith("public import") or line.lstrip().startswith("@_exported"):
            continue
        match = DECL.match(line)
        if not match or match.group(1) == "extension":
            continue
        # Walk back over attributes and blank-free comment lines.
        j = index - 1
        while j >= 0 and lines[j].strip().startswith("@") and not lines[j].strip().startswith("@_"):
            j -= 1
        if j >= 0 and (lines[j].strip().startswith("///") or lines[j].strip().endswith("*/")):
            continue
        missing.append((index + 1, line.strip()))
    return missing


def main():
    modules = sys.argv[1:] or sorted(
        m for m in os.listdir(os.path.join(ROOT, "Sources"))
        if m not in ("vpnkit",) and not m.startswith("C") and os.path.isdir(os.path.join(ROOT, "Sources", m))
    )
    total = 0
    for module in modules:
        base = os.path.join(ROOT, "Sources", module)
        for directory, _, files in sorted(os.walk(base)):
            for name in sorted(files):
                if not name.endswith(".swift"):
                    continue
                path = os.path.join(directory, name)
                for number, text in undocumented(path):
                    total += 1
                    print(f"{os.path.relpath(path, ROOT)}:{number}: {text}")
    print(f"{total} undocumented public declarations", file=sys.stderr)
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
