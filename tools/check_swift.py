#!/usr/bin/env python3
"""Checks the Swift package (targets/swift) against the C header it calls, where no Swift
compiler exists: every `et_*` function the Swift sources call is declared in
targets/capi/include/edgetune.h with the same number of arguments, every `ET_*` constant
they name is declared, the Swift `PixelFormat` raw values equal the header's
`EtPixelFormat` values, and the module map's shim includes that header.

Then it proves it can fail: the same check on the sources with one called symbol
misspelt, and with one argument dropped, must each report an error.

Usage: tools/check_swift.py [repo root]     (exit 0: consistent; 1: not)
"""

import pathlib
import re
import sys


def strip_c_comments(text):
    return re.sub(r"/\*.*?\*/|//[^\n]*", " ", text, flags=re.S)


def header_api(header):
    """{function: argument count} and {constant: value} declared by the header."""
    text = strip_c_comments(header)
    funcs = {}
    for m in re.finditer(r"\b(et_[a-z0-9_]+)\s*\(([^;{]*?)\)\s*;", text, flags=re.S):
        params = m.group(2).strip()
        n = 0 if params in ("", "void") else len(split_args(params))
        funcs[m.group(1)] = n
    consts = {}
    for body in re.findall(r"typedef\s+enum\s+\w+\s*\{(.*?)\}", text, flags=re.S):
        for name, value in re.findall(r"\b(ET_[A-Z0-9_]+)\s*=\s*(\d+)", body):
            consts[name] = int(value)
    return funcs, consts


def strip_swift(text):
    """Swift source with comments and string literal contents blanked (same length)."""
    out, i, n = [], 0, len(text)
    while i < n:
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif text[i] == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('"' + " " * (j - i - 1) + '"')
            i = j + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def split_args(s):
    """Top-level comma-separated parts of an argument list."""
    parts, depth, cur = [], 0, []
    for ch in s:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        parts.append("".join(cur))
    return parts


def swift_calls(src):
    """(function, argument count, line) of each `et_*(` call in (stripped) Swift."""
    calls = []
    for m in re.finditer(r"\b(et_[a-z0-9_]+)\s*\(", src):
        i, depth = m.end(), 1
        while i < len(src) and depth:
            depth += {"(": 1, "[": 1, "{": 1, ")": -1, "]": -1, "}": -1}.get(src[i], 0)
            i += 1
        inner = src[m.end() : i - 1]
        line = src.count("\n", 0, m.start()) + 1
        calls.append((m.group(1), len(split_args(inner)), line))
    return calls


def check(sources, header, modulemap_ok=True):
    """Error messages (empty: consistent). `sources`: {name: Swift text}."""
    funcs, consts = header_api(header)
    errors = []
    if not funcs:
        errors.append("no et_* functions found in the header")
    called = set()
    for name, text in sources.items():
        src = strip_swift(text)
        for fn, n, line in swift_calls(src):
            called.add(fn)
            if fn not in funcs:
                errors.append(f"{name}:{line}: {fn} is not declared in edgetune.h")
            elif funcs[fn] != n:
                errors.append(
                    f"{name}:{line}: {fn} called with {n} arguments; edgetune.h declares {funcs[fn]}"
                )
        for c in sorted(set(re.findall(r"\bET_[A-Z0-9_]+\b", src))):
            if c not in consts:
                errors.append(f"{name}: {c} is not declared in edgetune.h")
        enum = re.search(r"enum\s+PixelFormat\s*:\s*UInt32\s*\{(.*?)\n\}", src, flags=re.S)
        if enum:
            for case, value in re.findall(r"case\s+(\w+)\s*=\s*(\d+)", enum.group(1)):
                c = "ET_PIXEL_FORMAT_" + case.upper()
                if consts.get(c) != int(value):
                    errors.append(
                        f"{name}: PixelFormat.{case} = {value}, edgetune.h {c} = {consts.get(c)}"
                    )
    if not called:
        errors.append("the Swift sources call no et_* function")
    if not modulemap_ok:
        errors.append("the module map's shim does not include targets/capi/include/edgetune.h")
    return errors, sorted(called)


def main():
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).parents[1])
    pkg = root / "targets" / "swift"
    header_path = root / "targets" / "capi" / "include" / "edgetune.h"
    header = header_path.read_text()
    sources = {
        str(p.relative_to(root)): p.read_text() for p in sorted(pkg.glob("Sources/**/*.swift"))
    }
    shim = pkg / "Sources" / "CEdgeTune" / "shim.h"
    inc = re.search(r'#include\s+"([^"]+)"', shim.read_text())
    modulemap_ok = (
        inc is not None
        and (shim.parent / inc.group(1)).resolve() == header_path.resolve()
        and 'header "shim.h"' in (shim.parent / "module.modulemap").read_text()
    )
    errors, called = check(sources, header, modulemap_ok)
    funcs, _ = header_api(header)
    for e in errors:
        print("ERROR", e)
    print(
        f"swift check: {len(sources)} Swift files call {len(called)} of the header's "
        f"{len(funcs)} et_* functions ({', '.join(called)}); "
        + ("all declared with matching argument counts" if not errors else f"{len(errors)} errors")
    )

    # The check must be able to fail: a misspelt symbol, then a dropped argument.
    name, text = next((n, t) for n, t in sources.items() if "et_train(" in t)
    bad_name = {**sources, name: text.replace("et_train(", "et_trian(", 1)}
    dropped = re.sub(r"et_set_method\(handle, method\)", "et_set_method(handle)", text, count=1)
    bad_args = {**sources, name: dropped}
    probes = [("misspelt et_train as et_trian", bad_name), ("dropped an argument of et_set_method", bad_args)]
    for what, srcs in probes:
        errs, _ = check(srcs, header, modulemap_ok)
        if srcs[name] == text or not errs:
            print(f"ERROR self-test: {what}: the check did not fail")
            errors.append(what)
        else:
            print(f"self-test ({what}): fails as it should: {errs[0]}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
