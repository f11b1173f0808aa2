"""The user-facing pages: every relative link points at a file (and heading) that exists, the README stays
short, and its commands use paths a user has."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PAGES = sorted(
    [REPO / "README.md", REPO / "CHANGELOG.md", REPO / "ddsa_model" / "weights" / "README.md",
     REPO / "ddsa_bench" / "README.md", *(REPO / "docs").glob("*.md"),
     *(REPO / "ddsa_bench" / "results").glob("**/README.md")]
)
README_MAX_LINES = 220

# [text](target) and ![alt](target); the target ends at the first space or closing parenthesis.
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


def heading_anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces as dashes."""
    anchors = set()
    for line in _FENCE.sub("", markdown).splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            text = re.sub(r"[^\w\- ]", "", m.group(1).lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


def broken_links(page: Path) -> list[str]:
    """The relative links of ``page`` whose file, or heading anchor in a markdown file, does not exist."""
    text = page.read_text(encoding="utf-8")
    problems = []
    for target in _LINK.findall(_FENCE.sub("", text)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.exists():
            problems.append(f"{target}: no such file {dest}")
        elif anchor and dest.suffix == ".md" and anchor not in heading_anchors(dest.read_text(encoding="utf-8")):
            problems.append(f"{target}: no heading #{anchor} in {dest.name}")
    return problems


def test_the_checker_finds_a_broken_file_link_and_a_broken_anchor(tmp_path):
    (tmp_path / "other.md").write_text("# Title\n\n## The `ddsa-eval` CLI\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#the-ddsa-eval-cli) [web](https://example.com/x.md) [self](#top)\n"
                    "# Top\n[gone](missing.md) [bad anchor](other.md#nope)\n"
                    "```\n[in a code block](ignored.md)\n```\n")
    problems = broken_links(page)
    assert len(problems) == 2, problems
    assert "missing.md" in problems[0] and "#nope" in problems[1]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    assert page.is_file()
    assert broken_links(page) == []


def test_readme_is_short_and_uses_paths_a_user_has():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES
    for page in PAGES:
        body = page.read_text(encoding="utf-8")
        assert "../shared" not in body, f"{page.relative_to(REPO)} points at a folder users do not have"
        assert "these machines" not in body, page


def test_ci_finds_the_readme_test_command():
    """.ci/run runs the code block after <!-- test-command -->: it must still be there, installing the
    package and running pytest."""
    awk = ("/<!-- test-command -->/{found=1; next} found && /^```bash/{inblock=1; next} "
           "inblock && /^```/{exit} inblock{print}")
    cmd = subprocess.run(["awk", awk, str(REPO / "README.md")], capture_output=True, text=True, check=True).stdout
    assert "pip install" in cmd and "--no-build-isolation" in cmd and "pytest" in cmd, cmd


_REPO_DIRS = ("ddsa_kernels/", "ddsa_model/", "ddsa_bench/", "docs/", "tests/", "csrc/", ".ci/")


def missing_paths(text: str) -> list[str]:
    """Repository paths quoted in backticks (`ddsa_model/...`, `ddsa_bench/...`) that do not exist;
    globs and placeholders (`*`, `{}`, `<>`, `$`) are not paths."""
    missing = []
    for token in re.findall(r"`([^`\s]+)`", text):
        token = token.split("::")[0].rstrip(",.:")
        if token.startswith(_REPO_DIRS) and not re.search(r"[*{<$]", token) and not (REPO / token).exists():
            missing.append(token)
    return missing


def test_the_path_checker_finds_a_missing_file():
    assert missing_paths("see `ddsa_model/nowhere.py`, `ddsa_model/atomic.py` and `ddsa_bench/results/<device>/`") == [
        "ddsa_model/nowhere.py"]


@pytest.mark.parametrize("page", [p for p in PAGES if p.name != "CHANGELOG.md"],  # history names removed files
                         ids=lambda p: str(p.relative_to(REPO)))
def test_every_repository_path_a_page_quotes_exists(page):
    assert missing_paths(page.read_text(encoding="utf-8")) == []


def test_every_config_the_pages_name_exists():
    names = set()
    for page in PAGES:
        names |= set(re.findall(r"ddsa_model/configs/([\w.-]+\.yaml)", page.read_text(encoding="utf-8")))
    missing = sorted(n for n in names if not (REPO / "ddsa_model" / "configs" / n).is_file())
    assert names and not missing, missing


def test_no_page_names_the_old_benchmarks_package():
    """The benchmarks are `ddsa_bench` (`ddsa-bench <name>`); `benchmarks/...` or `python -m benchmarks.x` is stale."""
    old = re.compile(r"(?<![\w/.-])benchmarks[/.][A-Za-z_]")
    assert old.search("see `benchmarks/results/x`") and old.search("python -m benchmarks.bench_op_cpu")
    assert not old.search("the benchmarks. Then ddsa_bench/results and my_benchmarks/x")
    written = [p for p in PAGES if p.name != "CHANGELOG.md" and "results" not in p.parts]  # not rendered JSON
    stale = [f"{p.relative_to(REPO)}: {m.group(0)}" for p in written for m in old.finditer(p.read_text(encoding="utf-8"))]
    assert stale == []
