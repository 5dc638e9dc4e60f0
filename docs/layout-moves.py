"""Rewrite references to the old layout in a checkout, from docs/layout-moves.txt (deletable with it).

Usage: python docs/layout-moves.py [FILE ...]   (default: every file git tracks). It rewrites dotted module
names (imports, monkeypatch and RQ strings, logger names), `from albackend import jobs`-style imports and file
paths; it moves no file (git's rename detection carries edits of moved files on a merge).
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

MAP = Path(__file__).with_name("layout-moves.txt")


def load() -> tuple[dict[str, str], dict[str, str]]:
    dotted, files = {}, {}
    for line in MAP.read_text().splitlines():
        if " -> " in line and not line.startswith("#"):
            old, new = line.split(" -> ")
            (files if old.endswith(".py") else dotted)[old] = new
    return dotted, files


def rewriter(dotted: dict[str, str], files: dict[str, str]):
    qualified = [k for k in dotted if "." in k]  # a bare package name ("ups") only in `from ups import x`
    dotted_re = re.compile(r"(?<![\w.])(" + "|".join(map(re.escape, sorted(qualified, key=len, reverse=True)))
                           + r")(?!\w)")
    path_re = re.compile(r"(?<![\w/.])(" + "|".join(map(re.escape, sorted(files, key=len, reverse=True)))
                         + r")(?!\w)")
    from_re = re.compile(r"^(\s*)from (albackend|plasm|ups) import ([\w, ]+?)(\s*(#.*)?)$", re.M)

    def fix_from(m: re.Match) -> str:
        indent, pkg, names, tail = m.groups()[:4]
        groups: dict[str, list[str]] = {}
        for item in (n.strip() for n in names.split(",")):
            name, _, alias = (s.strip() for s in item.partition(" as "))
            new = dotted.get(f"{pkg}.{name}")
            if new:
                parent, _, leaf = new.rpartition(".")
                alias = alias or (name if leaf != name else "")
                groups.setdefault(parent, []).append(leaf + (f" as {alias}" if alias else ""))
            else:
                groups.setdefault(pkg, []).append(item)
        lines = [f"{indent}from {parent} import {', '.join(items)}" for parent, items in groups.items()]
        return "\n".join(lines) + tail

    def rewrite(text: str, python: bool) -> str:
        text = from_re.sub(fix_from, text) if python else text
        text = dotted_re.sub(lambda m: dotted[m.group(1)], text)
        return path_re.sub(lambda m: files[m.group(1)], text)
    return rewrite


def main(paths: list[str]) -> None:
    rewrite = rewriter(*load())
    paths = paths or subprocess.run(["git", "ls-files"], capture_output=True, text=True, check=True).stdout.split()
    for p in map(Path, paths):
        if p.resolve() == MAP.resolve() or not p.is_file():
            continue
        try:
            text = p.read_text()
        except UnicodeDecodeError:
            continue
        new = rewrite(text, p.suffix == ".py")
        if new != text:
            p.write_text(new)
            print("rewrote", p)


if __name__ == "__main__":
    main(sys.argv[1:])
