"""Release checks run by .github/workflows/release.yml; each exits 1 with a reason on stderr.

python scripts/release.py check-tag v1.2.0    the tag names the package's version (reconciler.__version__)
python scripts/release.py notes 1.2.0         print CHANGELOG.md's section for 1.2.0 (the release's notes)
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# "## [1.2.0] - 2026-12-04" or "## [Unreleased]" (Keep a Changelog's version headings).
HEADING = re.compile(r"^## \[(?P<version>[^\]]+)\]", re.MULTILINE)


class ReleaseError(Exception):
    """A release must not go on: the message says why."""


def package_version(init: Path = ROOT / "reconciler" / "__init__.py") -> str:
    """`__version__` as written in reconciler/__init__.py, read without importing the package."""
    for node in ast.parse(init.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "__version__" for target in node.targets
        ):
            return ast.literal_eval(node.value)
    raise ReleaseError(f"{init}: no __version__")


def check_tag(tag: str, version: str) -> None:
    if tag != f"v{version}":
        raise ReleaseError(f"tag {tag} does not match the package version {version}: expected v{version}")


def notes(changelog: str, version: str) -> str:
    """The body of the changelog's section for `version`, without its heading or the link lines."""
    headings = list(HEADING.finditer(changelog))
    for index, heading in enumerate(headings):
        if heading.group("version") != version:
            continue
        end = headings[index + 1].start() if index + 1 < len(headings) else len(changelog)
        body = changelog[heading.end() : end]
        body = body.split("\n", 1)[1] if "\n" in body else ""  # the rest of the heading line (a date)
        # Keep a Changelog's link definitions follow the last section; they are not its notes.
        lines = [line for line in body.splitlines() if not re.match(r"^\[[^\]]+\]: ", line)]
        text = "\n".join(lines).strip()
        if not text:
            raise ReleaseError(f"CHANGELOG.md: the section for {version} is empty")
        return text + "\n"
    raise ReleaseError(f"CHANGELOG.md has no section for {version}: add '## [{version}] - YYYY-MM-DD'")


def main(argv: list[str]) -> int:
    try:
        match argv:
            case ["check-tag", tag]:
                check_tag(tag, package_version())
                print(f"{tag} matches the package version")
            case ["notes", version]:
                sys.stdout.write(notes((ROOT / "CHANGELOG.md").read_text(encoding="utf-8"), version))
            case _:
                print(__doc__, file=sys.stderr)
                return 2
    except ReleaseError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
