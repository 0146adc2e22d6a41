"""The schemas: the fast pre-check agrees exactly with jsonschema, and the shipped files are current."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler import schema

names = st.sampled_from([*schema.FIELDS, "phone_number", "account", "adress", "api_key", ""])
values = st.one_of(
    st.sampled_from(
        ["", "x", "+14155550100", "0123", "a@b.co", "a@@b", "https://x.io/h", "ftp://x", "OTHER", "NOPE"]
    ),
    st.text(max_size=300),
    st.integers(),
    st.booleans(),
    st.none(),
    st.lists(st.text(max_size=3), max_size=2),
    st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
)
profiles = st.dictionaries(names, values, max_size=6).map(lambda d: {"phone_number": "+14155550100", **d})
configs = st.fixed_dictionaries(
    {
        "accounts": st.dictionaries(
            st.sampled_from(["main", "b", "bad name", ""]),
            st.dictionaries(
                st.sampled_from(["sid", "waba_id", "pod", "api_version", "api_key_env", "endpoint", "x"]),
                st.one_of(
                    st.sampled_from(["HX1", "766", "in", "sg", "v1", "v3", "KEY_1", "http://127.0.0.1:1"]),
                    st.integers(),
                ),
                max_size=6,
            ),
            max_size=2,
        )
    },
    optional={
        "profiles_dir": st.one_of(st.just("profiles"), st.just(""), st.integers()),
        "safety": st.fixed_dictionaries(
            {}, optional={"max_changes": st.one_of(st.integers(-3, 3), st.floats(0, 2), st.booleans())}
        ),
        "retry": st.fixed_dictionaries(
            {},
            optional={
                "attempts": st.integers(-1, 30),
                "deadline_s": st.one_of(st.floats(-1, 5), st.integers(-1, 5)),
            },
        ),
        "defaults": st.dictionaries(names, values, max_size=3),
    },
)


@settings(max_examples=400, deadline=None)
@given(instance=profiles)
def test_fast_check_agrees_with_jsonschema_on_profiles(instance):
    assert schema.fast_check("profile")(instance) == schema.validator("profile").is_valid(instance)


@settings(max_examples=400, deadline=None)
@given(instance=configs)
def test_fast_check_agrees_with_jsonschema_on_configs(instance):
    assert schema.fast_check("config")(instance) == schema.validator("config").is_valid(instance)


def test_the_schemas_are_valid_draft_2020_12_with_an_id():
    import jsonschema

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
    assert validator.is_valid(ok)
    assert len(schema.CATEGORIES) == 17
    for bad in (
        {**ok, "about": "x" * 140},
        {**ok, "address": "a" * 257},
        {**ok, "description": "d" * 257},
        {**ok, "category": "SPA"},
        {**ok, "email": "not-an-email"},
        {**ok, "incoming_url": "ftp://x.example"},
        {**ok, "phone_number": "+0123456789"},
        {**ok, "unknown": "x"},
    ):
        assert not validator.is_valid(bad), bad
