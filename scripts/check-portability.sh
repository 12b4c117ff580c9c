#!/usr/bin/env bash
# Static portability check: everything outside the Linux-only pieces must build on macOS too, and
# no macOS machine is available to prove it, so this reads the sources instead of compiling them.
#
#   a. every `import Glibc` in Sources/ sits in an `#if canImport(Glibc)` / `#if os(Linux)` branch
#      of a block that also has an `#elseif canImport(Darwin)` / `#elseif os(macOS)` branch
#      importing Darwin, unless the file is Linux-only;
#   b. every `import CVPNKitLinux` is inside `#if os(Linux)` or `#if canImport(CVPNKitLinux)`;
#   c. Linux-only symbols (the C shim's functions, TUN/namespace/malloc/error-queue APIs, /proc
#      paths, Linux-only socket flags) appear only in Linux-only files (whole body in
#      `#if os(Linux)` ... `#endif`) or inside `#if os(Linux)` branches;
#   d. Sources/CVPNKitLinux (C): all code, and every include but the shim's own header, is inside
#      `#ifdef __linux__` / `#if defined(__linux__)` (only an include guard and `#define _GNU_SOURCE`
#      may sit outside);
#   e. Package.swift names CVPNKitLinux as a dependency only as
#      `.target(name: "CVPNKitLinux", condition: .when(platforms: [.linux]))`, and CSeccomp (libseccomp,
#      a system library macOS lacks) likewise; `import CSeccomp` sits only in Linux-only code.
#
# Exits 1 with file:line messages when anything fails. Usage: scripts/check-portability.sh [repo]
set -euo pipefail
cd "${1:-$(dirname "$0")/..}"
exec python3 - <<'PY'
import os, re, sys

failures = []
def fail(path, line, message):
    failures.append(f"{path}:{line}: {message}")

# Linux-only symbols a Swift file may use only under os(Linux). Where a symbol may also be used
# under canImport(CVPNKitLinux) (the shim is importable only on Linux), the second field says so.
LINUX_SYMBOLS = [
    (r"\bvpnkit_\w+", True),                      # the C shim's functions and types
    (r"\bTUNSET\w+|\bIFF_(TAP|TUN|NO_PI|VNET_HDR)\b", False),
    (r"\bsetns\b|\bunshare\b|\bCLONE_NEW\w+", False),
    (r"\bmallopt\b|\bmalloc_trim\b|\bM_(ARENA_MAX|TRIM_THRESHOLD|MMAP_THRESHOLD|TOP_PAD|MMAP_MAX)\b", False),
    (r"\bIP_RECVERR\b|\bMSG_ERRQUEUE\b|\bsock_extended_err\b|\bSO_EE_\w+", False),
    (r"\bSO_(RCV|SND)BUFFORCE\b|\bSO_BINDTODEVICE\b", False),
    (r"\bSOCK_NONBLOCK\b|\bSOCK_CLOEXEC\b|\baccept4\b|\b(recv|send)mmsg\b", False),
    (r"\bsched_(get|set)affinity\b|\bcpu_set_t\b|\bCPU_(ZERO|SET|ISSET|COUNT)\b", False),
    (r"\bepoll_\w+|\beventfd\b|\btimerfd_\w+|\bprctl\b|\bPR_SET_\w+", False),
    (r"\bseccomp(_\w+)?\s*\(|\bSECCOMP_\w+|\bSCMP_\w+", False),   # calls, not the flags named --seccomp
    (r'"/proc/|"/sys/(class|fs|kernel)/|"/dev/net/tun', False),
    (r"\bip\s*,\s*\[\s*\"netns\"|\"/var/run/netns", False),   # iproute2 network namespaces
]
LINUX_SYMBOLS = [(re.compile(p), shim) for p, shim in LINUX_SYMBOLS]

def is_linux_condition(cond, shim_ok=False):
    c = cond.strip()
    if "||" in c or c.startswith("!"):
        return False
    parts = [re.sub(r"^\(+|\)+$", "", p.strip()) if p.strip().count("(") != p.strip().count(")") else p.strip()
             for p in c.split("&&")]
    ok = {"os(Linux)"}
    if shim_ok:
        ok = ok | {"canImport(CVPNKitLinux)"}
    return any(p in ok for p in parts)

