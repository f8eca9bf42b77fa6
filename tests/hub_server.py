"""A small in-memory Hugging Face Hub for tests, built on the standard library's HTTP server.

It answers what `huggingface_hub` needs for `create_repo`, `create_branch`, `upload_file`,
`upload_folder`, `model_info`/`repo_info`, `list_repo_tree`, `get_paths_info`, `file_exists`,
`hf_hub_download` and `snapshot_download`, hence `transformers` `push_to_hub`/`from_pretrained` and
timm `push_to_hf_hub`/`hf-hub:` loading:

- `POST /api/repos/create` (409 with a `url` field when the repo exists), `DELETE /api/repos/delete`;
- `POST /api/validate-yaml`, `GET /api/whoami-v2`;
- `GET /api/{models|datasets|spaces}/{ns}/{name}[/revision/{rev}]`, `.../tree/{rev}[/{path}]`, `.../refs`;
- `POST .../preupload/{rev}` (always upload mode "regular"), `.../commit/{rev}` (NDJSON lines `header`,
  `file` with base64 content, `deletedFile`, `deletedFolder`), `.../paths-info/{rev}`, `.../branch/{name}`;
- `GET`/`HEAD /[datasets/|spaces/]{ns}/{name}/resolve/{rev}/{path}` with `ETag`, `X-Repo-Commit` and
  `Content-Length` (HEAD without a body); a `Range: bytes=N-` request gets a 206.

Repo ids are `namespace/name` (a create without a namespace uses `user`). Every commit gets its own
sha; downloads resolve a branch name or any earlier commit sha. Errors carry the `X-Error-Code` header
(`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`) that `huggingface_hub` turns into its exceptions.

Fault injection, for testing retries: `hub.fail_next(times, status=500, route="commit")` answers the
next `times` matching requests with that status; `hub.drop_next(times, route="commit")` reads those
requests and closes the socket without answering. Routes: `create`, `preupload`, `commit`, `info`,
`tree`, `paths-info`, `resolve`, `branch`, `refs`, `whoami`, `validate-yaml`, or `any`.
`hub.requests` logs `(method, route, path, status)` for every request (status None when dropped).

Environment constraint: `huggingface_hub` (and so transformers and timm) reads `HF_ENDPOINT`,
`HF_HUB_OFFLINE`, `HF_HOME` and the token when it is first imported. A client must therefore either run
in a subprocess started with `env=hub.env` (see `LocalHub.run_python`), or have `os.environ.update(hub.env)`
applied before anything imports `huggingface_hub`, e.g. at the top of a conftest with a server started
there and kept for the whole test run.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
DEFAULT_NAMESPACE = "user"
DUMMY_TOKEN = "hf_local_test_token"


class HubError(Exception):
    """An HTTP error answer: status, message and optional `X-Error-Code`."""

    def __init__(self, status: int, message: str, code: str | None = None, **extra):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra


def git_blob_sha(data: bytes) -> str:
    """The git object id of a blob, which is what the Hub reports as a regular file's oid and ETag."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    """One repository: commits (sha -> {path: bytes}) and branches (name -> sha)."""

    repo_type: str
    repo_id: str
    private: bool = False
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    created: float = field(default_factory=time.time)

    def resolve(self, revision: str) -> tuple[str, dict[str, bytes]]:
        """(commit sha, files) of a branch name or a commit sha."""
        sha = self.branches.get(revision, revision)
        if sha not in self.commits:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return sha, self.commits[sha]


@dataclass
class Fault:
    route: str
    times: int
    status: int | None  # None: drop the connection


