"""The user docs hold together: every relative link and #anchor in README.md and docs/*.md
resolves, no doc points at things a reader cannot see (issue numbers, files outside the
repository), and every benchmark table says the day it was measured and the command behind it.

Anchors follow GitHub's rules: the heading's text as rendered, lowercased, with every character
that is not a letter, a digit, a space, '-' or '_' removed, spaces turned into '-', and a
repeated heading suffixed -1, -2, ...
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
LINK = re.compile(r"!?\[((?:[^\[\]]|\[[^\]]*\])*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", re.IGNORECASE)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")

#: Things a reader of the repository cannot follow: tracker numbers and files beside the repo.
FORBIDDEN = [
    (re.compile(r"\bissues?\s*#?\d+", re.IGNORECASE), "an issue number"),
    (re.compile(r"\b(?:next|previous|this|that|the) issue(?:'s)?\b", re.IGNORECASE), "an issue"),
    (re.compile(r"\bPR\s*#?\d+\b"), "a pull request"),
    (re.compile(r"\.\./shared\b|\bshared/notes\b"), "a file outside the repository"),
]


def _prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    out: list[tuple[int, str]] = []
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        match = FENCE.match(line)
        if match:
            marker = match.group(1)
            if fence is None:
                fence = marker
            elif marker == fence:
                fence = None
            continue
        if fence is None:
            out.append((number, line))
    return out


def _rendered(heading: str) -> str:
    """The heading's text as GitHub renders it: code spans, links and emphasis unwrapped."""
    text = INLINE_CODE.sub(lambda m: m.group(2).strip(), heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"<[^>]+>", "", text)
    return text.replace("**", "").replace("*", "")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading (without the duplicate suffix)."""
    kept = []
    for char in _rendered(heading).strip().lower():
        category = unicodedata.category(char)
        if char in " -_" or category[0] in "LMN":
            kept.append(char)
    return "".join(kept).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = path.read_text(encoding="utf-8")
    seen: dict[str, int] = {}
    found: set[str] = set()
    for _number, line in _prose_lines(text):
        found.update(HTML_ANCHOR.findall(line))
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every Markdown link, image and reference outside code."""
    out: list[tuple[int, str]] = []
    for number, line in _prose_lines(path.read_text(encoding="utf-8")):
        prose = INLINE_CODE.sub("", line)
        out.extend((number, m.group(2)) for m in LINK.finditer(prose))
        ref = REFERENCE.match(prose)
        if ref:
            out.append((number, ref.group(1)))
    return out


def test_the_anchor_rules() -> None:
    assert slug("Lease store (`bench/store_bench.py`)") == "lease-store-benchstore_benchpy"
    assert slug("SDK 1.7 / testing 1.2.1") == "sdk-17--testing-121"
    assert slug('What "in flight" means') == "what-in-flight-means"
    assert slug("Waking waiters (hand-off)") == "waking-waiters-hand-off"
    assert slug("Peer comparison: dynamo-dlm") == "peer-comparison-dynamo-dlm"
    assert slug("**Bold** and [a link](x.md)") == "bold-and-a-link"


def test_duplicate_headings_get_numbered_anchors(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("# A\n## Cost\n```sh\n# Cost\n```\n## Cost\n### Cost\n", encoding="utf-8")
    assert anchors(doc) == {"a", "cost", "cost-1", "cost-2"}


def test_links_inside_code_are_not_links(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "[ok](a.md#b) and `[not](c.md)`\n```md\n[not](d.md)\n```\n[ref]: e.md#f\n",
        encoding="utf-8",
    )
    assert [target for _n, target in links(doc)] == ["a.md#b", "e.md#f"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_anchors_resolve(doc: Path) -> None:
    broken = []
    for number, target in links(doc):
        if SCHEME.match(target) or target.startswith("//"):
            continue  # an absolute URL: not checked offline
        path_part, _, anchor = target.partition("#")
        where = f"{doc.relative_to(ROOT)}:{number}: {target}"
        resolved = (doc.parent / path_part).resolve() if path_part else doc
        if not resolved.is_relative_to(ROOT):
            broken.append(f"{where} (outside the repository)")
            continue
        if not resolved.exists():
            broken.append(f"{where} (no such file)")
            continue
        if anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{where} (no heading with this anchor in {resolved.name})")
        elif anchor and resolved.suffix != ".md":
            broken.append(f"{where} (an anchor into a file that is not Markdown)")
    assert not broken, "broken links:\n" + "\n".join(broken)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_references_a_reader_cannot_follow(doc: Path) -> None:
    found = []
    for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), start=1):
        for pattern, what in FORBIDDEN:
            for match in pattern.finditer(line):
                found.append(f"{doc.relative_to(ROOT)}:{number}: {what}: {match.group(0)!r}")
    assert not found, "\n".join(found)


def _tables(lines: list[str]) -> list[tuple[int, int]]:
    """(first line, line after the last) of each table, 0-based, outside code."""
    prose = {number - 1 for number, _line in _prose_lines("\n".join(lines))}
    out = []
    i = 0
    while i < len(lines) - 1:
        if (
            i in prose
            and lines[i].startswith("|")
            and re.match(r"^\|(\s*:?-+:?\s*\|)+\s*$", lines[i + 1])
        ):
            end = i + 2
            while end < len(lines) and lines[end].startswith("|"):
                end += 1
            out.append((i, end))
            i = end
        else:
            i += 1
    return out


def test_every_benchmark_table_says_when_and_how_it_was_measured() -> None:
    """Between the heading or table before it and its last row: a YYYY-MM-DD date and a
    command in backticks that runs a benchmark (bench/..., make bench..., durable-semaphore)."""
    lines = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8").splitlines()
    date = re.compile(r"\b20\d\d-\d\d-\d\d\b")
    command = re.compile(r"`[^`]*(?:bench/\w+\.py|make bench|durable-semaphore demo)[^`]*`")
    missing = []
    previous_end = 0
    for start, end in _tables(lines):
        context_start = previous_end
        for j in range(start - 1, previous_end - 1, -1):
            if HEADING.match(lines[j]):
                context_start = j
                break
        context = "\n".join(lines[context_start:end])
        if not (date.search(context) and command.search(context)):
            missing.append(f"docs/benchmarks.md:{start + 1}: {lines[start][:60]}")
        previous_end = end
    assert _tables(lines), "no tables found"
    assert not missing, "tables without a date and a command:\n" + "\n".join(missing)
