"""The audit log says who ran a change: GitHub's variables in CI, else the local user and commit."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from reconciler.state import audit

GITHUB = {
    "GITHUB_ACTOR": "octocat",
    "GITHUB_SHA": "0123456789abcdef0123456789abcdef01234567",
    "GITHUB_REF_NAME": "main",
    "GITHUB_SERVER_URL": "https://github.com",
    "GITHUB_REPOSITORY": "acme/whatsapp-profiles",
    "GITHUB_RUN_ID": "42",
}


def test_github_variables_are_recorded(monkeypatch):
    for name, value in GITHUB.items():
        monkeypatch.setenv(name, value)
    assert audit.who() == {
        "actor": "octocat",
        "commit": GITHUB["GITHUB_SHA"],
        "branch": "main",
        "ci_run": "https://github.com/acme/whatsapp-profiles/actions/runs/42",
    }


def test_outside_ci_the_local_user_and_git_commit_are_recorded(monkeypatch, tmp_path):
    for name in GITHUB:
        monkeypatch.delenv(name, raising=False)
    found = audit.who(tmp_path)  # not a git checkout: no commit, but still a user
    assert found["actor"] and "ci_run" not in found and "commit" not in found


def test_github_fields_reach_the_audit_log_through_apply(project):
    project.write_profile("+14155550100", about="x")
    assert project.run("apply", "--auto-approve", env=GITHUB).exit_code == 0
    assert project.audit()[-1]["by"] == {
        "actor": "octocat",
        "commit": GITHUB["GITHUB_SHA"],
        "branch": "main",
        "ci_run": "https://github.com/acme/whatsapp-profiles/actions/runs/42",
    }


def test_pre_commit_hooks_run_validate_and_fmt():
    hooks = yaml.safe_load((Path(__file__).parent.parent / ".pre-commit-hooks.yaml").read_text())
    assert [hook["id"] for hook in hooks] == ["reconciler-validate", "reconciler-fmt"]
    assert hooks[0]["entry"] == "reconciler validate" and hooks[0]["pass_filenames"] is False
    assert hooks[1]["entry"] == "reconciler fmt" and hooks[1]["pass_filenames"] is False


def test_a_remote_audit_log_that_fails_names_every_record_it_had_not_written(monkeypatch):
    """S3 cannot append: records wait for the next flush, and a failed flush loses all of them, not
    only the last batch; apply must list every such number as unaudited."""
    from reconciler.state.audit import S3AuditLog
    from reconciler.state.model import RecordingFailed

    log = S3AuditLog.__new__(S3AuditLog)
    puts: list[bytes] = []

    class Objects:
        def put(self, key, data, if_absent=False):
            if puts:
                from reconciler.state.s3objects import RemoteStateError

                raise RemoteStateError("503 Slow Down")
            puts.append(data)

    log.objects, log.prefix, log.key, log.lines, log.flushed, log.last_flush = (
        Objects(),
        "k.audit/",
        None,
        [],
        0,
        0,
    )
    log.location = None
    log.open()  # the first put: the empty object
    log.FLUSH_INTERVAL_S = 3600  # nothing flushes until close
    log.append([{"phone_number": "+1", "fields": {}}])
    log.append([{"phone_number": "+2", "fields": {}}])
    with pytest.raises(RecordingFailed):
        log.close()
    assert log.unwritten_numbers() == {"+1", "+2"}