class LocalHub:
    """In-memory Hub served on 127.0.0.1 at a free port; use as a context manager or start()/stop()."""

    def __init__(self, home: str | os.PathLike | None = None):
        self.home = None if home is None else str(home)
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[tuple[str, str, str, int | None]] = []
        self.lock = threading.RLock()
        self._faults: list[Fault] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle and environment

    def start(self) -> LocalHub:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.hub = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="local-hub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the local hub is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def env(self) -> dict[str, str]:
        """`os.environ` plus what points `huggingface_hub` at this server, for a client subprocess."""
        own = ("HF_", "HUGGINGFACE_", "TRANSFORMERS_")
        env = {k: v for k, v in os.environ.items() if not k.startswith(own)}
        env.update(
            HF_ENDPOINT=self.url,
            HF_HUB_OFFLINE="0",
            HF_DATASETS_OFFLINE="0",
            HF_TOKEN=DUMMY_TOKEN,
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_PROGRESS_BARS="1",
            HF_HUB_DISABLE_XET="1",
            NO_PROXY="127.0.0.1,localhost",
            no_proxy="127.0.0.1,localhost",
        )
        if self.home is not None:
            env["HF_HOME"] = self.home
        return env

    def run_python(
        self, code: str, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess:
        """Run `python -c code *args` with `self.env`; with `check`, raise with its output on failure."""
        proc = subprocess.run(
            [sys.executable, "-c", code, *map(str, args)],
            env=self.env, capture_output=True, text=True, timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"client exited with {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
            )
        return proc

    # ------------------------------------------------------------------------- fault injection

    def fail_next(self, times: int = 1, status: int = 500, route: str = "commit") -> None:
        """Answer the next `times` requests of `route` with HTTP `status`."""
        with self.lock:
            self._faults.append(Fault(route, times, status))

    def drop_next(self, times: int = 1, route: str = "commit") -> None:
        """Read the next `times` requests of `route`, then close the connection without an answer."""
        with self.lock:
            self._faults.append(Fault(route, times, None))

    def clear_faults(self) -> None:
        with self.lock:
            self._faults.clear()

    def _take_fault(self, route: str) -> Fault | None:
        with self.lock:
            for fault in self._faults:
                if fault.route in (route, "any") and fault.times > 0:
                    fault.times -= 1
                    if fault.times == 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def count(self, route: str, method: str | None = None) -> int:
        """How many requests of `route` (and `method`) arrived so far."""
        with self.lock:
            return sum(1 for m, r, _, _ in self.requests if r == route and method in (None, m))

    # ---------------------------------------------------------------------------- repository state

    def get_repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, f"Repository not found: {repo_id}", "RepoNotFound")
        return repo

    def create_repo(self, repo_type: str, repo_id: str, private: bool = False) -> tuple[bool, Repo]:
        """Create `repo_id` with an empty first commit on `main`; return (created, repo)."""
        with self.lock:
            if (repo_type, repo_id) in self.repos:
                return False, self.repos[(repo_type, repo_id)]
            repo = Repo(repo_type, repo_id, private)
            sha = self._new_sha(repo, "initial commit")
            repo.commits[sha], repo.branches["main"] = {}, sha
            self.repos[(repo_type, repo_id)] = repo
            return True, repo

    def commit(self, repo: Repo, branch: str, lines: list[dict]) -> str:
        """Apply NDJSON commit operations on `branch`; return the new commit sha."""
        with self.lock:
            if branch not in repo.branches:
                raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            files = dict(repo.commits[repo.branches[branch]])
            summary = ""
            for line in lines:
                key, value = line.get("key"), line.get("value", {})
                if key == "header":
                    summary = value.get("summary", "")
                    parent = value.get("parentCommit")
                    if parent and parent != repo.branches[branch]:
                        raise HubError(412, f"parentCommit {parent} is not the head of {branch}")
                elif key == "file":
                    if value.get("encoding", "base64") != "base64":
                        raise HubError(400, f"unsupported encoding {value.get('encoding')!r}")
                    files[value["path"]] = base64.b64decode(value["content"])
                elif key == "deletedFile":
                    if files.pop(value["path"], None) is None:
                        message = f"A file with this name doesn't exist: {value['path']}"
                        raise HubError(404, message, "EntryNotFound")
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    files = {p: d for p, d in files.items() if not p.startswith(prefix)}
                else:
                    raise HubError(400, f"this test hub does not support commit operation {key!r}")
            sha = self._new_sha(repo, summary)
            repo.commits[sha], repo.branches[branch] = files, sha
            return sha

    def _new_sha(self, repo: Repo, summary: str) -> str:
        seed = f"{repo.repo_type}/{repo.repo_id}/{len(repo.commits)}/{summary}/{time.time_ns()}"
        return hashlib.sha1(seed.encode()).hexdigest()

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        """The files of `repo_id` at `revision` (for test assertions)."""
        with self.lock:
            return dict(self.get_repo(repo_type, repo_id).resolve(revision)[1])


