"""The reference pages that list what the code defines list all of it."""

from __future__ import annotations

import json
import re
from pathlib import Path

from reconciler.schema import CATEGORIES

DOCS = Path(__file__).resolve().parent.parent / "docs"
SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"


def test_the_profile_fields_page_lists_every_field_of_the_schema():
    page = (DOCS / "reference" / "profile-fields.md").read_text()
    listed = set(re.findall(r"^\| `(\w+)` \|", page, re.MULTILINE))
    schema = json.loads((SCHEMAS / "profile.schema.json").read_text())
    assert set(schema["properties"]) <= listed


def test_the_profile_fields_page_lists_exactly_kaleyras_17_categories():
    page = (DOCS / "reference" / "profile-fields.md").read_text()
    section = page.split("## Categories", 1)[1]
    listed = re.findall(r"^\| `([A-Z_]+)` \|", section, re.MULTILINE)
    assert len(listed) == 17
    assert set(listed) == {category for category in CATEGORIES if category}


def test_the_recovery_pages_journal_fold_command_works(tmp_path):
    """The command docs/how-to/recover.md gives to fold an unsaved journal into state.json does
    that: after it, state.json alone holds the journaled entry, and the journal is gone."""
    import shlex
    import subprocess
    import sys

    from reconciler.state.local import Journal, LocalStateStore
    from reconciler.state.model import Entry

    page = (DOCS / "how-to" / "recover.md").read_text()
    [command] = [line for line in page.splitlines() if line.startswith("python3 -c ")]
    folder = tmp_path / "fold" / ".reconciler"
    folder.mkdir(parents=True)
    store = LocalStateStore(folder / "state.json")
    state = store.load()
    journal = Journal(store, state)  # as a run that died before compacting leaves it
    journal.open()
    journal.record([("+14155550100", Entry("acme-us", "HX/1", {"about": "Hi"}, "2026-12-01T00:00:00Z", "d"))])
    journal._close_file()
    assert store.journal_path.exists()

    code = shlex.split(command)[2].replace("/tmp/fold", str(tmp_path / "fold"))
    subprocess.run([sys.executable, "-c", code], check=True)
    assert not store.journal_path.exists()
    saved = json.loads((folder / "state.json").read_text())
    assert saved["numbers"]["+14155550100"]["fields"] == {"about": "Hi"}


def test_the_action_page_lists_every_input_and_output_of_action_yml():
    import yaml

    action = yaml.safe_load((DOCS.parent / "action.yml").read_text())
    page = (DOCS / "reference" / "action.md").read_text()
    inputs = page.split("## Inputs", 1)[1].split("## Outputs", 1)[0]
    outputs = page.split("## Outputs", 1)[1].split("## ", 1)[0]
    assert set(re.findall(r"^\| `([\w-]+)` \|", inputs, re.MULTILINE)) == set(action["inputs"])
    assert set(re.findall(r"^\| `([\w-]+)` \|", outputs, re.MULTILINE)) == set(action.get("outputs") or {})
