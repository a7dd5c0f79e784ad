"""docs/CONTRACTS.md matches the code: the modules its layout lists exist, the names it gives
each module are defined there, the files it links exist; code and docs cite files inside the
repository only."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONTRACTS = ROOT / "docs" / "CONTRACTS.md"
# A name worth checking: snake_case with an underscore, or CamelCase with two capitals.
NAME = re.compile(
    r"\b(?:[a-z][a-z0-9]*_[a-z0-9_]+|[A-Z][a-z0-9]+[A-Z][A-Za-z0-9]*|[A-Z]+_[A-Z_]+)\b"
)


def layout_entries() -> list[tuple[Path, str]]:
    """(path, description) of every entry of the Layout block: a package folder, then its
    modules (several may share a line, ``perturb.py  eq.py``)."""
    text = CONTRACTS.read_text(encoding="utf-8")
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    entries: list[tuple[Path, str]] = []
    package = ROOT
    current: list[Path] = []
    for line in block.splitlines():
        if not line.strip():
            continue
        if not line.startswith(" "):  # a top-level folder
            package = ROOT / line.split()[0]
            current = [package]
            entries.append((package, line.split(None, 1)[1] if " " in line else ""))
            continue
        head = line[:21].split()
        if head and all(h.endswith((".py", "/")) for h in head):
            current = [package / h for h in head]
            for path in current:
                entries.append((path, line[21:]))
        else:  # a continuation line of the entries above
            for path in current:
                entries.append((path, line.strip()))
    return entries


def defined_names(path: Path) -> set[str]:
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
    names: set[str] = set()
    for file in files:
        text = file.read_text(encoding="utf-8")
        names |= set(re.findall(r"^\s*(?:def|class)\s+(\w+)", text, re.M))
        names |= set(re.findall(r"^(\w+)\s*[:=]", text, re.M))
    return names


def test_every_module_of_the_layout_exists_and_defines_the_names_given() -> None:
    entries = layout_entries()
    paths = {path for path, _ in entries}
    assert ROOT / "trainer" / "rundir.py" in paths and ROOT / "pipeline" / "atomic.py" in paths
    missing = sorted(str(p.relative_to(ROOT)) for p in paths if not p.exists())
    assert missing == []
    undefined = []
    for path, description in entries:
        if path.parent == ROOT or path.name == "testing":
            continue  # top-level folders; testing/ lists its own modules
        names = defined_names(path)
        for name in NAME.findall(description):
            if name not in names and not name.endswith("_py"):
                undefined.append(f"{path.relative_to(ROOT)}: {name}")
    assert undefined == []


def test_every_project_module_is_in_the_layout() -> None:
    listed = {path for path, _ in layout_entries()}
    unlisted = [
        str(p.relative_to(ROOT))
        for package in ("pipeline", "trainer")
        for p in sorted((ROOT / package).glob("*.py"))
        if p.name != "__init__.py" and p not in listed
    ]
    assert unlisted == []


def test_files_named_in_the_contracts_exist() -> None:
    text = CONTRACTS.read_text(encoding="utf-8")
    folders = "pipeline|trainer|tests|bench|studies|docs"
    named = set(re.findall(rf"`((?:{folders})/[\w/]+\.(?:py|md))`", text))
    named |= {f"docs/{m}" for m in re.findall(r"\]\(([\w.-]+\.md)\)", text)}
    assert named
    assert sorted(n for n in named if not (ROOT / n).exists()) == []


def test_code_and_docs_cite_files_inside_the_repository() -> None:
    outside = re.compile(r"\.\./shared|/work/shared|\bDESIGN\.md")
    cited = [
        f"{p.relative_to(ROOT)}:{n}"
        for folder in ("pipeline", "trainer", "bench", "studies", "tests", "docs")
        for p in sorted((ROOT / folder).rglob("*"))
        if p.suffix in (".py", ".md") and p != Path(__file__).resolve()
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if outside.search(line)
    ]
    assert cited == []


# ---------------------------------------------------------------------------------------
# Relative Markdown links: every [text](path) and [text](path#anchor) of README.md, docs/
# and the folder READMEs points at a file of the repository, and every anchor at a heading
# of its target (GitHub's slugs). http(s) and mailto links are not followed.

FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", re.M | re.S)
CODE_SPAN = re.compile(r"(`+).+?\1", re.S)
LINK = re.compile(r"\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$", re.M)


def markdown_files() -> list[Path]:
    return [
        ROOT / "README.md",
        *sorted((ROOT / "docs").glob("*.md")),
        ROOT / "bench" / "README.md",
        ROOT / "studies" / "README.md",
    ]


def prose(text: str) -> str:
    """``text`` without its fenced code blocks (a ``# comment`` there is not a heading)."""
    return FENCE.sub("", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its rendered text (links by their text, no code
    ticks or emphasis stars), lowercased, punctuation dropped except hyphens, spaces and
    underscores, each space a hyphen."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in ``path``; a repeated slug gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for heading in HEADING.findall(prose(path.read_text(encoding="utf-8"))):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(files: list[Path], root: Path) -> list[str]:
    """``file: target (why)`` for every relative link of ``files`` that does not resolve."""
    broken = []
    for path in files:
        text = CODE_SPAN.sub("", prose(path.read_text(encoding="utf-8")))
        for target in LINK.findall(text):
            if re.match(r"(https?|mailto):", target):
                continue
            name, _, anchor = target.partition("#")
            where = (path.parent / name).resolve() if name else path
            label = f"{path.relative_to(root)}: {target}"
            if root.resolve() not in (where, *where.parents):
                broken.append(f"{label} (outside the repository)")
            elif not where.exists():
                broken.append(f"{label} (no such file)")
            elif anchor and where.suffix == ".md" and anchor not in anchors(where):
                broken.append(f"{label} (no such heading)")
            elif anchor and where.is_dir():
                broken.append(f"{label} (an anchor into a folder)")
    return broken


def test_slugs_follow_github() -> None:
    assert slug("Positive control: the recommended recipe removes the speaker (issue 19)") == (
        "positive-control-the-recommended-recipe-removes-the-speaker-issue-19"
    )
    assert slug("`selectivity.json` (schema_version 1)") == "selectivityjson-schema_version-1"
    assert slug("Benchmark: data stall (`bench/train.py data-stall`)") == (
        "benchmark-data-stall-benchtrainpy-data-stall"
    )
    assert slug("F0 range — for [screams](x.md)") == "f0-range--for-screams"


def test_the_link_checker_finds_planted_broken_links(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text(
        "# Title\n\n## Same\n\n## Same\n\n```\n# not a heading\n[x](missing-in-code.md)\n```\n",
        encoding="utf-8",
    )
    readme = tmp_path / "README.md"
    readme.write_text(
        "[ok](docs/a.md) [ok](docs/a.md#title) [ok](docs/a.md#same-1) [ok](#top)\n"
        "[web](https://example.org/x.md) `[code](nowhere.md)` ![img](docs/a.md)\n"
        "# Top\n"
        "[bad](docs/b.md) [bad](docs/a.md#same-2) [bad](docs/a.md#not-a-heading)\n"
        "[bad](#nowhere) [bad](../outside.md)\n",
        encoding="utf-8",
    )
    assert broken_links([readme, tmp_path / "docs" / "a.md"], tmp_path) == [
        "README.md: docs/b.md (no such file)",
        "README.md: docs/a.md#same-2 (no such heading)",
        "README.md: docs/a.md#not-a-heading (no such heading)",
        "README.md: #nowhere (no such heading)",
        "README.md: ../outside.md (outside the repository)",
    ]


def test_every_relative_link_of_the_docs_resolves() -> None:
    files = markdown_files()
    assert all(path.exists() for path in files)
    text = "".join(prose(p.read_text(encoding="utf-8")) for p in files)
    assert len(LINK.findall(text)) > 20  # the checker sees the links
    assert broken_links(files, ROOT) == []
