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
