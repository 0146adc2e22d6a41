"""A fake GitHub for the workflow tests: the REST endpoints the workflows call, and git over HTTP.

It is reached the way the real `gh` and git reach GitHub, through an HTTP proxy: gh talks to
`http://api.github.localhost/` when GH_HOST=github.localhost (cli/cli internal/ghinstance/host.go,
RESTPrefix), and HTTP_PROXY / http_proxy send that, and git's `http://github.localhost/OWNER/REPO`,
to this server. Each token holds exactly the permissions its job declared; anything more is refused
with GitHub's 403. Comments and issues have authors: a job's token posts as `github-actions[bot]`
(type Bot); tests post as people. Git is served by `git http-backend` from a bare repository whose
pre-receive hook emulates branch protection (GH006) for the workflow token.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import subprocess
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

API_HOST = "api.github.localhost"
GIT_HOST = "github.localhost"
BOT = {"login": "github-actions[bot]", "id": 41898282, "type": "Bot"}
LEVELS = {"none": 0, "read": 1, "write": 2}
FORBIDDEN = {"message": "Resource not accessible by integration", "status": "403"}

PRE_RECEIVE = r"""#!/usr/bin/env bash
# Branch protection, as GitHub enforces it: a rule requiring pull requests refuses every direct push
# by the workflow token (the fake server sets FAKEGH_ACTOR for pushes over HTTP; people push by path).
set -u
hooks="$(cd "$(dirname "$0")" && pwd)"
input=$(cat)
if [ -x "$hooks/inject" ]; then printf '%s\n' "$input" | "$hooks/inject" || exit 1; fi
[ -n "${FAKEGH_ACTOR:-}" ] || exit 0
while read -r old new ref; do
  branch=${ref#refs/heads/}
  if grep -qxF -- "$branch" "$hooks/../protected-branches" 2>/dev/null; then
    echo "error: GH006: Protected branch update failed for $ref."
    echo "error: Changes must be made through a pull request."
    exit 1
  fi
done <<< "$input"
exit 0
"""


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Token:
    permissions: dict[str, str]
    actor: dict[str, Any] = field(default_factory=lambda: dict(BOT))

    def may(self, scope: str, level: str) -> bool:
        if scope == "metadata" and level == "read":
            return True
        return LEVELS[self.permissions.get(scope, "none")] >= LEVELS[level]


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    status: int
    remaining: int


class FakeGitHub:
    """The state of one repository on the fake GitHub, and the server that exposes it."""

    def __init__(self, root: Path, repository: str = "acme/profiles"):
        self.root = root
        self.repository = repository
        self.bare = root / "git" / f"{repository}.git"
        self.lock = threading.RLock()
        self.tokens: dict[str, Token] = {}
        self.pulls: dict[int, dict[str, Any]] = {}
        self.issues: dict[int, dict[str, Any]] = {}
        self.comments: dict[int, dict[str, Any]] = {}
        self.labels: set[str] = set()
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str, int]] = []
        # What was refused as github.com refuses it (method, url, why): tests assert it stays empty.
        self.refused: list[tuple[str, str, str]] = []
        # Pushes over HTTP (by a job's token): (actor, ref). None of them triggers a workflow run.
        self.token_pushes: list[tuple[str, str]] = []
        self.numbers = itertools.count(1)
        self.comment_ids = itertools.count(1001)
        self.bare.parent.mkdir(parents=True, exist_ok=True)
        git("init", "-q", "--bare", "-b", "main", str(self.bare))
        git("-C", str(self.bare), "config", "uploadpack.allowAnySHA1InWant", "true")
        git("-C", str(self.bare), "config", "http.receivepack", "true")
        hook = self.bare / "hooks" / "pre-receive"
        hook.write_text(PRE_RECEIVE)
        hook.chmod(0o755)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.proxy = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- what tests set up and inspect -------------------------------------------------------------

    def protect(self, branch: str) -> None:
        with (self.bare / "protected-branches").open("a") as file:
            file.write(branch + "\n")

    def issue_token(self, permissions: dict[str, str]) -> str:
        token = "ghs_" + base64.b32encode(os.urandom(15)).decode().lower()
        with self.lock:
            self.tokens[token] = Token(dict(permissions))
        return token

    def revoke(self, token: str) -> None:
        with self.lock:
            self.tokens.pop(token, None)

    def fail(self, method: str, path_pattern: str, status: int = 500, times: int = 1) -> None:
        """Answer the next `times` matching requests with `status` (a flaky GitHub)."""
        with self.lock:
            self.faults.append(Fault(method, re.compile(path_pattern), status, times))

    def add_pull(self, **fields: Any) -> dict[str, Any]:
        with self.lock:
            number = next(self.numbers)
            pull = {"number": number, "state": "open", "merged_at": None, "merge_commit_sha": None, **fields}
            self.pulls[number] = pull
            self.issues[number] = {"number": number, "pull": True, "state": "open", "labels": []}
            return pull

    def add_comment(self, number: int, body: str, user: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            comment = {
                "id": next(self.comment_ids),
                "issue_number": number,
                "user": dict(user),
                "body": body,
                "created_at": now(),
                "updated_at": now(),
            }
            self.comments[comment["id"]] = comment
            return comment

    def add_issue(self, title: str, body: str, labels: list[str], user: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            number = next(self.numbers)
            issue = {
                "number": number,
                "state": "open",
                "title": title,
                "body": body,
                "labels": labels,
                "user": user,
            }
            self.issues[number] = issue
            self.labels.update(labels)
            return dict(issue)

    def comments_on(self, number: int) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(c) for c in self.comments.values() if c["issue_number"] == number]

    def open_issues(self, label: str) -> list[dict[str, Any]]:
        with self.lock:
            return [
                dict(i)
                for i in self.issues.values()
                if not i.get("pull") and i["state"] == "open" and label in i["labels"]
            ]

    # --- REST ------------------------------------------------------------------------------------

    def _rest(self, method: str, url: str, token: Token | None, body: Any) -> tuple[int, Any, dict[str, str]]:
        parts = urlsplit(url)
        path, query = parts.path, {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if token is None:
            return 401, {"message": "Bad credentials"}, {}
        repo = re.escape(self.repository)
        routes: list[tuple[str, str, Any]] = [
            ("GET", rf"/repos/{repo}/pulls", self._list_pulls),
            ("GET", rf"/repos/{repo}/pulls/(\d+)", self._get_pull),
            ("GET", rf"/repos/{repo}/commits/([0-9a-f]{{40}})/pulls", self._commit_pulls),
            ("GET", rf"/repos/{repo}/issues/(\d+)/comments", self._list_comments),
            ("POST", rf"/repos/{repo}/issues/(\d+)/comments", self._create_comment),
            ("PATCH", rf"/repos/{repo}/issues/comments/(\d+)", self._update_comment),
            ("GET", rf"/repos/{repo}/issues", self._list_issues),
            ("POST", rf"/repos/{repo}/issues", self._create_issue),
            ("PATCH", rf"/repos/{repo}/issues/(\d+)", self._update_issue),
            ("POST", rf"/repos/{repo}/labels", self._create_label),
        ]
        for verb, pattern, handler in routes:
            match = re.fullmatch(pattern, path)
            if match and verb == method:
                return handler(token, query, body, *match.groups())
        return 404, {"message": "Not Found"}, {}

    def _page(self, items: list[Any], query: dict[str, str], path: str) -> tuple[int, Any, dict[str, str]]:
        per_page = min(int(query.get("per_page", 30)), 100)
        page = int(query.get("page", 1))
        chunk = items[(page - 1) * per_page : page * per_page]
        headers = {}
        if page * per_page < len(items):
            rest = "&".join(f"{k}={v}" for k, v in {**query, "page": str(page + 1)}.items())
            headers["Link"] = f'<http://{API_HOST}{path}?{rest}>; rel="next"'
        return 200, chunk, headers

    def _pull_json(self, pull: dict[str, Any]) -> dict[str, Any]:
        head_repo = pull["head_repo"]
        return {
            "number": pull["number"],
            "state": pull["state"],
            "user": pull.get("user", {"login": "someone", "type": "User"}),
            "head": {
                "sha": pull["head_sha"],
                "ref": pull["head_ref"],
                "label": f"{head_repo.split('/')[0]}:{pull['head_ref']}",
                "repo": {"full_name": head_repo, "fork": head_repo != self.repository},
            },
            "base": {"ref": pull["base_ref"], "repo": {"full_name": self.repository}},
            "merged_at": pull["merged_at"],
            "merge_commit_sha": pull["merge_commit_sha"],
        }

    def _list_pulls(self, token: Token, query: dict[str, str], _body: Any) -> Any:
        if not token.may("pull-requests", "read"):
            return 403, FORBIDDEN, {}
        state = query.get("state", "open")
        pulls = [p for p in self.pulls.values() if state == "all" or p["state"] == state]
        if "head" in query:
            owner, _, ref = query["head"].partition(":")
            pulls = [p for p in pulls if p["head_repo"].split("/")[0] == owner and p["head_ref"] == ref]
        return self._page([self._pull_json(p) for p in pulls], query, f"/repos/{self.repository}/pulls")

    def _get_pull(self, token: Token, _query: dict[str, str], _body: Any, number: str) -> Any:
        if not token.may("pull-requests", "read"):
            return 403, FORBIDDEN, {}
        pull = self.pulls.get(int(number))
        return (200, self._pull_json(pull), {}) if pull else (404, {"message": "Not Found"}, {})

    def _commit_pulls(self, token: Token, query: dict[str, str], _body: Any, sha: str) -> Any:
        if not (token.may("contents", "read") and token.may("pull-requests", "read")):
            return 403, FORBIDDEN, {}
        pulls = [
            self._pull_json(p)
            for p in self.pulls.values()
            if p["merge_commit_sha"] == sha or (p["state"] == "open" and p["head_sha"] == sha)
        ]
        return self._page(pulls, query, f"/repos/{self.repository}/commits/{sha}/pulls")

    def _issue_scope(self, number: int) -> str:
        return "pull-requests" if self.issues.get(number, {}).get("pull") else "issues"

    def _may_comment(self, token: Token, number: int, level: str) -> bool:
        return token.may(self._issue_scope(number), level) or token.may("issues", level)

    def _comment_json(self, comment: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": comment["id"],
            "user": comment["user"],
            "body": comment["body"],
            "created_at": comment["created_at"],
            "updated_at": comment["updated_at"],
            "html_url": f"http://{GIT_HOST}/{self.repository}/issues/{comment['issue_number']}"
            f"#issuecomment-{comment['id']}",
        }

    def _list_comments(self, token: Token, query: dict[str, str], _body: Any, number: str) -> Any:
        if int(number) not in self.issues:
            return 404, {"message": "Not Found"}, {}
        if not self._may_comment(token, int(number), "read"):
            return 403, FORBIDDEN, {}
        items = [self._comment_json(c) for c in self.comments.values() if c["issue_number"] == int(number)]
        return self._page(items, query, f"/repos/{self.repository}/issues/{number}/comments")

    def _create_comment(self, token: Token, _query: dict[str, str], body: Any, number: str) -> Any:
        if int(number) not in self.issues:
            return 404, {"message": "Not Found"}, {}
        if not self._may_comment(token, int(number), "write"):
            return 403, FORBIDDEN, {}
        text = (body or {}).get("body")
        if not isinstance(text, str) or not text:
            return 422, {"message": "Validation Failed"}, {}
        if len(text) > 65536:  # GitHub counts characters
            return (
                422,
                {
                    "message": "Validation Failed",
                    "errors": ["body is too long (maximum is 65536 characters)"],
                },
                {},
            )
        return 201, self._comment_json(self.add_comment(int(number), text, token.actor)), {}

    def _update_comment(self, token: Token, _query: dict[str, str], body: Any, comment_id: str) -> Any:
        comment = self.comments.get(int(comment_id))
        if comment is None:
            return 404, {"message": "Not Found"}, {}
        if not self._may_comment(token, comment["issue_number"], "write"):
            return 403, FORBIDDEN, {}
        if comment["user"]["login"] != token.actor["login"]:
            return 403, {"message": "Must have admin rights to Repository."}, {}
        text = (body or {}).get("body")
        if not isinstance(text, str) or not text or len(text) > 65536:
            return 422, {"message": "Validation Failed"}, {}
        comment["body"] = text
        comment["updated_at"] = now()
        return 200, self._comment_json(comment), {}

    def _issue_json(self, issue: dict[str, Any]) -> dict[str, Any]:
        return {
            "number": issue["number"],
            "title": issue.get("title", ""),
            "body": issue.get("body", ""),
            "state": issue["state"],
            "labels": [{"name": name} for name in issue["labels"]],
            "user": issue.get("user", BOT),
            "html_url": f"http://{GIT_HOST}/{self.repository}/issues/{issue['number']}",
        }

    def _list_issues(self, token: Token, query: dict[str, str], _body: Any) -> Any:
        if not token.may("issues", "read"):
            return 403, FORBIDDEN, {}
        state = query.get("state", "open")
        wanted = [name for name in query.get("labels", "").split(",") if name]
        # GitHub's issues endpoint lists pull requests too (they carry a pull_request key).
        items = []
        for issue in self.issues.values():
            if state != "all" and issue["state"] != state:
                continue
            if any(name not in issue["labels"] for name in wanted):
                continue
            item = self._issue_json(issue)
            if issue.get("pull"):
                item["pull_request"] = {"url": "..."}
            items.append(item)
        return self._page(items, query, f"/repos/{self.repository}/issues")

    def _create_issue(self, token: Token, _query: dict[str, str], body: Any, *_: str) -> Any:
        if not token.may("issues", "write"):
            return 403, FORBIDDEN, {}
        body = body or {}
        if not body.get("title"):
            return 422, {"message": "Validation Failed"}, {}
        if len(body.get("body", "")) > 65536:
            return 422, {"message": "Validation Failed"}, {}
        number = next(self.numbers)
        labels = [str(name) for name in body.get("labels", [])]
        self.labels.update(labels)
        issue = {
            "number": number,
            "state": "open",
            "title": body["title"],
            "body": body.get("body", ""),
            "labels": labels,
            "user": dict(token.actor),
        }
        self.issues[number] = issue
        return 201, self._issue_json(issue), {}

    def _update_issue(self, token: Token, _query: dict[str, str], body: Any, number: str) -> Any:
        issue = self.issues.get(int(number))
        if issue is None or issue.get("pull"):
            return 404, {"message": "Not Found"}, {}
        if not token.may("issues", "write"):
            return 403, FORBIDDEN, {}
        for key in ("title", "body", "state"):
            if key in (body or {}):
                issue[key] = body[key]
        return 200, self._issue_json(issue), {}

    def _create_label(self, token: Token, _query: dict[str, str], body: Any) -> Any:
        if not token.may("issues", "write"):
            return 403, FORBIDDEN, {}
        name = (body or {}).get("name")
        if name in self.labels:
            return 422, {"message": "Validation Failed", "errors": [{"code": "already_exists"}]}, {}
        self.labels.add(name)
        return 201, {"name": name}, {}

    # --- git over HTTP ---------------------------------------------------------------------------

    def _git(self, handler: BaseHTTPRequestHandler, url: str, token: Token | None, body: bytes) -> None:
        parts = urlsplit(url)
        match = re.fullmatch(r"/([^/]+/[^/]+?)(?:\.git)?(/.*)", parts.path)
        if not match or match.group(1) != self.repository:
            handler.send_error(404)
            return
        pushing = parts.query == "service=git-receive-pack" or match.group(2).endswith("git-receive-pack")
        if token is None:
            handler.send_response(401)
            handler.send_header("WWW-Authenticate", 'Basic realm="GitHub"')
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        if not token.may("contents", "write" if pushing else "read"):
            message = b"remote: Permission to repository denied to github-actions[bot].\n"
            handler.send_response(403)
            handler.send_header("Content-Length", str(len(message)))
            handler.end_headers()
            handler.wfile.write(message)
            return
        env = {
            **os.environ,
            "GIT_PROJECT_ROOT": str(self.root / "git"),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": f"/{self.repository}.git{match.group(2)}",
            "QUERY_STRING": parts.query,
            "REQUEST_METHOD": handler.command,
            "CONTENT_TYPE": handler.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_CONTENT_ENCODING": handler.headers.get("Content-Encoding", ""),
            "GIT_PROTOCOL": handler.headers.get("Git-Protocol", ""),
            "REMOTE_USER": token.actor["login"],
            "REMOTE_ADDR": "127.0.0.1",
            "FAKEGH_ACTOR": token.actor["login"],
        }
        receiving = handler.command == "POST" and match.group(2).endswith("git-receive-pack")
        before = git("for-each-ref", cwd=self.bare) if receiving else ""
        result = subprocess.run(
            ["git", "http-backend"], input=body, env=env, capture_output=True, check=False
        )
        if receiving:
            # A push with a job's token (GITHUB_TOKEN) triggers no workflow run on GitHub; the fake
            # records it here and never sends it to the runner.
            moved = set(git("for-each-ref", cwd=self.bare).splitlines()) - set(before.splitlines())
            with self.lock:
                self.token_pushes += [(token.actor["login"], line.split()[-1]) for line in sorted(moved)]
        head, _, payload = result.stdout.partition(b"\r\n\r\n")
        if not _:
            head, _, payload = result.stdout.partition(b"\n\n")
        status, headers = 200, []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name, value.strip()))
        handler.send_response(status)
        for name, value in headers:
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    # --- plumbing --------------------------------------------------------------------------------

    def _token(self, header: str | None) -> Token | None:
        if not header:
            return None
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "basic":
            value = base64.b64decode(value).decode().partition(":")[2]
        with self.lock:
            return self.tokens.get(value.strip())

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().strip().split(b";")[0], 16)
                        if size == 0:
                            self.rfile.readline()
                            break
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _serve(self) -> None:
                body = self._body()
                url = self.path
                host = (urlsplit(url).hostname if url.startswith("http") else None) or self.headers.get(
                    "Host", ""
                ).split(":")[0]
                path = urlsplit(url).path
                authorizations = self.headers.get_all("Authorization") or []
                if len(authorizations) > 1:
                    # github.com refuses a request carrying two Authorization headers (git's answer
                    # then reads `remote: Duplicate header: "Authorization"`), whichever host it is for.
                    with hub.lock:
                        hub.requests.append((self.command, path, 400))
                        hub.refused.append((self.command, url, "duplicate Authorization header"))
                    message = b'Duplicate header: "Authorization"\n'
                    self.send_response(400)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(message)))
                    self.end_headers()
                    self.wfile.write(message)
                    return
                token = hub._token(authorizations[0] if authorizations else None)
                if host == GIT_HOST:
                    hub._git(self, url, token, body)
                    return
                if host != API_HOST:
                    self.send_error(502, f"the fake GitHub does not serve {host}")
                    return
                with hub.lock:
                    for fault in hub.faults:
                        if fault.remaining and fault.method == self.command and fault.path.search(path):
                            fault.remaining -= 1
                            hub.requests.append((self.command, path, fault.status))
                            # As GitHub's own 5xx pages: HTML, not JSON.
                            page = b"<html><body><h1>Unicorn!</h1></body></html>"
                            self.send_response(fault.status)
                            self.send_header("Content-Type", "text/html")
                            self.send_header("Content-Length", str(len(page)))
                            self.end_headers()
                            self.wfile.write(page)
                            return
                    try:
                        document = json.loads(body) if body else None
                    except ValueError:
                        self._json(400, {"message": "Problems parsing JSON"}, {})
                        return
                    status, payload, headers = hub._rest(self.command, url, token, document)
                    hub.requests.append((self.command, path, status))
                self._json(status, payload, headers)

            def _json(self, status: int, payload: Any, headers: dict[str, str]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

        return Handler


def git(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout.strip()
