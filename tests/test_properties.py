"""Property-based: random YAML never crashes validate or plan; valid profiles round-trip through apply."""

from __future__ import annotations

import json

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.kaleyra.sandbox import Sandbox, SandboxAccount, serve_in_thread
from reconciler.schema import CATEGORIES

from conftest import NUMBERS, SID, WABA, Project

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30))
documents = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=12,
)
yaml_texts = st.one_of(
    documents.map(lambda document: yaml.safe_dump(document, allow_unicode=True)),
    st.text(alphabet=st.sampled_from(list("ab: -[]{}&*!|>'\"#\n\t%@`,?~+0123456789")), max_size=80),
    st.binary(max_size=60).map(lambda raw: raw.decode("latin-1")),
)


def assert_no_crash(result) -> None:
    assert result.exit_code in (0, 1), (result.exit_code, result.output)
    assert "Traceback" not in result.output + result.stderr
    assert "internal error" not in result.stderr, result.stderr


@SETTINGS
@given(text=yaml_texts, with_number=st.booleans())
def test_random_yaml_never_crashes_validate_or_plan(tmp_path_factory, text, with_number):
    project = Project(tmp_path_factory.mktemp("fuzz"), "http://127.0.0.1:9")
    if with_number:
        text = f'phone_number: "{NUMBERS[0]}"\naccount: main\n' + text
    project.write_raw("profile.yaml", text)
    for command in ("validate", "plan"):
        assert_no_crash(project.run(command))


# Valid values: one line (no control character, no line or paragraph separator); within the API's limits.
value_text = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")))
profiles = st.fixed_dictionaries(
    {},
    optional={
        "address": value_text.filter(lambda text: len(text) <= 256),
        "description": value_text.filter(lambda text: len(text) <= 256),
        "about": value_text.filter(lambda text: len(text) <= 139),
        "category": st.sampled_from([*CATEGORIES, ""]),
        "email": st.sampled_from(["", "a@b.co", "support+wa@acme-corp.example", "x.y_z@sub.domain.io"]),
        "callback_profile_id": st.from_regex(r"\A[A-Za-z0-9_-]{1,64}\Z"),
    },
)


@SETTINGS
@given(first=profiles, second=profiles)
def test_valid_profiles_round_trip_through_plan_and_apply(tmp_path_factory, first, second):
    held = Sandbox([SandboxAccount(SID, WABA, {NUMBERS[0]: {}})])
    server = serve_in_thread(held)
    try:
        project = Project(tmp_path_factory.mktemp("roundtrip"), server.url)
        path = project.profile_path(NUMBERS[0])
        for fields in (first, second):
            path.write_text(
                yaml.safe_dump({"phone_number": NUMBERS[0], "account": "main", **fields}, allow_unicode=True)
            )
            assert project.run("validate").exit_code == 0
            plan = json.loads(project.run("plan", "--format", "json").stdout)
            applied = project.run("apply", "--auto-approve")
            assert applied.exit_code == 0, applied.output
            assert project.applied().get(NUMBERS[0], {}) == fields
            sent = [change["fields"] for change in plan["changes"]]
            held_now = held.number(NUMBERS[0])
            assert {name: held_now[name] for name in fields} == fields, sent
            assert project.run("plan", "--detailed-exitcode").exit_code == 0
    finally:
        server.shutdown()
        server.server_close()
