"""Run `reconciler` as a whole process, and print on stderr when each phase of an apply ended.

    python bench/phases.py apply --auto-approve      (bench/apply.py --phases runs it for you)

Milliseconds since this script began (Python's own start, about 25 ms, comes before): imports, the
config and profiles loaded, the plan made and printed, the client built, the first PUT sent, the last
answered, the state compacted, the report printed. For finding where start-up and the tail go; apply
itself runs unchanged.
"""

from __future__ import annotations

import atexit
import functools
import sys
import time
from typing import Any

STARTED = time.perf_counter()
marks: dict[str, float] = {}


def mark(name: str) -> None:
    marks.setdefault(name, (time.perf_counter() - STARTED) * 1000)


import reconciler.cli as cli  # noqa: E402
from reconciler import render  # noqa: E402
from reconciler.cli import apply as cli_apply  # noqa: E402
from reconciler.kaleyra import client as kaleyra  # noqa: E402
from reconciler.state import local as state  # noqa: E402

mark("imports")


def after(owner: Any, name: str, label: str) -> None:
    """Mark `label` when `owner.name` first returns."""
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        mark(label)
        return result

    setattr(owner, name, wrapper)


after(cli_apply, "load_desired", "config and profiles loaded")
after(cli_apply, "plan_for", "plan made")
after(render, "plan_text", "plan rendered")
after(kaleyra.KaleyraClient, "__init__", "client built")
after(state.Journal, "close", "state compacted")
after(cli_apply, "show_report", "report printed")
update = kaleyra.KaleyraClient.update


def timed_update(self: kaleyra.KaleyraClient, *args: Any, **kwargs: Any) -> Any:
    mark("first PUT sent")
    try:
        return update(self, *args, **kwargs)
    finally:
        marks["last PUT answered"] = (time.perf_counter() - STARTED) * 1000


kaleyra.KaleyraClient.update = timed_update  # type: ignore[method-assign]


@atexit.register
def report() -> None:
    for name, at in sorted(marks.items(), key=lambda item: item[1]):
        print(f"phase {at:9.1f} ms  {name}", file=sys.stderr)


sys.argv = ["reconciler", *sys.argv[1:]]
cli.main()