def strip_swift_comment(line, in_block):
    """Removes // and /* */ comments (strings kept: "/proc/..." paths live in them)."""
    out, i, n = [], 0, len(line)
    in_string = False
    while i < n:
        if in_block:
            end = line.find("*/", i)
            if end < 0:
                return "".join(out), True
            i, in_block = end + 2, False
            continue
        ch = line[i]
        if ch == '"' and (i == 0 or line[i - 1] != "\\"):
            in_string = not in_string
        if not in_string and line.startswith("//", i):
            break
        if not in_string and line.startswith("/*", i):
            in_block, i = True, i + 2
            continue
        out.append(ch)
        i += 1
    return "".join(out), in_block

DIRECTIVE = re.compile(r"^\s*#\s*(if|elseif|else|endif)\b\s*(.*)$")

def parse_swift(path):
    """Per line: its code (comments removed) and the stack of (block id, branch condition) it is in.
    Blocks: id -> list of (condition, [lines of that branch])."""
    with open(path, encoding="utf-8") as f:
        raw = f.read().split("\n")
    lines, blocks, stack, in_block = [], {}, [], False
    for number, text in enumerate(raw, 1):
        code, in_block = strip_swift_comment(text, in_block)
        m = DIRECTIVE.match(code)
        if m:
            kind, cond = m.group(1), m.group(2).strip()
            if kind == "if":
                bid = len(blocks)
                blocks[bid] = {"start": number, "branches": [(cond, [])], "end": None}
                stack.append([bid, cond])
            elif kind in ("elseif", "else"):
                if not stack:
                    fail(path, number, f"#{kind} without #if"); continue
                cond = cond if kind == "elseif" else "else"
                stack[-1][1] = cond
                blocks[stack[-1][0]]["branches"].append((cond, []))
            else:
                if not stack:
                    fail(path, number, "#endif without #if"); continue
                blocks[stack[-1][0]]["end"] = number
                stack.pop()
            lines.append((number, code, [tuple(s) for s in stack], True))
            continue
        if stack:
            blocks[stack[-1][0]]["branches"][-1][1].append(code.strip())
        lines.append((number, code, [tuple(s) for s in stack], False))
    if stack:
        fail(path, len(raw), "unterminated #if")
    return lines, blocks

def linux_only_file(lines, blocks):
    """The whole body is one `#if os(Linux)` block with no other branch."""
    body = [(n, c, s, d) for n, c, s, d in lines if c.strip()]
    if not body:
        return False
    first, last = body[0], body[-1]
    if not (first[3] and re.match(r"^\s*#\s*if\s+os\(Linux\)\s*$", first[1])):
        return False
    block = blocks.get(0)  # the first block parsed
    return block is not None and block["end"] == last[0] and len(block["branches"]) == 1

def check_swift(path):
    lines, blocks = parse_swift(path)
    linux_only = linux_only_file(lines, blocks)
    for number, code, stack, directive in lines:
        if directive:
            continue
        stripped = code.strip()
        if re.match(r"^(@\w+\s+)*(public\s+|internal\s+|private\s+|fileprivate\s+|package\s+)?import\s+(struct\s+|func\s+|enum\s+|class\s+|var\s+|let\s+)?Glibc\b", stripped):
            if linux_only:
                continue
            if not stack:
                fail(path, number, "`import Glibc` outside `#if canImport(Glibc)` (add an `#elseif canImport(Darwin)` branch importing Darwin)")
                continue
            bid, cond = stack[-1]
            if cond.strip() not in ("canImport(Glibc)", "os(Linux)"):
                fail(path, number, f"`import Glibc` in a branch `{cond}`, not `canImport(Glibc)` or `os(Linux)`")
                continue
            darwin = [b for b in blocks[bid]["branches"]
                      if b[0].strip() in ("canImport(Darwin)", "os(macOS)")
                      and any(re.search(r"\bimport\s+Darwin\b", l) for l in b[1])]
            if not darwin:
                fail(path, number, "`import Glibc` without an `#elseif canImport(Darwin)` branch importing Darwin")
        if re.search(r"\bimport\s+CSeccomp\b", stripped):
            if not linux_only and not any(is_linux_condition(c) for _, c in stack):
                fail(path, number, "`import CSeccomp` outside `#if os(Linux)`")
            continue
        if re.search(r"\bimport\s+CVPNKitLinux\b", stripped):
            if not linux_only and not any(is_linux_condition(c, shim_ok=True) for _, c in stack):
                fail(path, number, "`import CVPNKitLinux` outside `#if os(Linux)` / `#if canImport(CVPNKitLinux)`")
            continue
        if linux_only:
            continue
        for pattern, shim_ok in LINUX_SYMBOLS:
            m = pattern.search(code)
            if m and not any(is_linux_condition(c, shim_ok=shim_ok) for _, c in stack):
                fail(path, number, f"Linux-only `{m.group(0)}` outside `#if os(Linux)`")

