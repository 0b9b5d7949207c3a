"""Every reference in the repository points inside it: no file cites documents that are not in the
repository, and every relative link or path in the docs names a file that exists here.

A reader who clones the repository must be able to follow every pointer. The checks are plain
functions, exercised first on a small tree with known faults (so that they can fail), then on
the repository itself.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Documents kept outside the repository; spelt in pieces so that this file does not match itself.
OUTSIDE_DOCS = tuple(name + ".md" for name in ("DESIGN", "FINDINGS", "STYLE"))
_OUTSIDE = re.compile("|".join(re.escape(n) for n in OUTSIDE_DOCS))
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_CODE_PATH = re.compile(r"`([A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)+/?)`")


def repo_files(root: Path) -> list[Path]:
    """Files git tracks or would track (untracked ones not ignored), relative to ``root``."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                         cwd=root, capture_output=True, check=True).stdout
    return [Path(p) for p in out.decode().split("\0") if p and (root / p).is_file()]


def outside_doc_mentions(root: Path, files: list[Path]) -> list[str]:
    """``path:line`` of every line naming a document that is not in the repository."""
    hits = []
    for rel in files:
        try:
            text = (root / rel).read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary files
        for n, line in enumerate(text.splitlines(), 1):
            if _OUTSIDE.search(line):
                hits.append(f"{rel}:{n}: {line.strip()[:100]}")
    return hits


def broken_references(root: Path, doc: Path, top_level: set[str]) -> list[str]:
    """Relative markdown links of ``doc`` (relative to the file) and `code` paths (relative to the
    repository root, when their first part is a top-level entry) that leave ``root`` or name
    nothing that exists."""
    text = (root / doc).read_text(encoding="utf-8")
    bad = []
    for target in _LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL (http:, mailto:) or an anchor in the same page
        path = target.split("#", 1)[0]
        if path.startswith("/"):
            bad.append(f"{doc}: link {target!r} is absolute")
            continue
        resolved = (root / doc.parent / path).resolve()
        if not resolved.is_relative_to(root.resolve()):
            bad.append(f"{doc}: link {target!r} points outside the repository")
        elif not resolved.exists():
            bad.append(f"{doc}: link {target!r} names a missing file")
    for path in _CODE_PATH.findall(text):
        if path.split("/", 1)[0] in top_level and not (root / path).exists():
            bad.append(f"{doc}: path `{path}` names a missing file")
    return bad


def markdown_docs(files: list[Path]) -> list[Path]:
    return [f for f in files if f.suffix == ".md"]


@pytest.fixture
def faulty_tree(tmp_path: Path) -> Path:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "docs").mkdir()
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text(f'"""See {OUTSIDE_DOCS[0]} for why."""\n')
    (tmp_path / "docs" / "A.md").write_text(
        "[ok](../README.md) [gone](B.md) [out](../../elsewhere.md) [abs](/etc/passwd) "
        "[web](https://example.com/x.md) [here](#top)\n`pkg/mod.py` `pkg/missing.py` `/v1/verify`\n")
    (tmp_path / "README.md").write_text(f"[a](docs/A.md) and {OUTSIDE_DOCS[1]}\n")
    return tmp_path


def test_the_checks_find_each_kind_of_fault(faulty_tree: Path) -> None:
    files = repo_files(faulty_tree)
    assert sorted(str(f) for f in files) == ["README.md", "docs/A.md", "pkg/mod.py"]
    mentions = outside_doc_mentions(faulty_tree, files)
    assert [m.split(":")[0] for m in mentions] == ["README.md", "pkg/mod.py"]
    top = {f.parts[0] for f in files}
    assert broken_references(faulty_tree, Path("docs/A.md"), top) == [
        "docs/A.md: link 'B.md' names a missing file",
        "docs/A.md: link '../../elsewhere.md' points outside the repository",
        "docs/A.md: link '/etc/passwd' is absolute",
        "docs/A.md: path `pkg/missing.py` names a missing file",
    ]
    assert broken_references(faulty_tree, Path("README.md"), top) == []


def test_no_file_refers_to_documents_outside_the_repository() -> None:
    files = [f for f in repo_files(REPO) if f != Path(__file__).relative_to(REPO)]
    assert outside_doc_mentions(REPO, files) == [], (
        f"these lines cite {', '.join(OUTSIDE_DOCS)}, which are not in the repository: say it in "
        "the project's own words (docs/ARCHITECTURE.md) or point at a file that is here")


def test_every_relative_link_and_path_in_the_docs_exists_in_the_repository() -> None:
    files = repo_files(REPO)
    top = {f.parts[0] for f in files}
    docs = markdown_docs(files)
    assert Path("README.md") in docs and Path("docs/ARCHITECTURE.md") in docs
    assert [bad for doc in docs for bad in broken_references(REPO, doc, top)] == []


def test_the_readme_links_the_architecture_page() -> None:
    assert "(docs/ARCHITECTURE.md)" in (REPO / "README.md").read_text(encoding="utf-8")
