"""Every relative link in the user and developer docs (README.md, CONTRIBUTING.md, docs/*.md,
benchmarks/README.md) points at a file of this repository that exists, and a link to a heading
(`file.md#heading`) names a heading that file has (GitHub's anchor rule). Pure: no ComfyUI needed."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def doc_files() -> list[Path]:
    files = [REPO / "README.md", REPO / "CONTRIBUTING.md", REPO / "benchmarks" / "README.md"]
    files += sorted((REPO / "docs").glob("*.md"))
    return files


FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")
MD_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_LINK = re.compile(r"<(?:img|a|source)\b[^>]*?\b(?:src|href)\s*=\s*\"([^\"]+)\"", re.I)
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)


def prose(text: str) -> str:
    """The text without code blocks and inline code (links there are examples, not links)."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def links(text: str) -> list[str]:
    body = prose(text)
    return MD_LINK.findall(body) + HTML_LINK.findall(body)


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation removed, spaces -> '-'."""
    h = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)   # a link in a heading keeps its text
    h = h.replace("`", "").replace("*", "").lower()
    h = re.sub(r"[^\w\- ]", "", h)
    return h.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text(encoding="utf-8"))):
        a = anchor(heading)
        n = seen.get(a, 0)
        seen[a] = n + 1
        out.add(a if n == 0 else f"{a}-{n}")
    return out


def is_external(target: str) -> bool:
    return re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) is not None   # http:, https:, mailto:, ...


def broken_links(path: Path, root: Path = REPO) -> list[str]:
    """What is wrong with each relative link of ``path`` (a file of the tree at ``root``)."""
    problems = []
    for target in links(path.read_text(encoding="utf-8")):
        if is_external(target):
            continue
        file_part, _, fragment = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            problems.append(f"{target}: no file {dest}")
            continue
        if not dest.is_relative_to(root.resolve()):
            problems.append(f"{target}: points outside the repository")
            continue
        if fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            problems.append(f"{target}: {dest.name} has no heading with anchor #{fragment}")
    return problems


def test_the_docs_exist():
    for must in ("README.md", "CONTRIBUTING.md", "benchmarks/README.md", "docs/testing.md"):
        assert (REPO / must).is_file(), f"{must} is missing"


@pytest.mark.parametrize("doc", doc_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_point_at_existing_files(doc):
    problems = broken_links(doc)
    assert not problems, f"{doc.relative_to(REPO)} has broken links:\n  " + "\n  ".join(problems)


def test_the_checker_finds_broken_links(tmp_path):
    """The checker itself can fail: a missing file, a missing heading and an image are caught; external
    links, code and existing targets are not."""
    (tmp_path / "there.md").write_text("# Some Title (`x_y`)\n\n## Memory: what is kept\n")
    doc = tmp_path / "doc.md"
    doc.write_text(
        "[ok](there.md) [ok](there.md#some-title-x_y) [ok](there.md#memory-what-is-kept) [ok](#local)\n"
        "[web](https://example.com/nothing.md) `[code](nowhere.md)`\n"
        "```\n[block](nowhere.md)\n```\n"
        "## Local\n"
        "[bad](missing.md) ![bad](missing.png) <img src=\"gone.jpg\"> [bad](there.md#no-such-heading)\n"
        "[bad](../outside.md)\n")
    (tmp_path.parent / "outside.md").write_text("# outside\n")
    found = broken_links(doc, root=tmp_path)
    assert [p.split(":")[0] for p in found] == ["missing.md", "missing.png", "there.md#no-such-heading",
                                                 "../outside.md", "gone.jpg"], found
