"""What a release is made of: one version everywhere, `--version`, the changelog's notes, the wheel."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import reconciler

REPO = Path(__file__).resolve().parent.parent


def _release_script():
    spec = importlib.util.spec_from_file_location("release", REPO / "scripts" / "release.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


release = _release_script()


def test_the_installed_distribution_has_the_packages_version():
    """pyproject.toml reads reconciler.__version__: the metadata pip sees is that one value."""
    assert importlib.metadata.version("kaleyra-reconciler") == reconciler.__version__
    assert release.package_version() == reconciler.__version__


def test_version_prints_the_package_state_and_plan_format_versions(project, sandbox):
    result = subprocess.run(
        [sys.executable, "-m", "reconciler", "--version"], capture_output=True, text=True, check=True
    )
    # The format versions printed are the ones the documents carry.
    project.write_profile("+14155550100", about="Open 9-5")
    assert project.run("apply", "--auto-approve").exit_code == 0
    assert project.run("plan", "--out", "plan.json").exit_code == 0
    state_format = json.loads(project.state_path.read_text())["format_version"]
    plan_format = json.loads((project.root / "plan.json").read_text())["format_version"]
    assert result.stdout.splitlines() == [
        f"reconciler {reconciler.__version__}",
        f"state format {state_format}",
        f"plan format {plan_format}",
    ]


CHANGELOG = """\
# Changelog

## [Unreleased]

### Added

- Something new.

## [1.1.0] - 2026-12-01

### Fixed

- A bug.

## [1.0.0] - 2026-11-01

- The first.

[Unreleased]: https://example.org/compare/v1.1.0...HEAD
[1.1.0]: https://example.org/releases/tag/v1.1.0
"""


def test_notes_are_the_versions_section_without_heading_or_neighbours():
    assert release.notes(CHANGELOG, "1.1.0") == "### Fixed\n\n- A bug.\n"
    assert release.notes(CHANGELOG, "Unreleased") == "### Added\n\n- Something new.\n"


def test_notes_of_the_last_section_leave_out_the_link_definitions():
    assert release.notes(CHANGELOG, "1.0.0") == "- The first.\n"


@pytest.mark.parametrize("version", ["1.2.0", "1.1", "1.0.0-rc1"])
def test_notes_refuse_a_version_with_no_section(version):
    with pytest.raises(release.ReleaseError, match=f"no section for {version}"):
        release.notes(CHANGELOG, version)


def test_notes_refuse_an_empty_section():
    with pytest.raises(release.ReleaseError, match="empty"):
        release.notes("## [2.0.0] - 2026-12-04\n\n## [1.0.0]\n- x\n", "2.0.0")


def test_the_changelog_has_an_unreleased_section_and_one_for_the_current_version():
    changelog = (REPO / "CHANGELOG.md").read_text()
    assert release.notes(changelog, "Unreleased")
    assert release.notes(changelog, reconciler.__version__)


def test_check_tag_accepts_only_the_package_versions_tag():
    release.check_tag("v1.2.0", "1.2.0")
    for tag in ("1.2.0", "v1.2.1", "v1.2.0-rc1", "v1.2"):
        with pytest.raises(release.ReleaseError, match="does not match"):
            release.check_tag(tag, "1.2.0")


def test_the_script_exits_1_with_the_reason():
    run = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "release.py"), "check-tag", "v0.0.0-never"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 1
    assert f"expected v{reconciler.__version__}" in run.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel as the release workflow builds it: `python -m build`, the wheel made from the sdist.
    .ci/run builds it once and passes it in RECONCILER_WHEEL."""
    if built := os.environ.get("RECONCILER_WHEEL"):
        return Path(built)
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "-q", "--outdir", str(out), str(REPO)],
        check=True,
        capture_output=True,
    )
    (found,) = out.glob("kaleyra_reconciler-*.whl")
    return found


def test_the_wheel_carries_every_module_and_the_compiled_validators(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    source = {
        path.relative_to(REPO).as_posix()
        for path in (REPO / "reconciler").rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert source - names == set()
    assert {"reconciler/compiled/profile.py", "reconciler/compiled/config.py"} <= names


def test_the_wheel_carries_the_licence_and_its_spdx_expression(wheel):
    archive = zipfile.ZipFile(wheel)
    dist_info = f"kaleyra_reconciler-{reconciler.__version__}.dist-info"
    metadata = archive.read(f"{dist_info}/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata.splitlines()
    assert f"Version: {reconciler.__version__}" in metadata.splitlines()
    assert archive.read(f"{dist_info}/licenses/LICENSE") == (REPO / "LICENSE").read_bytes()


def _release_workflow() -> dict:
    import yaml

    return yaml.safe_load((REPO / ".github" / "workflows" / "release.yml").read_text())


def test_only_the_publish_job_can_mint_an_oidc_token_and_it_runs_in_the_pypi_environment():
    workflow = _release_workflow()
    assert workflow["permissions"] == {}
    minting = [name for name, job in workflow["jobs"].items() if "id-token" in job.get("permissions", {})]
    assert minting == ["publish"]
    publish = workflow["jobs"]["publish"]
    assert publish["environment"]["name"] == "pypi"
    assert publish["permissions"]["id-token"] == "write"
    uses = [step.get("uses", "") for step in publish["steps"]]
    assert any(u.startswith("actions/attest-build-provenance@") for u in uses)
    assert uses[-1].startswith("pypa/gh-action-pypi-publish@")  # trusted publishing: no password input
    assert all("with" not in step or "password" not in step["with"] for step in publish["steps"])


def test_the_release_checks_tag_and_notes_before_building_and_runs_on_v_tags_only():
    workflow = _release_workflow()
    # PyYAML reads the key `on` as True (YAML 1.1).
    assert workflow[True] == {"push": {"tags": ["v*"]}}
    runs = [step.get("run", "") for step in workflow["jobs"]["build"]["steps"]]
    order = [
        next(i for i, run in enumerate(runs) if needle in run)
        for needle in ("release.py check-tag", "release.py notes", "python -m build", "twine check --strict")
    ]
    assert order == sorted(order)
    assert workflow["jobs"]["github-release"]["needs"] == "publish"
