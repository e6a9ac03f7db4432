"""A small local stand-in for the Hugging Face Hub, for push tests without the internet.

It speaks the endpoints that ``huggingface_hub`` 2.4 calls for ``create_repo`` + ``upload_folder``
(read from the installed client, ``hf_api.py``, ``_commit_api.py`` and ``_upload_pipeline.py``):

- ``POST /api/repos/create`` -> ``{"url": ...}`` (409 when the repo exists, which ``exist_ok=True``
  accepts);
- ``POST /api/validate-yaml`` (``upload_folder`` sends a README.md's text before hashing) -> 400
  with ``errors`` when the front matter is not a YAML mapping, a ``model-index`` does not parse, or
  a Space card has no ``sdk``;
- ``POST /api/{type}s/{org}/{name}/preupload/{revision}`` -> every file in ``"regular"`` upload
  mode, so the client sends the content inline (base64) in the commit instead of through LFS / Xet
  storage, which this server does not implement;
- ``POST /api/{type}s/{org}/{name}/commit/{revision}`` (ndjson: a ``header`` line, then ``file`` /
  ``deletedFile`` / ``deletedFolder`` lines) -> ``{"commitOid", "commitUrl"}``;
- ``GET /api/{type}s/{org}/{name}[/revision/{revision}]`` -> a minimal ``repo_info`` (sha,
  siblings), used by the client when nothing changed.

The server binds the loopback interface only, runs in a daemon thread and stops itself after
``max_requests`` requests or ``max_seconds`` seconds, whichever comes first. Received repositories
are kept in memory; :meth:`FakeHub.write_cache` lays one out as a Hugging Face cache
(``$HF_HOME/hub/models--org--name/{refs/main, snapshots/<sha>/...}``) so that it can be loaded
with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

_REPO_API = re.compile(
    r"^/api/(?P<type>models|datasets|spaces)/(?P<org>[^/]+)/(?P<name>[^/]+)"
    r"(?:/(?P<action>preupload|commit|revision)/(?P<revision>.+))?$"
)
_TYPE_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_CACHE_PREFIX = {"model": "models", "dataset": "datasets", "space": "spaces"}


@dataclass
class FakeRepo:
    """One repository received by the fake Hub."""

    repo_id: str
    repo_type: str
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[str] = field(default_factory=list)
    commit_messages: list[str] = field(default_factory=list)
    space_sdk: str | None = None

    @property
    def sha(self) -> str:
        """The head commit (40 hex digits; a fixed one before the first commit)."""
        return self.commits[-1] if self.commits else "0" * 40


class FakeHub:
    """Threaded fake Hub on ``127.0.0.1:<free port>``; use as a context manager.

    Args:
        max_requests: stop serving after this many requests.
        max_seconds: stop serving after this many seconds.
    """

    def __init__(self, max_requests: int = 200, max_seconds: float = 300.0) -> None:
        self.repos: dict[tuple[str, str], FakeRepo] = {}
        self.requests: list[tuple[str, str]] = []
        self.errors: list[str] = []
        self.validated_cards: list[tuple[str, str]] = []
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._serve, name="fake-hub", daemon=True)
        self._started = 0.0

    @property
    def endpoint(self) -> str:
        """The URL to put in ``HF_ENDPOINT``."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeHub:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def _serve(self) -> None:
        self._server.timeout = 0.5
        self._server.serve_forever(poll_interval=0.2)

    def _over_budget(self) -> bool:
        return len(self.requests) >= self.max_requests or time.monotonic() - self._started > self.max_seconds

    def repo(self, repo_id: str, repo_type: str = "model") -> FakeRepo:
        """The repository ``repo_id`` of ``repo_type`` (KeyError when nothing created it)."""
        return self.repos[(repo_type, repo_id)]

    def write_cache(self, hf_home: str | Path, repo_id: str, repo_type: str = "model") -> Path:
        """Lay out a received repository as a Hugging Face cache under ``hf_home/hub``.

        Returns:
            The snapshot folder ``hf_home/hub/<type>s--org--name/snapshots/<sha>``.
        """
        repo = self.repo(repo_id, repo_type)
        root = Path(hf_home) / "hub" / f"{_CACHE_PREFIX[repo_type]}--{repo_id.replace('/', '--')}"
        snapshot = root / "snapshots" / repo.sha
        for path, content in repo.files.items():
            target = snapshot / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        (root / "refs").mkdir(parents=True, exist_ok=True)
        (root / "refs" / "main").write_text(repo.sha)
        return snapshot

    # ------------------------------------------------------------------ request handling

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
                pass

            def do_GET(self) -> None:  # noqa: N802 - stdlib name
                hub._dispatch(self, "GET")

            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                hub._dispatch(self, "POST")

            def do_HEAD(self) -> None:  # noqa: N802 - stdlib name
                hub._dispatch(self, "HEAD")

        return Handler

    def _reply(self, handler: BaseHTTPRequestHandler, status: int, payload: object) -> None:
        body = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        if status >= 400 and isinstance(payload, dict) and "error" in payload:
            handler.send_header("X-Error-Message", str(payload["error"])[:200])
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(body)

    def _dispatch(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        path = urlsplit(handler.path).path
        with self._lock:
            self.requests.append((method, path))
            if self._over_budget():
                self._reply(handler, 503, {"error": "fake hub: request or time budget exhausted"})
                return
            try:
                status, payload = self._route(method, path, body)
            except Exception as error:  # a bug in a test server must show up as a readable failure
                self.errors.append(f"{method} {path}: {error!r}")
                status, payload = 500, {"error": f"fake hub: {error!r}"}
        self._reply(handler, status, payload)

    def _route(self, method: str, path: str, body: bytes) -> tuple[int, object]:
        if method == "POST" and path == "/api/repos/create":
            return self._create_repo(json.loads(body or b"{}"))
        if method == "POST" and path == "/api/validate-yaml":
            return self._validate_yaml(json.loads(body or b"{}"))
        match = _REPO_API.match(path)
        if match is None:
            self.errors.append(f"unsupported endpoint: {method} {path}")
            return 404, {"error": f"fake hub: unsupported endpoint {method} {path}"}
        repo_type = match["type"][:-1]
        repo_id = f"{unquote(match['org'])}/{unquote(match['name'])}"
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            return 404, {"error": f"Repository Not Found: {repo_id}"}
        action = match["action"]
        if method == "POST" and action == "preupload":
            return self._preupload(repo, json.loads(body))
        if method == "POST" and action == "commit":
            return self._commit(repo, body)
        if method in ("GET", "HEAD") and action in (None, "revision"):
            return 200, {
                "id": repo_id,
                "sha": repo.sha,
                "private": False,
                "siblings": [{"rfilename": name} for name in sorted(repo.files)],
            }
        self.errors.append(f"unsupported endpoint: {method} {path}")
        return 404, {"error": f"fake hub: unsupported endpoint {method} {path}"}

    def _create_repo(self, payload: dict) -> tuple[int, object]:
        repo_type = payload.get("type") or "model"
        if repo_type not in _TYPE_PREFIX:
            return 400, {"error": f"invalid repo type {repo_type!r}"}
        if repo_type == "space" and payload.get("sdk") not in ("gradio", "streamlit", "docker", "static"):
            return 400, {"error": "a Space needs an sdk"}
        name = payload.get("name")
        organization = payload.get("organization") or "user"
        if not name:
            return 400, {"error": "missing repo name"}
        repo_id = f"{organization}/{name}"
        url = f"{self.endpoint}/{_TYPE_PREFIX[repo_type]}{repo_id}"
        if (repo_type, repo_id) in self.repos:
            return 409, {"error": "You already created this repo", "url": url}
        repo = FakeRepo(repo_id=repo_id, repo_type=repo_type, space_sdk=payload.get("sdk"))
        repo.files[".gitattributes"] = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
        self.repos[(repo_type, repo_id)] = repo
        return 200, {"url": url, "name": repo_id}

    def _validate_yaml(self, payload: dict) -> tuple[int, object]:
        import yaml
        from huggingface_hub.repocard_data import model_index_to_eval_results

        content, repo_type = payload.get("content", ""), payload.get("repoType", "model")
        self.validated_cards.append((repo_type, content))
        match = re.match(r"^---\s*\n(.*?)\n---\s*\n", content, flags=re.DOTALL)
        errors: list[str] = []
        metadata: object = {}
        if match is not None:
            try:
                metadata = yaml.safe_load(match.group(1)) or {}
            except yaml.YAMLError as error:
                errors.append(f"YAML: {error}")
        if not errors and not isinstance(metadata, dict):
            errors.append("metadata must be a YAML mapping")
        elif not errors:
            if "model-index" in metadata:
                try:
                    model_index_to_eval_results(metadata["model-index"])
                except Exception as error:
                    errors.append(f"model-index: {error!r}")
            if repo_type == "space" and "sdk" not in metadata:
                errors.append("a Space card needs an sdk")
        if errors:
            return 400, {"errors": [{"message": message} for message in errors], "warnings": []}
        return 200, {"errors": [], "warnings": []}

    @staticmethod
    def _preupload(repo: FakeRepo, payload: dict) -> tuple[int, object]:
        files = payload.get("files")
        if not isinstance(files, list):
            return 400, {"error": "preupload: expected a 'files' list"}
        return 200, {
            "files": [
                {"path": item["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                for item in files
            ],
            "commitOid": repo.sha,
        }

    def _commit(self, repo: FakeRepo, body: bytes) -> tuple[int, object]:
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            return 400, {"error": "commit: the first ndjson line must be the header"}
        staged = dict(repo.files)
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value", {})
            if key == "file":
                if value.get("encoding") != "base64":
                    return 400, {"error": f"commit: unsupported encoding {value.get('encoding')!r}"}
                staged[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                staged.pop(value["path"], None)
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                staged = {name: data for name, data in staged.items() if not name.startswith(prefix)}
            else:
                return 400, {"error": f"commit: unsupported operation {key!r} (this fake hub has no LFS)"}
        digest = hashlib.sha1()
        digest.update(repo.sha.encode())
        for name in sorted(staged):
            digest.update(name.encode() + b"\0" + hashlib.sha256(staged[name]).digest())
        sha = digest.hexdigest()
        repo.files = staged
        repo.commits.append(sha)
        repo.commit_messages.append(lines[0]["value"].get("summary", ""))
        url = f"{self.endpoint}/{_TYPE_PREFIX[repo.repo_type]}{repo.repo_id}/commit/{sha}"
        return 200, {"commitOid": sha, "commitUrl": url, "pullRequestUrl": None}


__all__ = ["FakeHub", "FakeRepo"]