class _Handler(BaseHTTPRequestHandler):
    server_version = "LocalHub/1.0"

    def log_message(self, format, *args):  # noqa: A002 - silence the default stderr log
        pass

    @property
    def hub(self) -> LocalHub:
        return self.server.hub

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_DELETE(self):
        self._dispatch("DELETE")

    # --------------------------------------------------------------------------------- plumbing

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        segments = [unquote(s) for s in split.path.split("/") if s]
        query = parse_qs(split.query)
        body = self._read_body()
        route, handler = self._route(method, segments)
        fault = self.hub._take_fault(route)
        status = None
        try:
            if fault is not None and fault.status is None:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if fault is not None:
                raise HubError(fault.status, f"injected failure ({fault.status})")
            if handler is None:
                raise HubError(404, f"no route for {method} {split.path}")
            status = handler(method, segments, query, body)
        except HubError as e:
            status = self._send_json({"error": e.message, **e.extra}, e.status, error_code=e.code)
        except Exception as e:  # a bug in this server: answer it rather than drop the connection
            status = self._send_json({"error": f"local hub error: {type(e).__name__}: {e}"}, 500)
        finally:
            with self.hub.lock:
                self.hub.requests.append((method, route, split.path, status))

    def _send_json(self, payload, status: int = 200, error_code: str | None = None) -> int:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if error_code:
            self.send_header("X-Error-Code", error_code)
        if status >= 400:
            self.send_header("X-Error-Message", str(payload.get("error", ""))[:200])
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        return status

    def _route(self, method: str, seg: list[str]):
        """(route name, handler) for a request; handler None when nothing matches."""
        if seg[:1] == ["api"]:
            rest = seg[1:]
            if rest == ["whoami-v2"]:
                return "whoami", self._whoami
            if rest == ["validate-yaml"]:
                return "validate-yaml", lambda *a: self._send_json({"errors": [], "warnings": []})
            if rest[:1] == ["repos"] and rest[1:] in (["create"], ["delete"]):
                return rest[1], self._create if rest[1] == "create" else self._delete
            if len(rest) >= 3 and rest[0] in REPO_TYPES:
                action = rest[3] if len(rest) > 3 else "info"
                routes = {
                    "info": self._info, "revision": self._info, "tree": self._tree, "refs": self._refs,
                    "paths-info": self._paths_info, "preupload": self._preupload, "commit": self._commit,
                    "branch": self._branch,
                }
                name = "info" if action == "revision" else action
                return name, routes.get(action)
            return "api", None
        if "resolve" in seg and method in ("GET", "HEAD"):
            return "resolve", self._resolve
        return "other", None

    @staticmethod
    def _repo_key(seg: list[str]) -> tuple[str, str, list[str]]:
        """(repo type, repo id, remaining segments) from /api/{type}s/{ns}/{name}/..."""
        return REPO_TYPES[seg[1]], f"{seg[2]}/{seg[3]}", seg[4:]

    def _repo_url(self, repo: Repo) -> str:
        return f"{self.hub.url}/{URL_PREFIXES[repo.repo_type]}{repo.repo_id}"

    # --------------------------------------------------------------------------------- handlers

    def _whoami(self, method, seg, query, body):
        return self._send_json({
            "type": "user", "id": "0", "name": DEFAULT_NAMESPACE, "fullname": "Test User", "orgs": [],
            "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}},
        })

    def _create(self, method, seg, query, body):
        payload = json.loads(body or b"{}")
        if not payload.get("name"):
            raise HubError(400, "missing repo name")
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or DEFAULT_NAMESPACE}/{payload['name']}"
        created, repo = self.hub.create_repo(repo_type, repo_id, payload.get("visibility") == "private")
        if not created:
            raise HubError(409, f"You already created this {repo_type} repo", url=self._repo_url(repo))
        return self._send_json({"url": self._repo_url(repo), "name": repo_id, "id": repo_id})

    def _delete(self, method, seg, query, body):
        payload = json.loads(body or b"{}")
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or DEFAULT_NAMESPACE}/{payload.get('name')}"
        with self.hub.lock:
            if self.hub.repos.pop((repo_type, repo_id), None) is None:
                raise HubError(404, f"Repository not found: {repo_id}", "RepoNotFound")
        return self._send_json({})

    def _info(self, method, seg, query, body):
        repo_type, repo_id, rest = self._repo_key(seg)
        with self.hub.lock:
            repo = self.hub.get_repo(repo_type, repo_id)
            sha, files = repo.resolve(rest[1] if len(rest) > 1 else "main")
            siblings = [
                {"rfilename": p, "size": len(d), "blobId": git_blob_sha(d)} for p, d in sorted(files.items())
            ]
        date = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(repo.created))
        return self._send_json({
            "id": repo_id, "_id": repo_id, "modelId": repo_id, "author": repo_id.split("/")[0], "sha": sha,
            "private": repo.private, "gated": False, "disabled": False, "downloads": 0, "likes": 0,
            "tags": [], "siblings": siblings, "lastModified": date, "createdAt": date,
        })

    def _tree(self, method, seg, query, body):
        repo_type, repo_id, rest = self._repo_key(seg)
        if len(rest) < 2:
            raise HubError(400, "missing revision")
        folder = "/".join(rest[2:]).strip("/")
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        with self.hub.lock:
            _, files = self.hub.get_repo(repo_type, repo_id).resolve(rest[1])
        prefix = folder + "/" if folder else ""
        entries, folders = [], set()
        for path, data in sorted(files.items()):
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix):].split("/")
            for depth in range(1, len(parts) if recursive else min(2, len(parts))):
                folders.add(prefix + "/".join(parts[:depth]))
            if recursive or len(parts) == 1:
                entries.append(_file_entry(path, data))
        if folder and not entries and not folders:
            raise HubError(404, f"{folder} does not exist", "EntryNotFound")
        return self._send_json([_dir_entry(p) for p in sorted(folders)] + entries)

    def _paths_info(self, method, seg, query, body):
        repo_type, repo_id, rest = self._repo_key(seg)
        form = parse_qs(body.decode()) if body else {}
        if body.startswith(b"{"):
            form = {k: v if isinstance(v, list) else [v] for k, v in json.loads(body).items()}
        with self.hub.lock:
            _, files = self.hub.get_repo(repo_type, repo_id).resolve(rest[1])
        out = []
        for path in form.get("paths", []):
            if path in files:
                out.append(_file_entry(path, files[path]))
            elif any(p.startswith(path.rstrip("/") + "/") for p in files):
                out.append(_dir_entry(path))
        return self._send_json(out)

    def _refs(self, method, seg, query, body):
        repo_type, repo_id, _ = self._repo_key(seg)
        with self.hub.lock:
            repo = self.hub.get_repo(repo_type, repo_id)
            branches = [
                {"name": b, "ref": f"refs/heads/{b}", "targetCommit": sha} for b, sha in repo.branches.items()
            ]
        return self._send_json({"branches": branches, "converts": [], "tags": [], "pullRequests": []})

    def _preupload(self, method, seg, query, body):
        repo_type, repo_id, rest = self._repo_key(seg)
        with self.hub.lock:
            _, files = self.hub.get_repo(repo_type, repo_id).resolve(rest[1])
        out = []
        for item in json.loads(body or b"{}").get("files", []):
            existing = files.get(item["path"])
            oid = git_blob_sha(existing) if existing is not None else None
            out.append({"path": item["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": oid})
        return self._send_json({"files": out, "commitOid": None})

    def _commit(self, method, seg, query, body):
        repo_type, repo_id, rest = self._repo_key(seg)
        repo = self.hub.get_repo(repo_type, repo_id)
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        sha = self.hub.commit(repo, rest[1], lines)
        commit_url = f"{self._repo_url(repo)}/commit/{sha}"
        return self._send_json(
            {"success": True, "commitOid": sha, "commitUrl": commit_url, "pullRequestUrl": None}
        )

    def _branch(self, method, seg, query, body):
        repo_type, repo_id, rest = self._repo_key(seg)
        branch = "/".join(rest[1:])
        payload = json.loads(body or b"{}") if body.startswith(b"{") else {}
        with self.hub.lock:
            repo = self.hub.get_repo(repo_type, repo_id)
            if method == "DELETE":
                repo.branches.pop(branch, None)
                return self._send_json({})
            if branch in repo.branches:
                raise HubError(409, f"Reference already exists: refs/heads/{branch}")
            repo.branches[branch] = repo.resolve(payload.get("startingPoint") or "main")[0]
        return self._send_json({})

    def _resolve(self, method, seg, query, body):
        if seg[0] in ("datasets", "spaces"):
            repo_type, seg = REPO_TYPES[seg[0]], seg[1:]
        else:
            repo_type = "model"
        if len(seg) < 5 or seg[2] != "resolve":
            raise HubError(404, f"no route for {self.path}")
        repo_id, revision, path = f"{seg[0]}/{seg[1]}", seg[3], "/".join(seg[4:])
        with self.hub.lock:
            sha, files = self.hub.get_repo(repo_type, repo_id).resolve(revision)
        if path not in files:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        data = files[path]
        start = 0
        range_header = self.headers.get("Range", "")
        if range_header.startswith("bytes=") and range_header[6:].split("-")[0].isdigit():
            start = min(int(range_header[6:].split("-")[0]), len(data))
        status = 206 if start else 200
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data) - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{git_blob_sha(data)}"')
        self.send_header("X-Repo-Commit", sha)
        self.send_header("Last-Modified", formatdate(usegmt=True))
        self.end_headers()
        if method == "GET":
            self.wfile.write(data[start:])
        return status


def _file_entry(path: str, data: bytes) -> dict:
    return {"type": "file", "path": path, "size": len(data), "oid": git_blob_sha(data)}


def _dir_entry(path: str) -> dict:
    return {"type": "directory", "path": path, "oid": hashlib.sha1(path.encode()).hexdigest()}
