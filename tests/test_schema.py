"""The schemas: fastjsonschema (the fast path), jsonschema (the describer) and ECMA-262 all agree."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import regress
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler import schema
from reconciler.yamlfile import parse_mapping

# Unicode's line breaks, then the controls and spaces on which Python's and ECMA-262's `\s` differ.
LINE_BREAKS = ["\n", "\r", "\r\n", "\x0b", "\x0c", "\x85", "\u2028", "\u2029"]
AWKWARD = [*LINE_BREAKS, "\t", "\x00", "\x1b", "\x7f", "\x9f", " ", "\u00a0", "\u3000", "\ufeff", "\x1c"]
VALID = ["+14155550100", "main", "a@b.co", "https://x.io/h", "OTHER", "HX1", "766", "in", "KEY_1", "x"]


def awkward_variants(valid: str) -> list[str]:
    """`valid` with each awkward character before, inside and after it."""
    middle = len(valid) // 2
    return [
        text
        for character in AWKWARD
        for text in (valid + character, character + valid, valid[:middle] + character + valid[middle:])
    ]


strings = st.one_of(
    st.sampled_from(
        ["", "0123", "a@@b", "ftp://x", "NOPE", "a b@c.io", "a@b.co ", "https://x.io/a b", *VALID]
    ),
    st.sampled_from(VALID).flatmap(lambda valid: st.sampled_from(awkward_variants(valid))),
    st.text(max_size=300),
    st.lists(st.sampled_from(["a", "@", ".", "+", "1", "/", ":", *AWKWARD]), max_size=12).map("".join),
)
values = st.one_of(
    strings,
    st.integers(),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
    st.lists(st.text(max_size=3), max_size=2),
    st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
)
names = st.sampled_from([*schema.FIELDS, "phone_number", "account", "adress", "api_key", ""])
profiles = st.dictionaries(names, values, max_size=6).map(lambda d: {"phone_number": "+14155550100", **d})


def valid_or(valid: object, *others: st.SearchStrategy) -> st.SearchStrategy:
    """Half the time `valid`, so that one awkward value often meets an otherwise valid document."""
    return st.one_of(st.just(valid), *others) if others else st.one_of(st.just(valid), strings)


accounts = st.fixed_dictionaries(
    {"sid": valid_or("HX1"), "waba_id": valid_or("766"), "pod": valid_or("in", strings, st.just("sg"))},
    optional={
        "api_version": valid_or("v1", strings, st.just("v3")),
        "api_key_env": valid_or("KEY_1"),
        "endpoint": valid_or("https://x.io/h", strings, st.just("http://127.0.0.1:1"), st.integers()),
        "x": strings,
    },
)
configs = st.fixed_dictionaries(
    {"accounts": st.dictionaries(valid_or("main", strings, st.just("bad name")), accounts, max_size=2)},
    optional={
        "profiles_dir": valid_or("profiles", strings, st.integers()),
        "state": st.fixed_dictionaries({}, optional={"path": valid_or("s/state.json")}),
        "safety": st.fixed_dictionaries(
            {}, optional={"max_changes": st.one_of(st.integers(-3, 3), st.floats(0, 2), st.booleans())}
        ),
        "retry": st.fixed_dictionaries(
            {},
            optional={
                "attempts": st.one_of(st.integers(-1, 30), st.floats(0, 3)),
                "deadline_s": st.one_of(st.floats(-1, 5), st.integers(-1, 5)),
            },
        ),
        "defaults": st.dictionaries(names, values, max_size=3),
    },
)


def ecma_validator(kind: str) -> jsonschema.protocols.Validator:
    """The schema as check-jsonschema reads it: patterns in a real ECMA-262 engine, unicode mode."""

    def pattern(validator, regex, instance, _schema):
        if validator.is_type(instance, "string") and not regress.Regex(regex, "u").find(instance):
            yield jsonschema.ValidationError(f"{instance!r} does not match {regex!r}")

    ecma = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": pattern})
    return ecma(schema.SCHEMAS[kind]())


ECMA = {kind: ecma_validator(kind) for kind in schema.SCHEMAS}


@settings(max_examples=400, deadline=None)
@given(instance=profiles)
def test_the_fast_path_the_describer_and_ecma_262_agree_on_profiles(instance):
    verdict = schema.is_valid("profile", instance)
    assert verdict == schema.validator("profile").is_valid(instance)
    assert verdict == ECMA["profile"].is_valid(instance)


@settings(max_examples=400, deadline=None)
@given(instance=configs)
def test_the_fast_path_the_describer_and_ecma_262_agree_on_configs(instance):
    verdict = schema.is_valid("config", instance)
    assert verdict == schema.validator("config").is_valid(instance)
    assert verdict == ECMA["config"].is_valid(instance)


def string_properties(node, path=()):
    """Every (path, subschema) of type string in a schema, the account-name pattern included."""
    if node.get("type") == "string" or (path and path[-1] == "propertyNames"):
        yield path, node
    for key in ("properties",):
        for name, child in node.get(key, {}).items():
            yield from string_properties(child, (*path, name))
    for key in ("additionalProperties", "propertyNames"):
        if isinstance(node.get(key), dict):
            yield from string_properties(node[key], (*path, key))


STRING_PROPERTIES = [
    (kind, path, node) for kind, build in schema.SCHEMAS.items() for path, node in string_properties(build())
]


@pytest.mark.parametrize(
    ("kind", "path", "node"), STRING_PROPERTIES, ids=[f"{k}:{'.'.join(p)}" for k, p, _ in STRING_PROPERTIES]
)
def test_every_string_in_either_schema_refuses_line_breaks_and_control_characters(kind, path, node):
    if "enum" in node:
        assert not any(schema.NOT_IN_A_LINE_RE.search(option) for option in node["enum"])
        return
    python, ecma = schema.ecma_regex(node["pattern"]), regress.Regex(node["pattern"], "u")
    fitting = [text for text in VALID if python.search(text)]
    assert fitting, f"{path}: no sample value fits"
    for valid in fitting:
        for text in awkward_variants(valid):
            assert (python.search(text) is None) == (ecma.find(text) is None), (path, text)
            if schema.NOT_IN_A_LINE_RE.search(text):
                assert python.search(text) is None, (path, text)


@pytest.mark.parametrize("ending", LINE_BREAKS)
def test_a_value_ending_with_a_line_break_is_named_with_its_field_and_position(ending):
    text = (
        f'phone_number: "+14155550100"\nemail: "ops@example.org{ending.encode("unicode_escape").decode()}"\n'
    )
    document = parse_mapping(text, "f.yaml")
    assert document.data["email"].endswith(ending)
    [problem] = schema.check("profile", document)
    assert str(problem).startswith("f.yaml:2:8: email: ends with a line break (U+")


def test_a_block_scalar_is_refused_with_a_hint_about_its_final_line_break():
    document = parse_mapping('phone_number: "+14155550100"\nabout: |\n  Body care\n', "f.yaml")
    assert [str(problem) for problem in schema.check("profile", document)] == [
        "f.yaml:2:8: about: ends with a line break (U+000A); every value is a single line "
        "(a | or > block adds one: write the value on the key's line, quoted if needed)"
    ]


def test_a_line_break_inside_a_value_and_a_control_character_are_named():
    document = parse_mapping(
        'phone_number: "+14155550100"\naddress: "1 Market St\\u2028SF"\nabout: "bell\\a"\n', "f.yaml"
    )
    assert [str(problem) for problem in schema.check("profile", document)] == [
        "f.yaml:2:10: address: a line break (U+2028) inside the value; every value is a single line",
        "f.yaml:3:8: about: control character U+0007 in the value",
    ]


def test_the_schemas_are_valid_draft_2020_12_with_an_id():
    for kind, build in schema.SCHEMAS.items():
        document = build()
        jsonschema.Draft202012Validator.check_schema(document)
        assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema", kind
        assert document["$id"].endswith(f"{kind}.schema.json")


def test_the_profile_schema_encodes_the_api_reference_rules():
    validator = schema.validator("profile")
    ok = {
        "phone_number": "+914846000101",
        "category": "BEAUTY_SPA_SALON",
        "about": "x" * 139,
        "address": "a" * 256,
    }
    assert validator.is_valid(ok) and schema.is_valid("profile", ok)
    assert len(schema.CATEGORIES) == 17
    for bad in (
        {**ok, "about": "x" * 140},
        {**ok, "address": "a" * 257},
        {**ok, "description": "d" * 257},
        {**ok, "category": "SPA"},
        {**ok, "email": "not-an-email"},
        {**ok, "incoming_url": "ftp://x.example"},
        {**ok, "phone_number": "+0123456789"},
        {**ok, "phone_number": "+914846000101\n"},
        {**ok, "unknown": "x"},
    ):
        assert not validator.is_valid(bad), bad
        assert not schema.is_valid("profile", bad), bad


def test_checking_never_writes_the_schema_defaults_into_the_data():
    config = {"accounts": {"main": {"sid": "HX1", "waba_id": "1", "pod": "in"}}}
    assert schema.is_valid("config", config)
    assert config == {"accounts": {"main": {"sid": "HX1", "waba_id": "1", "pod": "in"}}}


def test_if_the_describer_ever_found_nothing_the_file_is_still_refused(monkeypatch):
    class FindsNothing:
        def iter_errors(self, instance):
            return iter(())

    monkeypatch.setattr(schema, "validator", lambda kind: FindsNothing())
    document = parse_mapping('phone_number: "+14155550100\\n"\n', "f.yaml")
    assert [str(problem) for problem in schema.check("profile", document)] == [
        "f.yaml:1:1: does not satisfy the profile schema"
    ]


@pytest.mark.parametrize("kind", ["profile", "config"])
def test_the_shipped_validators_were_generated_from_the_current_schemas(kind):
    """reconciler/compiled/ is fastjsonschema's code for the schemas, shipped to spare every command
    generating it; a schema change without `python -m reconciler.schema` must fail here."""
    import importlib

    import fastjsonschema

    compiled = importlib.import_module(f"reconciler.compiled.{kind}")
    assert schema.schema_digest(kind) == compiled.SCHEMA_SHA256, "run `python -m reconciler.schema`"
    if compiled.VERSION == fastjsonschema.VERSION:  # the same generator must give the same code
        shipped = Path(compiled.__file__).read_text()
        assert shipped == schema.compiled_source(kind), "run `python -m reconciler.schema`"
