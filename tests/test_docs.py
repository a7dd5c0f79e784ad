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
    named = set(re.findall(r"`((?:pipeline|trainer|tests|bench|docs)/[\w/]+\.(?:py|md))`", text))
    named |= {f"docs/{m}" for m in re.findall(r"\]\(([\w.-]+\.md)\)", text)}
    assert named
    assert sorted(n for n in named if not (ROOT / n).exists()) == []


def test_code_and_docs_cite_files_inside_the_repository() -> None:
    outside = re.compile(r"\.\./shared|/work/shared|\bDESIGN\.md")
    cited = [
        f"{p.relative_to(ROOT)}:{n}"
        for folder in ("pipeline", "trainer", "bench", "tests", "docs")
        for p in sorted((ROOT / folder).rglob("*"))
        if p.suffix in (".py", ".md") and p != Path(__file__).resolve()
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if outside.search(line)
    ]
    assert cited == []
