"""The README stays true: its `serm policy validate` examples print what the command prints
now, its policy excerpts are the files' own lines, it has a table of contents, and every
relative link and `#anchor` in README.md and docs/*.md resolves (GitHub's heading slugs)."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
FENCE = re.compile(r"^\s*(```|~~~)")


def blocks(text: str):
    """Fenced code blocks as (info string, lines, the line just before the opening fence)."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        info, before = lines[i].strip()[3:].strip(), lines[i - 1] if i else ""
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(m.group(1)):
            j += 1
        out.append((info, lines[i + 1:j], before))
        i = j + 1
    return out


def prose_lines(text: str):
    """The lines outside fenced code blocks, with their line numbers."""
    inside = None
    for n, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if m and inside is None:
            inside = m.group(1)
        elif m and line.strip().startswith(inside):
            inside = None
        elif inside is None:
            yield n, line


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: link and code markup dropped, lower case, punctuation
    other than '-' and '_' removed, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path):
    """(line number, target) of every markdown link and image outside code."""
    for n, line in prose_lines(path.read_text(encoding="utf-8")):
        line = re.sub(r"``.+?``", "", line)
        line = re.sub(r"`[^`]*`", "", line)
        for m in re.finditer(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", line):
            yield n, m.group(1)


def validate_examples():
    """Each `$ serm policy validate …` line in the README's text blocks with the lines it shows
    after it (up to the next `$ ` line or the end of the block)."""
    found = []
    for info, lines, _ in blocks(README.read_text(encoding="utf-8")):
        if info not in ("", "text", "console"):
            continue
        for i, line in enumerate(lines):
            if not line.startswith("$ serm policy validate "):
                continue
            shown = []
            for later in lines[i + 1:]:
                if later.startswith("$ "):
                    break
                shown.append(later)
            found.append((line[2:], shown))
    return found


def normalized(lines) -> list[str]:
    out = [line.rstrip() for line in lines]
    while out and not out[-1]:
        out.pop()
    return out


EXAMPLES = validate_examples()


def test_readme_shows_policy_validate_examples():
    assert EXAMPLES, "README.md shows no `$ serm policy validate FILE` example with its output"
    assert any(out and out[0].startswith("error:") for _, out in EXAMPLES), \
        "README.md should show how a malformed policy is refused"


@pytest.mark.parametrize("command,shown", EXAMPLES, ids=[c for c, _ in EXAMPLES])
def test_policy_validate_example_prints_what_the_readme_shows(command, shown):
    argv = shlex.split(command)
    assert argv[:3] == ["serm", "policy", "validate"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DVC_NO_ANALYTICS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "serm.cli", *argv[1:]], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    printed = normalized(proc.stdout.splitlines())
    assert printed == normalized(shown), (
        f"`{command}` no longer prints what README.md shows; paste its output there:\n" + proc.stdout)
    assert proc.returncode == (0 if printed and printed[0].startswith("OK") else 2), proc.stdout


def test_policy_excerpts_are_the_files_own_lines():
    excerpts = [(m.group(1), lines) for _, lines, before in blocks(README.read_text(encoding="utf-8"))
                if (m := re.match(r"^<!--\s*excerpt:\s*(\S+)\s*-->$", before.strip()))]
    assert excerpts, "README.md marks no policy excerpt (<!-- excerpt: FILE --> above its block)"
    for name, lines in excerpts:
        own = {line.rstrip() for line in (ROOT / name).read_text(encoding="utf-8").splitlines()}
        missing = [line for line in lines if line.strip() and line.rstrip() not in own]
        assert not missing, f"README.md's excerpt of {name} has lines the file does not: {missing}"


def test_readme_has_a_table_of_contents_linking_every_section():
    text = README.read_text(encoding="utf-8")
    prose = [line for _, line in prose_lines(text)]
    starts = [i for i, line in enumerate(prose) if re.match(r"^##\s+(table of )?contents\s*$", line, re.I)]
    assert starts, "README.md has no '## Contents' section"
    toc = []
    for line in prose[starts[0] + 1:]:
        if line.startswith("## "):
            break
        toc.append(line)
    linked = set(re.findall(r"\]\(#([^)]+)\)", "\n".join(toc)))
    sections = [slug(line[3:]) for line in prose if line.startswith("## ")]
    missing = [s for s in sections if s not in linked and s not in ("contents", "table-of-contents")]
    assert not missing, f"the table of contents does not link these sections: {missing}"


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_anchors_resolve(page):
    broken = []
    for n, target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):   # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{page.name}:{n}: {target} (no such file)")
            continue
        if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{page.name}:{n}: {target} (no heading #{anchor} in {dest.relative_to(ROOT)})")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_slugs_follow_github():
    assert slug("Running by itself: `serm watch`") == "running-by-itself-serm-watch"
    assert slug("The registry: GTO tags, promote, rollback") == "the-registry-gto-tags-promote-rollback"
    assert slug("Soak: 20 rounds") == "soak-20-rounds"
    assert slug("Evaluation without hidden grades") == "evaluation-without-hidden-grades"
