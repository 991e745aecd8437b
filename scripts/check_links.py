#!/usr/bin/env python3
"""Checks the links of every tracked Markdown file: each relative link must name a file or
directory of the repository, and each #anchor a heading (or an explicit <a id="..."> / <a
name="...">) of the file it points into, with anchors made the way GitHub makes them. Links to
other sites are not fetched. Prints file:line for each broken link; exits 1 if there is one.

  scripts/check_links.py [FILE.md...]     (default: git ls-files '*.md')
"""

import re
import subprocess
import sys
import unicodedata
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^\s{0,3}(```+|~~~+)")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
SETEXT = re.compile(r"^\s{0,3}(=+|-+)\s*$")
EXPLICIT = re.compile(r"""<a\s+[^>]*?\b(?:id|name)\s*=\s*["']([^"']+)["']""", re.I)
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")


def plain_text(heading):
    """A heading's text as GitHub renders it, before slugging: code spans keep their content,
    links and images their text, and emphasis and HTML tags go."""
    text = CODE_SPAN.sub(lambda m: m.group(2).strip(), heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"(\*+|(?<!\w)_+|_+(?!\w))", "", text)
    return text


def slug(text):
    """GitHub's heading anchor (github-slugger): lower case; every character that is not a
    letter, a mark, a number, a connector (such as _), a hyphen or a space removed; spaces
    become hyphens."""
    out = []
    for ch in text.lower():
        cat = unicodedata.category(ch)
        if ch == " ":
            out.append("-")
        elif ch == "-" or cat[0] in ("L", "M", "N") or cat == "Pc":
            out.append(ch)
    return "".join(out)


def lines_outside_code(text):
    """(line number, line) of the lines that are not in a fenced code block."""
    fence = None
    for n, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)[0] * 3
            continue
        if fence is not None:
            if line.strip().startswith(fence):
                fence = None
            continue
        yield n, line


def anchors(path, cache={}):
    if path not in cache:
        seen, found = {}, set()
        previous = ""
        for _, line in lines_outside_code(path.read_text(encoding="utf-8")):
            for a in EXPLICIT.findall(line):
                found.add(a)
            m = HEADING.match(line)
            text = m.group(2) if m else (previous.strip() if SETEXT.match(line) and previous.strip() else None)
            if text is not None and not (m is None and previous.lstrip().startswith(("#", "-", "*", ">"))):
                base = slug(plain_text(text))
                n = seen.get(base, 0)
                seen[base] = n + 1
                found.add(base if n == 0 else f"{base}-{n}")
            previous = line
        cache[path] = found
    return cache[path]


def links(path):
    for n, line in lines_outside_code(path.read_text(encoding="utf-8")):
        stripped = CODE_SPAN.sub("", line)
        for target in INLINE_LINK.findall(stripped):
            yield n, target
        m = REFERENCE_DEF.match(stripped)
        if m:
            yield n, m.group(1)


def check(path):
    problems = []
    rel = path.relative_to(ROOT)
    for n, target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("//"):
            continue  # another site, mailto:, ...
        file_part, _, anchor = target.partition("#")
        file_part = unquote(file_part)
        if file_part:
            dest = (ROOT / file_part.lstrip("/")) if file_part.startswith("/") else (path.parent / file_part)
            dest = dest.resolve()
            if not dest.exists():
                problems.append(f"{rel}:{n}: {target}: no such file or directory ({dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest})")
                continue
        else:
            dest = path
        if anchor:
            if dest.is_dir() or dest.suffix.lower() != ".md":
                continue  # GitHub's line anchors (#L10) and the like
            if unquote(anchor) not in anchors(dest):
                problems.append(f"{rel}:{n}: {target}: no heading or <a id> gives #{anchor} in {dest.relative_to(ROOT)}")
    return problems


def main(argv):
    if argv:
        files = [Path(a).resolve() for a in argv]
    else:
        out = subprocess.run(["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        files = [ROOT / f for f in out.split()]
    problems = [p for f in files for p in check(f)]
    for p in problems:
        print(p)
    print(f"{len(files)} Markdown file(s), {len(problems)} broken link(s)", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
