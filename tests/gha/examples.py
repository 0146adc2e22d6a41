"""The caller workflows users copy (examples/github/<set>/), as this repository runs them.

Users' copies name the action by its release (`OWNER/kaleyra-reconciler@<sha>`); here the action is
this checkout's root (`./`), which needs a checkout first. `derive` is the only difference, so the
repository's own .github/workflows/reconciler-*.yml are the local-state set, derived (a test keeps
them equal), and the workflow tests run exactly the files users copy. After editing an example, run
`python tests/gha/examples.py` to derive the repository's copies again.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
EXAMPLES = PROJECT / "examples" / "github"
NAMES = ("reconciler-plan.yml", "reconciler-plan-comment.yml", "reconciler-apply.yml", "reconciler-drift.yml")
RELEASE = re.compile(r"^( *)- uses: OWNER/kaleyra-reconciler@[0-9a-f]{40} # .*$", re.MULTILINE)
NO_CHECKOUT = re.compile(r"^ *# No checkout: .*\n", re.MULTILINE)
CHECKOUT = "actions/checkout@fbc6f3992d24b796d5a048ff273f7fcc4a7b6c09 # v5.1.0"


def derive(text: str, source: str) -> str:
    """An example workflow with the action at this repository's root instead of a release."""
    has_checkout = "actions/checkout@" in text
    text = NO_CHECKOUT.sub("", text)

    def local(match: re.Match[str]) -> str:
        indent = match.group(1)
        lines = []
        if not has_checkout:  # `./` is the checkout's root: the default branch's code, as the release
            lines += [
                f"{indent}- uses: {CHECKOUT}",
                f"{indent}  with:",
                f"{indent}    persist-credentials: false",
            ]
        lines += [
            f"{indent}# `./`: the action at this checkout's root. zizmor's suggested `$/` is rejected by",
            f'{indent}# actionlint for a root action ("path is missing"), so both cannot be satisfied.',
            f"{indent}- uses: ./ # zizmor: ignore[self-repository]",
        ]
        return "\n".join(lines)

    derived, count = RELEASE.subn(local, text)
    assert count >= 1, f"{source}: expected a `uses: OWNER/kaleyra-reconciler@<sha>` line"
    return f"# Derived from {source} by tests/gha/examples.py: edit that file, not this one.\n" + derived


def example_set(name: str) -> dict[str, str]:
    """One set (`local-state` or `s3`), derived: workflow path in a repository -> text."""
    return {
        f".github/workflows/{file}": derive(
            (EXAMPLES / name / file).read_text(), f"examples/github/{name}/{file}"
        )
        for file in NAMES
    }


if __name__ == "__main__":
    for path, text in example_set("local-state").items():
        (PROJECT / path).write_text(text)
        print(f"wrote {path}", file=sys.stderr)