C_LINUX_HEADERS = re.compile(r"^\s*#\s*include\s*<(linux/|malloc\.h|sys/mount\.h|sched\.h|sys/epoll|sys/prctl|sys/eventfd|sys/timerfd|sys/sysmacros|sys/vfs|sys/statfs|sys/syscall|asm/|net/if_arp)")

def check_c(path):
    with open(path, encoding="utf-8") as f:
        raw = f.read().split("\n")
    stack, in_comment = [], False
    guard, reported = None, False
    for number, text in enumerate(raw, 1):
        line = text
        # strip comments
        out, i = [], 0
        while i < len(line):
            if in_comment:
                end = line.find("*/", i)
                if end < 0: i = len(line); break
                i, in_comment = end + 2, False; continue
            if line.startswith("//", i): break
            if line.startswith("/*", i): in_comment, i = True, i + 2; continue
            out.append(line[i]); i += 1
        code = "".join(out).strip()
        if not code:
            continue
        m = re.match(r"^#\s*(ifdef|ifndef|if|elif|else|endif)\b\s*(.*)$", code)
        if m:
            kind, cond = m.group(1), m.group(2).strip()
            if kind == "ifdef": stack.append(cond == "__linux__")
            elif kind == "ifndef":
                if guard is None and not stack: guard = cond
                stack.append(False if cond != guard else None)
            elif kind == "if":
                stack.append(bool(re.fullmatch(r"defined\s*\(?\s*__linux__\s*\)?", cond)))
            elif kind in ("elif", "else"):
                if stack: stack[-1] = False if stack[-1] is not None else None
            elif stack: stack.pop()
            continue
        inside = any(s is True for s in stack)
        if inside:
            reported = False
            continue
        if guard and re.fullmatch(r"#\s*define\s+" + re.escape(guard), code):
            continue
        if re.fullmatch(r"#\s*define\s+_GNU_SOURCE", code):
            continue
        if re.fullmatch(r'#\s*include\s*"CVPNKitLinux\.h"', code):
            continue
        if C_LINUX_HEADERS.match(code):
            fail(path, number, f"Linux-only header outside `#ifdef __linux__`: {code}")
        elif not reported:  # once per unguarded stretch
            fail(path, number, "code outside `#ifdef __linux__` in the Linux shim")
            reported = True

def check_package(path, target="CVPNKitLinux", kind=r"\.target"):
    with open(path, encoding="utf-8") as f:
        raw = f.read().split("\n")
    declared = 0
    conditional = re.compile(r'\.target\(\s*name:\s*"' + target + r'"\s*,\s*condition:\s*\.when\(\s*platforms:\s*\[\s*\.linux\s*\]\s*\)\s*\)')
    for number, text in enumerate(raw, 1):
        code = text.split("//", 1)[0]
        for m in re.finditer('"' + target + '"', code):
            before, after = code[:m.start()], code[m.end():]
            if conditional.search(code) and re.search(r'\.target\(\s*name:\s*$', before) and re.match(r'\s*,\s*condition:', after):
                continue
            # Declared: `kind(name: "X"` on one line, or `kind(` alone with `name: "X"` on the next.
            opened = re.match(r'^\s*' + kind + r'\(\s*name:\s*$', before) or (
                re.match(r'^\s*name:\s*$', before) and number > 1 and re.search(kind + r'\(\s*$', raw[number - 2]))
            if opened and not re.match(r"\s*,\s*condition:", after):
                declared += 1
                continue
            fail(path, number, f'{target} as a dependency must be `.target(name: "{target}", condition: .when(platforms: [.linux]))`')
    if declared != 1:
        fail(path, 1, f"expected the {target} target declared once, found {declared}")

for root, _, files in os.walk("Sources"):
    for name in sorted(files):
        path = os.path.join(root, name)
        if name.endswith(".swift"):
            check_swift(path)
        elif path.startswith(os.path.join("Sources", "CVPNKitLinux")) and name.endswith((".c", ".h")):
            check_c(path)
check_package("Package.swift")
check_package("Package.swift", "CSeccomp", r"\.systemLibrary")

if failures:
    print("\n".join(failures))
    print(f"check-portability: {len(failures)} problem(s)", file=sys.stderr)
    sys.exit(1)
print("check-portability: OK")
PY
