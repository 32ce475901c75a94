"""A minimal Hugging Face Hub on 127.0.0.1 for tests (stdlib only, in memory).

It implements the endpoints the ``huggingface_hub`` client uses for ``create_repo``, ``push_to_hub`` /
``create_commit`` (regular uploads only: preupload answers ``uploadMode: "regular"`` for every file, so no LFS or
Xet transfer is negotiated), model card YAML validation, ``model_info``, ``list_repo_files`` (tree) and file
resolution / download. Point the client at it with ``HF_ENDPOINT`` set before ``huggingface_hub`` is imported (so
push / pull run in a fresh process). Unknown requests get 404 with a body naming them, which makes a missing
endpoint obvious in a failure.

Usage::

    with HubServer() as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": "test", ...}
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse


class _Repo:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.sha = hashlib.sha1(b"init").hexdigest()

    def commit(self, files: dict[str, bytes], deleted: list[str], summary: str) -> str:
        self.files.update(files)
        for p in deleted:
            self.files.pop(p, None)
        self.sha = hashlib.sha1((self.sha + summary + json.dumps(sorted(self.files))).encode()).hexdigest()
        return self.sha


class _Handler(BaseHTTPRequestHandler):
    server: HubServer._Server  # type: ignore[name-defined]
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # keep test output quiet
        self.server.log.append(fmt % args)

    # ------------------------------------------------------------------------------------------------ helpers
    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None, head: bool = False):
        self.send_response(code)
        headers = {"Content-Type": "application/json", **(headers or {})}
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", headers.get("Content-Length", str(len(body))))
        self.end_headers()
        if not head and body:
            self.wfile.write(body)

    def _json(self, code: int, obj, headers=None):
        self._send(code, json.dumps(obj).encode(), headers)

    def _not_found(self, what: str, code: str = "RepoNotFound"):
        self._json(404, {"error": f"{what} not found"}, {"X-Error-Code": code, "X-Error-Message": f"{what} not found"})

    def _repo(self, repo_id: str) -> _Repo | None:
        return self.server.repos.get(repo_id)

    # ------------------------------------------------------------------------------------------------- routes
    def do_POST(self):
        path = unquote(urlparse(self.path).path)
        body = self._body()
        if path == "/api/repos/create":
            data = json.loads(body or b"{}")
            repo_id = f"{data['organization']}/{data['name']}" if data.get("organization") else data["name"]
            if "/" not in repo_id:
                repo_id = f"user/{repo_id}"
            url = f"{self.server.url}/{repo_id}"
            if repo_id in self.server.repos:
                return self._json(409, {"error": "You already created this model repo", "url": url})
            self.server.repos[repo_id] = _Repo()
            return self._json(200, {"url": url, "name": repo_id})
        if path == "/api/validate-yaml":
            return self._json(200, {"errors": [], "warnings": []})
        m = re.fullmatch(r"/api/models/(.+?)/preupload/([^/]+)", path)
        if m:
            if self._repo(m.group(1)) is None:
                return self._not_found(f"Repository {m.group(1)}")
            files = json.loads(body)["files"]
            return self._json(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                              for f in files]})
        m = re.fullmatch(r"/api/models/(.+?)/commit/([^/]+)", path)
        if m:
            repo = self._repo(m.group(1))
            if repo is None:
                return self._not_found(f"Repository {m.group(1)}")
            files, deleted, summary = {}, [], ""
            for line in body.decode().splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                key, value = item["key"], item["value"]
                if key == "header":
                    summary = value.get("summary", "")
                elif key == "file":
                    if value.get("encoding") != "base64":
                        return self._json(400, {"error": f"unsupported encoding {value.get('encoding')}"})
                    files[value["path"]] = base64.b64decode(value["content"])
                elif key in ("deletedFile", "deletedFolder"):
                    deleted.append(value["path"])
                else:
                    return self._json(400, {"error": f"unsupported commit operation {key} (LFS is not served)"})
            sha = repo.commit(files, deleted, summary)
            return self._json(200, {"commitUrl": f"{self.server.url}/{m.group(1)}/commit/{sha}", "commitOid": sha,
                                    "pullRequestUrl": None})
        return self._not_found(f"POST {path}", "EntryNotFound")

    def _resolve(self, head: bool):
        path = unquote(urlparse(self.path).path)
        m = re.fullmatch(r"/(?:models/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if m is None:
            return False
        repo = self._repo(m.group(1))
        if repo is None:
            self._not_found(f"Repository {m.group(1)}")
            return True
        data = repo.files.get(m.group(3))
        if data is None:
            self._send(404, b"", {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found",
                                  "X-Repo-Commit": repo.sha}, head=head)
            return True
        etag = '"' + hashlib.sha1(data).hexdigest() + '"'
        self._send(200, data, {"Content-Type": "application/octet-stream", "X-Repo-Commit": repo.sha, "ETag": etag,
                               "Content-Length": str(len(data))}, head=head)
        return True

    def do_HEAD(self):
        if not self._resolve(head=True):
            self._send(404, b"", {"X-Error-Code": "EntryNotFound"}, head=True)

    def do_GET(self):
        if self._resolve(head=False):
            return
        path = unquote(urlparse(self.path).path)
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?", path)
        if m:
            repo = self._repo(m.group(1))
            if repo is None:
                return self._not_found(f"Repository {m.group(1)}")
            prefix = (m.group(3) or "").strip("/")
            entries = [{"type": "file", "path": p, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                       for p, b in sorted(repo.files.items()) if not prefix or p.startswith(prefix + "/")]
            return self._json(200, entries)
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+?)(?:/revision/([^/]+))?", path)
        if m:
            repo = self._repo(m.group(1))
            if repo is None:
                return self._not_found(f"Repository {m.group(1)}")
            siblings = [{"rfilename": p, "size": len(b)} for p, b in sorted(repo.files.items())]
            return self._json(200, {"id": m.group(1), "modelId": m.group(1), "sha": repo.sha, "siblings": siblings,
                                    "private": False, "tags": [], "downloads": 0, "likes": 0})
        return self._not_found(f"GET {path}", "EntryNotFound")


class HubServer:
    """Run the fake Hub in a background thread; ``url`` is its ``HF_ENDPOINT``."""

    class _Server(ThreadingHTTPServer):
        daemon_threads = True
        repos: dict[str, _Repo]
        log: list[str]
        url: str

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.httpd = self._Server((host, port), _Handler)
        self.httpd.repos = {}
        self.httpd.log = []
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        self.httpd.url = self.url
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def repos(self) -> dict[str, _Repo]:
        return self.httpd.repos

    @property
    def log(self) -> list[str]:
        return self.httpd.log

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


if __name__ == "__main__":
    import time

    with HubServer(port=8765) as hub:
        print(f"fake Hub at {hub.url} (Ctrl-C to stop)")
        while True:
            time.sleep(3600)
