"""Desired state: every profile file under profiles_dir, loaded, validated and merged with defaults."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from . import schema
from .config import Config, display_path
from .errors import Problem, ValidationFailed
from .yamlfile import Document, NotARegularFile, load_mapping, refuse_unless_regular

PROFILE_SUFFIXES = (".yaml", ".yml")
# A file named like a phone number must hold that number; any other name (`support-line.yaml`) is fine.
FILE_NAMED_FOR_NUMBER = re.compile(r"\+?[0-9]{7,15}")  # the whole stem: used with fullmatch


@dataclass(frozen=True)
class Profile:
    """One number's desired profile: the fields to manage, defaults already merged in."""

    phone_number: str
    account: str
    fields: dict[str, str]
    source: str
    # Identifies exactly what would be applied (account target and fields): equal digests, no change.
    digest: str


def load_profiles(config: Config) -> dict[str, Profile]:
    """All profiles by phone number; raise ValidationFailed listing every problem in every file."""
    with _collector_paused():
        return _load_profiles(config)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Loading builds many short-lived, acyclic objects: reference counting frees them all, while the
    cyclic collector would only rescan them (about 30% of load time on 10,000 files; bench/plan.py)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _load_profiles(config: Config) -> dict[str, Profile]:
    problems: list[Problem] = []
    documents: list[Document] = []
    shown = _display_below(config.profiles_dir)
    for file in profile_files(config.profiles_dir, problems):
        try:
            documents.append(load_mapping(file, shown(file)))
        except ValidationFailed as failed:
            problems.extend(failed.problems)

    profiles: dict[str, Profile] = {}
    first_seen: dict[str, Document] = {}
    for document in documents:
        found = schema.check("profile", document)
        if found:
            problems.extend(found)
            continue
        profile = _resolve(document, config, problems)
        if profile is None:
            continue
        if profile.phone_number in first_seen:
            other = first_seen[profile.phone_number]
            line = other.position(("phone_number",))[0]
            problems.append(
                document.problem(
                    ("phone_number",),
                    f"phone number {profile.phone_number} is also declared in {other.path}:{line}",
                )
            )
            continue
        first_seen[profile.phone_number] = document
        profiles[profile.phone_number] = profile
    if problems:
        raise ValidationFailed(problems)
    return dict(sorted(profiles.items()))


def profile_files(root: Path, problems: list[Problem]) -> list[str]:
    """Every *.yaml / *.yml below `root`, sorted; symlinks leading outside `root` are problems.

    Hidden entries are skipped and symlinked folders are not descended into. Uses os.scandir, whose
    entries know whether they are links without another system call per file.
    """
    if not root.is_dir():
        problems.append(Problem(display_path(root), 0, 0, "profiles_dir does not exist or is not a folder"))
        return []
    real_root = os.path.realpath(root)
    found: list[str] = []
    folders = [os.fspath(root)]
    while folders:
        with os.scandir(folders.pop()) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_symlink() and not _inside(os.path.realpath(entry.path), real_root):
                    problems.append(
                        Problem(display_path(entry.path), 0, 0, "is a symlink leading outside profiles_dir")
                    )
                elif entry.is_dir(follow_symlinks=False):
                    folders.append(entry.path)
                elif entry.name.endswith(PROFILE_SUFFIXES):
                    # A FIFO or device named *.yaml would block the read: named here, never opened.
                    if entry.is_file():
                        found.append(entry.path)
                    else:
                        problems.append(Problem(display_path(entry.path), 0, 0, _not_regular(entry.path)))
    return sorted(found)


def _not_regular(path: str) -> str:
    try:
        refuse_unless_regular(os.stat(path).st_mode)
    except OSError as error:
        return str(error) if isinstance(error, NotARegularFile) else f"cannot be read ({error.strerror})"
    return "is not a regular file; it is not read"


def _display_below(root: Path) -> Callable[[str], str]:
    """display_path for the files profile_files finds below `root`, with the root's part worked out
    once: display_path asks for the working directory twice per call, 10,000 times on a big fleet."""
    folder = os.fspath(root)
    absolute, here = os.path.abspath(folder), os.getcwd()
    if here != absolute and _inside(here, absolute):
        return display_path  # working below the root: some files are shown relative, some not
    prefix = display_path(os.path.join(folder, "_"))[:-1]  # the root as shown, with its separator
    return lambda file: prefix + file[len(folder) :].lstrip(os.sep)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(os.path.join(root, ""))


def _number_in_file_name(path: str) -> str | None:
    """The phone number a file is named for (`+14155550100.yaml`), or None for any other name."""
    stem = os.path.basename(path).rsplit(".", 1)[0]  # not pathlib: this runs once per file
    if FILE_NAMED_FOR_NUMBER.fullmatch(stem):
        return "+" + stem.lstrip("+")
    return None


# What json.dumps(..., sort_keys=True, separators=(",", ":")) builds afresh on every call.
_CANONICAL_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


def profile_digest(phone_number: str, account: str, target: str, fields: dict[str, str]) -> str:
    canonical = _CANONICAL_JSON.encode(
        {"phone_number": phone_number, "account": account, "target": target, "fields": fields}
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _resolve(document: Document, config: Config, problems: list[Problem]) -> Profile | None:
    """Merge defaults under the profile, pick its account and check the rules that span files."""
    data = document.data
    account_name = data.get("account") or config.defaults.get("account")
    if account_name is None:
        if len(config.accounts) > 1:
            names = ", ".join(sorted(config.accounts))
            problems.append(
                document.problem((), f"missing 'account': several accounts are configured ({names})")
            )
            return None
        account_name = next(iter(config.accounts))
    account = config.accounts.get(account_name)
    if account is None:
        hint = schema.did_you_mean(account_name, sorted(config.accounts))
        where = ("account",) if "account" in data else ()
        problems.append(document.problem(where, f"account: unknown account '{account_name}'{hint}"))
        return None
    defaults = {key: value for key, value in config.defaults.items() if key in schema.FIELDS}
    fields = {**defaults, **{key: value for key, value in data.items() if key in schema.FIELDS}}
    if "incoming_url" in fields and account.api_version != "v1":
        where = ("incoming_url",) if "incoming_url" in data else ()
        problems.append(
            document.problem(
                where,
                f"incoming_url: only accounts with api_version v1 accept it; "
                f"account '{account_name}' is {account.api_version}",
            )
        )
        return None
    phone_number = data["phone_number"]
    named = _number_in_file_name(document.path)
    if named is not None and named != phone_number:
        problems.append(
            document.problem(
                ("phone_number",),
                f"phone_number is {phone_number} but the file is named for {named}; "
                "fix the number or rename the file (a copied profile must not update the wrong number)",
            )
        )
        return None
    fields = dict(sorted(fields.items()))
    target = account.waba_key
    return Profile(
        phone_number=phone_number,
        account=account_name,
        fields=fields,
        source=document.path,
        digest=profile_digest(phone_number, account_name, target, fields),
    )
