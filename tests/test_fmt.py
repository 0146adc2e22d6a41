"""fmt: the canonical form, comments kept, values never changed (a property test), bad files refused."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler import schema
from reconciler.errors import ValidationFailed
from reconciler.fmt import KEY_ORDER, format_text
from reconciler.yamlfile import parse_mapping

PHONE = '"+14155550100"'


def fmt(text: str) -> str:
    return format_text(text, "f.yaml")


def test_keys_follow_the_schema_order_and_only_text_that_yaml_would_retype_is_quoted():
    assert fmt(
        "about: 'We answer'\n"
        "email: ops@example.org   \n"
        f"phone_number: {PHONE}\n"
        "category: OTHER\n"
        "account: main\n"
        'description: "yes"\n'
    ) == (
        f"phone_number: {PHONE}\n"
        "account: main\n"
        'description: "yes"\n'
        "category: OTHER\n"
        "email: ops@example.org\n"
        "about: We answer\n"
    )


def test_comments_travel_with_their_key_and_the_modeline_and_header_stay_on_top():
    source = (
        "# Acme's support line, kept by the care team.\n"
        "\n"
        "# what people read first\n"
        "about: Body care   # at most 139 characters\n"
        "# yaml-language-server: $schema=../../schemas/profile.schema.json\n"
        f"phone_number: {PHONE}  # the number itself\n"
        "account: main\n"
        "# end of file\n"
    )
    assert fmt(source) == (
        "# yaml-language-server: $schema=../../schemas/profile.schema.json\n"
        "# Acme's support line, kept by the care team.\n"
        "\n"
        f"phone_number: {PHONE}  # the number itself\n"
        "account: main\n"
        "\n"
        "# what people read first\n"
        "about: Body care  # at most 139 characters\n"
        "\n"
        "# end of file\n"
    )


def test_a_comment_between_a_key_and_its_value_stays_with_that_key():
    assert fmt(f"about:  # shown on the profile\n  Body care\nphone_number: {PHONE}\n") == (
        f"phone_number: {PHONE}\nabout: Body care  # shown on the profile\n"
    )


def test_flow_style_crlf_a_byte_order_mark_anchors_tags_and_folded_lines_become_one_form():
    source = (
        f"--- # profile\r\n{{phone_number: {PHONE}, about: &text !!str yes,\r\n"
        "  address: *text, description: one\r\n   two}\r\n"
    )
    assert fmt(source) == (
        f'# profile\n\nphone_number: {PHONE}\naddress: "yes"\ndescription: one two\nabout: "yes"\n'
    )


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("Body care", "Body care"),
        ("café ☕ 🙂", "café ☕ 🙂"),
        ("a#b", "a#b"),
        ("no. 5, rear door", "no. 5, rear door"),
        ("", '""'),
        ("yes", '"yes"'),
        ("No", '"No"'),
        ("on", '"on"'),
        ("null", '"null"'),
        ("~", '"~"'),
        ("1e3", '"1e3"'),
        ("0x1F", '"0x1F"'),
        ("0o17", '"0o17"'),
        ("1_000", '"1_000"'),
        ("12:30:00", '"12:30:00"'),
        (".inf", '".inf"'),
        ("2024-01-01", '"2024-01-01"'),
        ("+14155550100", '"+14155550100"'),
        ("@acme", '"@acme"'),
        ("*star", '"*star"'),
        ("&anchor", '"&anchor"'),
        ("!tag", '"!tag"'),
        ("%percent", '"%percent"'),
        ("`tick", '"`tick"'),
        ("- dash", '"- dash"'),
        ("? question", '"? question"'),
        ("[a]", '"[a]"'),
        ("{a}", '"{a}"'),
        ("| pipe", '"| pipe"'),
        ("> angle", '"> angle"'),
        ("key: value", '"key: value"'),
        ("a # not a comment", '"a # not a comment"'),
        ("<<", '"<<"'),
        (" leading", '" leading"'),
        ("trailing ", '"trailing "'),
        ("it's", "it's"),
        ("'quoted'", "\"'quoted'\""),
        ('say "hi"', 'say "hi"'),
        ('"hi"', '"\\"hi\\""'),
        ("back\\slash", "back\\slash"),
        ("\\", "\\"),
        ("\ufeffbom", '"\\uFEFFbom"'),
        ("non\ufffecharacter", '"non\\uFFFEcharacter"'),
    ],
)
def test_each_value_is_written_plain_or_quoted_and_reads_back_the_same(value, written):
    source = yaml.safe_dump({"phone_number": "+14155550100", "about": value}, allow_unicode=True)
    assert fmt(source) == f"phone_number: {PHONE}\nabout: {written}\n"
    assert parse_mapping(fmt(source), "f.yaml").data["about"] == value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("about: [unclosed\n", "f.yaml:3:1: YAML syntax error"),
        ("about: a\nabout: b\n", "f.yaml:3:1: duplicate key 'about' (first set on line 2)"),
        ("adress: x\n", "f.yaml:2:1: unknown key 'adress' (did you mean 'address'?)"),
        ("about: |\n  two\n  lines\n", "f.yaml:2:8: about: a line break (U+000A) inside the value"),
        ("about: yes\n", "f.yaml:2:8: about: expected text, got a boolean"),
    ],
)
def test_a_file_that_does_not_load_or_validate_is_refused_naming_line_and_column(text, message):
    with pytest.raises(ValidationFailed) as failed:
        fmt(f"phone_number: {PHONE}\n" + text)
    assert message in str(failed.value)


# --- the property: fmt never changes a value, keeps every comment, and is idempotent ---------------

AWKWARD = [
    "",
    " ",
    "yes",
    "No",
    "on",
    "OFF",
    "null",
    "Null",
    "~",
    "true",
    "1e3",
    "0x1F",
    "0o17",
    "012",
    "1_000",
    "12:30:00",
    "-.inf",
    ".NaN",
    "2024-01-01",
    "2024-01-01 10:00:00",
    "+14155550100",
    "@a",
    "*a",
    "&a",
    "!a",
    "%a",
    "`a",
    "- a",
    "? a",
    ": a",
    "[a]",
    "{a}",
    "|",
    ">",
    "a: b",
    "a:b",
    "a #b",
    "a#b",
    "#a",
    "<<",
    "=",
    " lead",
    "trail ",
    "'",
    '"',
    "''",
    '""',
    "\\",
    "\\n",
    "é",
    "日本",
    "🙂",
    "\ufeff",
    "\u00a0",
    "\ufffe",
]
# One-line text (no control character, no line or paragraph separator), as a valid profile holds.
one_line = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")))
awkward_text = st.one_of(
    st.sampled_from(AWKWARD),
    st.lists(st.sampled_from(AWKWARD), min_size=1, max_size=4).map("".join),
    one_line,
)
fields = st.fixed_dictionaries(
    {},
    optional={
        "account": st.sampled_from(["main", "acme-in", "a.b_c"]),
        "address": awkward_text.filter(lambda text: len(text) <= 256),
        "description": awkward_text.filter(lambda text: len(text) <= 256),
        "about": awkward_text.filter(lambda text: len(text) <= 139),
        "category": st.sampled_from([*schema.CATEGORIES, ""]),
        "email": st.sampled_from(["", "a@b.co", "o'brien+wa@acme-corp.example"]),
        "incoming_url": st.sampled_from(["", "https://x.example/h?a=1#f", "http://x.example"]),
        "callback_profile_id": st.from_regex(r"\A[A-Za-z0-9_-]{1,64}\Z"),
    },
)
# Comment text: anything the YAML reader takes on one line.
comment_text = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="\ufffe\uffff"
    ),
    max_size=20,
).map(lambda text: ("# " + text).rstrip())


@st.composite
def profile_sources(draw) -> tuple[dict[str, str], str, list[str]]:
    """A valid profile, the YAML text of it in a random style, and the comments in that text."""
    data = {"phone_number": "+14155550100", **draw(fields)}
    keys = draw(st.permutations(list(data)))
    style = draw(st.sampled_from([None, '"', "'"]))
    lines, comments = [], []
    if draw(st.booleans()):
        lines.append("# yaml-language-server: $schema=../../schemas/profile.schema.json")
        comments.append(lines[-1])
    for key in keys:
        for comment in draw(st.lists(comment_text, max_size=2)):
            lines += [""] * draw(st.integers(0, 1)) + [comment]
            comments.append(comment)
        pair = yaml.safe_dump(
            {key: data[key]},
            default_style=style,
            allow_unicode=draw(st.booleans()),
            width=draw(st.sampled_from([20, 80])),
        ).rstrip("\n")
        inline = draw(st.one_of(st.none(), comment_text))
        if inline is not None:
            pair += " " * draw(st.integers(1, 3)) + inline
            comments.append(inline)
        lines.append(pair + " " * draw(st.integers(0, 2)))
    return data, "\n".join(lines) + "\n", comments


@settings(max_examples=200, deadline=None)
@given(source=profile_sources())
def test_fmt_never_changes_a_value_keeps_every_comment_and_is_idempotent(source):
    data, text, comments = source
    assert parse_mapping(text, "f.yaml").data == data  # the generated file itself is right
    formatted = fmt(text)
    assert parse_mapping(formatted, "f.yaml").data == data
    assert fmt(formatted) == formatted
    for comment in set(comments):
        assert formatted.count(comment) >= comments.count(comment), comment
    keys = [line.split(":", 1)[0] for line in formatted.splitlines() if line and not line.startswith("#")]
    assert keys == [key for key in KEY_ORDER if key in data]
    assert formatted.endswith("\n") and not formatted.endswith("\n\n")
    assert all(line == line.rstrip() for line in formatted.splitlines())
