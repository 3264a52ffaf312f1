"""The README and docs/*.md against the repository: what they tell a user to run or read must exist.

The README promises a short page whose commands work in a fresh clone; the rest lives in docs/. These tests
fail when a doc names a flag the launcher does not accept, a make target, file, test or link target that is
gone, or when CI stops running the README's test command.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from _support import REPO, run_launcher

README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
PAGES = [README, *DOCS]
# A dotted long flag as OpenRLHF 0.11.2 and the plugin spell them: --group.name (also --a.b.c).
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z_]*(?:\.[a-z_]+)+")
TOP_DIRS = ("openrlhf_maestro/", "tests/", "examples/", "bench/", "patches/", "docs/", "requirements/", ".ci/")


def _prose(text: str) -> str:
    """The text without fenced code blocks (a `# comment` in a code block is not a heading)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation but `-` and `_` dropped, spaces to `-`."""
    headings = re.findall(r"^#+ (.*)$", _prose(page.read_text()), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", text, flags=re.M | re.S)


def test_the_readme_stays_a_short_page_for_users():
    lines = README.read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move detail to docs/ (issue 21: at most about 200)"


def test_ci_runs_the_test_command_the_readme_gives():
    blocks = _bash_blocks(README.read_text())
    commands = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    assert "make test" in commands, "the README's commands no longer include `make test`"
    ci = [line.strip() for line in (REPO / ".ci/run").read_text().splitlines()]
    assert "make test" in ci, ".ci/run must run the README's test command, `make test`"


def test_every_make_target_the_docs_name_exists():
    targets = set(re.findall(r"^([a-z][\w-]*):", (REPO / "Makefile").read_text(), flags=re.M))
    named = {(page.name, t) for page in PAGES for t in re.findall(r"`make ([a-z][\w-]*)", page.read_text())}
    assert named, "no `make <target>` found in the docs; the pattern is stale"
    missing = sorted((page, t) for page, t in named if t not in targets)
    assert not missing, f"make targets named in the docs but absent from the Makefile: {missing}"


def test_every_link_between_the_docs_resolves_to_a_file_and_heading():
    bad = []
    for page in [*PAGES, REPO / "CHANGELOG.md", REPO / "patches/README.md"]:
        for link in re.findall(r"\]\(([^)\s]+)\)", _prose(page.read_text())):
            if link.startswith(("http://", "https://", "mailto:")):
                continue
            target, _, anchor = link.partition("#")
            path = (page.parent / target).resolve() if target else page
            if not path.exists():
                bad.append(f"{page.relative_to(REPO)}: {link} (no such file)")
            elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
                bad.append(f"{page.relative_to(REPO)}: {link} (no heading #{anchor})")
    assert not bad, "broken links:\n" + "\n".join(bad)


def test_every_repository_file_and_test_the_docs_name_exists():
    test_sources = "\n".join(p.read_text() for p in (REPO / "tests").rglob("*.py"))
    bad = []
    for page in PAGES:
        for code in re.findall(r"`([^`\s]+)`", page.read_text()):
            path = code.split(":")[0].rstrip(",.")
            if path.startswith(TOP_DIRS) and not re.search(r"[*<>{$]", path) and not (REPO / path).exists():
                bad.append(f"{page.name}: {code} (no such path)")
            if re.fullmatch(r"test_\w+", code) and not re.search(rf"^\s*def {code}\(", test_sources, flags=re.M):
                bad.append(f"{page.name}: {code} (no such test)")
    assert not bad, "the docs name what the repository lacks:\n" + "\n".join(bad)


@pytest.fixture(scope="module")
def launcher_help() -> str:
    """The launcher's --help: OpenRLHF's parser plus the plugin's (--runtime cpu: no flash-attn here)."""
    proc = run_launcher("--runtime", "cpu", "--help")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_every_flag_the_readme_and_docs_name_is_accepted_by_the_launcher_or_a_patch(launcher_help: str):
    # Flags the upstream patches add to OpenRLHF's own parser (the patched path), e.g. --reward.aggregator_args.
    patched = {
        m.group(1)
        for patch in (REPO / "patches").glob("*.patch")
        for m in re.finditer(r'^\+.*add_argument\(\s*"(--[\w.]+)"', patch.read_text(), flags=re.M)
    }
    assert "--reward.aggregator_args" in patched, "the patch's flags were not found; the pattern is stale"
    unknown = []
    for page in PAGES:
        for flag in sorted(set(FLAG.findall(page.read_text()))):
            known = re.search(rf"(?<![\w.-]){re.escape(flag)}(?![\w.])", launcher_help)
            if not known and flag not in patched:
                unknown.append(f"{page.name}: {flag}")
    assert not unknown, "flags the launcher's --help does not list:\n" + "\n".join(unknown)


def test_every_metric_key_the_readme_names_is_in_the_generated_reference():
    reference = (REPO / "docs/reference.md").read_text()
    keys = set(re.findall(r"`((?:reward|aggregator|maestro)/[\w/<>]+)`", README.read_text()))
    assert keys, "no metric keys found in the README; the pattern is stale"
    # `aggregator/weight/<objective>`: the reference must name the fixed part of the key.
    missing = sorted(k for k in keys if k.split("<")[0] not in reference)
    assert not missing, f"metric keys in the README that docs/reference.md (generated from the code) lacks: {missing}"
