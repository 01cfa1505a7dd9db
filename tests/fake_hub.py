"""A fake Hugging Face Hub on 127.0.0.1 for the real ``huggingface_hub`` client (standard library only).

It serves one model repository at one revision (its branch name, or the commit that branch points at) with
the endpoints ``huggingface_hub`` 2.4.0 calls to list and download files:

* ``GET /api/models/{repo}/tree/{revision}[/{folder}]`` (query ``recursive``, ``expand``):
  ``HfApi.list_repo_tree`` and ``list_repo_files``;
* ``GET /api/models/{repo}[/revision/{revision}]`` (query ``blobs``): ``model_info`` / ``repo_info``;
* ``HEAD`` and ``GET /{repo}/resolve/{revision}/{path}`` (``Range: bytes=a-[b]``): ``hf_hub_download``.

Errors are 404s with the ``X-Error-Code`` header that ``hf_raise_for_status`` turns into
``RepositoryNotFoundError`` (``RepoNotFound``), ``RevisionNotFoundError`` (``RevisionNotFound``) and
``RemoteEntryNotFoundError`` (``EntryNotFound``). No Xet headers are sent, so the client downloads over plain HTTP.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

LFS_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt")
"""Files with these suffixes are stored in LFS unless :meth:`FakeHub.add` says otherwise."""
DATE = "2024-01-01T00:00:00.000Z"
TRUE = ("true", "True", "1")  # how a query flag is on
_FLIP = bytes(255 - i for i in range(256))  # the byte map of a corrupted download: same length, every byte differs


class _File:
    """One file of the repository and the ids the Hub announces for it."""

    def __init__(self, data: bytes, lfs: bool):
        self.data, self.lfs = data, lfs
        self.sha256 = hashlib.sha256(data).hexdigest()
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {len(data)}\n".encode()
        stored = pointer if lfs else data  # git stores the pointer of an LFS file, so its blob id is the pointer's
        self.oid = hashlib.sha1(b"blob %d\0" % len(stored) + stored).hexdigest()
        self.pointer_size = len(pointer)
        self.etag = self.sha256 if lfs else self.oid  # what the Hub sends as ETag / X-Linked-Etag

    def entry(self, path: str) -> dict:
        """The file as a tree-listing entry."""
        entry = {"type": "file", "oid": self.oid, "size": len(self.data), "path": path}
        if self.lfs:
            entry["lfs"] = {"oid": self.sha256, "size": len(self.data), "pointerSize": self.pointer_size}
        return entry


class FakeHub:
    """A Hub with one repository on 127.0.0.1 (a thread), for the real huggingface_hub client."""

    def __init__(
        self, files: dict[str, bytes] | None = None, repo_id: str = "yuhuan-wu/LRFormer-Models", revision: str = "main"
    ):
        self.repo_id, self.revision = repo_id, revision
        self.endpoint = ""
        self.truncate: dict[str, int] = {}  # GET never sends the bytes at offsets >= n, then closes the connection
        self.corrupt: set[str] = set()  # GET sends other bytes (same length) than the announced sha256/etag
        self.gone: set[str] = set()  # listed in the tree, but resolve answers 404 EntryNotFound
        self.stall: set[str] = set()  # GET sends half the body, sets `stalled`, then holds on until stop()
        self.stalled = threading.Event()
        self._release = threading.Event()
        self.requests: list[tuple[str, str]] = []  # (method, URL-decoded path without query) of every request
        self._files: dict[str, _File] = {}
        self._lock = threading.Lock()
        self._server: _Server | None = None
        for path, data in (files or {}).items():
            self.add(path, data)

    def add(self, path: str, data: bytes, lfs: bool | None = None) -> None:
        """Add or replace a file (LFS by default for checkpoint suffixes); later requests see it."""
        path = path.strip("/")
        lfs = path.lower().endswith(LFS_SUFFIXES) if lfs is None else lfs
        with self._lock:
            self._files[path] = _File(bytes(data), lfs)

    def remove(self, path: str) -> None:
        """Delete a file from the repository (later listings and downloads no longer have it)."""
        with self._lock:
            del self._files[path.strip("/")]

    def sha256(self, path: str) -> str:
        """The sha256 the listing and HEAD announce for ``path`` (of the true content, even when corrupt)."""
        with self._lock:
            return self._files[path].sha256

    @property
    def commit(self) -> str:
        """The commit ``revision`` points at: a hash of the content, so that, as on the Hub, adding or replacing a
        file makes a new commit (the client's cache is keyed by commit and would otherwise keep the old file)."""
        return self._snapshot()[1]

    def _snapshot(self) -> tuple[dict[str, _File], str]:
        with self._lock:
            files = dict(self._files)
        listing = json.dumps(sorted((path, file.oid) for path, file in files.items()))
        return files, hashlib.sha1(listing.encode()).hexdigest()

    def start(self) -> FakeHub:
        """Serve on a free port of 127.0.0.1 from a daemon thread; sets :attr:`endpoint`."""
        handler = type("Handler", (_Handler,), {"hub": self})
        self._server = _Server(("127.0.0.1", 0), handler)
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self

    def stop(self) -> None:
        """Stop serving: the port refuses connections and open keep-alive connections are closed."""
        self._release.set()  # a stalled download ends (its connection closes unfinished)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.close_connections()
            self._server = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


class _Server(ThreadingHTTPServer):
    """Threaded, without waiting for keep-alive connections on close, and quiet when a client goes away."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address, handler):
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self.connections_lock:
            connections = list(self.connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], OSError):  # a client that disconnects is not an error of the server
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60
    hub: FakeHub

    def log_message(self, format, *args):  # quiet
        pass

    def do_HEAD(self):
        self._serve(body=False)

    def do_GET(self):
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        url = urlsplit(self.path)
        self.hub.requests.append((self.command, unquote(url.path)))
        self.body = body  # False for HEAD: headers only
        parts = [unquote(part) for part in url.path.strip("/").split("/")]  # a %2F stays inside its segment
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        if parts[:2] == ["api", "models"] and len(parts) >= 4:  # /api/models/{repo}[/revision|tree/{rev}[/...]]
            repo, rest = "/".join(parts[2:4]), parts[4:] or ["revision", self.hub.revision]
        elif len(parts) >= 5 and parts[2] == "resolve":  # /{repo}/resolve/{rev}/{path}
            repo, rest = "/".join(parts[:2]), parts[2:]
        else:
            return self._send(404, b"Not Found")
        routes = {"revision": self._info, "tree": self._tree, "resolve": self._resolve}
        if len(rest) < 2 or rest[0] not in routes or (rest[0] == "revision" and len(rest) > 2):
            return self._send(404, b"Not Found")
        if repo != self.hub.repo_id:
            return self._error("RepoNotFound", f"Repository {repo} not found")
        files, commit = self.hub._snapshot()
        if rest[1] not in (self.hub.revision, commit):
            return self._error("RevisionNotFound", f"Invalid rev id: {rest[1]}")
        routes[rest[0]](files, commit, "/".join(rest[2:]).strip("/"), query)

    def _info(self, files: dict[str, _File], commit: str, _path: str, query: dict) -> None:
        """``model_info``: the repository's commit and files (with sizes and ids when ``blobs``)."""
        siblings = [{"rfilename": path} for path in sorted(files)]
        if query.get("blobs") in TRUE:
            for sibling in siblings:
                file = files[sibling["rfilename"]]
                lfs = {"sha256": file.sha256, "size": len(file.data), "pointerSize": file.pointer_size}
                sibling.update(size=len(file.data), blobId=file.oid, lfs=lfs if file.lfs else None)
        info = {"id": self.hub.repo_id, "modelId": self.hub.repo_id, "sha": commit, "private": False}
        self._json({**info, "gated": False, "disabled": False, "lastModified": DATE, "siblings": siblings})

    def _tree(self, files: dict[str, _File], commit: str, folder: str, query: dict) -> None:
        """The entries of ``folder`` (all below it when ``recursive``): its folders, then its files."""
        folders = {path.rsplit("/", n)[0] for path in files for n in range(1, path.count("/") + 1)}
        if folder and folder not in folders:
            return self._error("EntryNotFound", f"{folder} does not exist on {self.hub.revision}")
        prefix, recursive = folder + "/" if folder else "", query.get("recursive") in TRUE

        def listed(path: str) -> bool:
            return path.startswith(prefix) and (recursive or "/" not in path[len(prefix) :])

        entries = [
            {"type": "directory", "oid": hashlib.sha1(f"{commit}:{p}".encode()).hexdigest(), "size": 0, "path": p}
            for p in sorted(folders)
            if listed(p)
        ]
        entries += [files[path].entry(path) for path in sorted(files) if listed(path)]
        if query.get("expand") in TRUE:
            for entry in entries:
                entry["lastCommit"] = {"id": commit, "title": "Upload checkpoints", "date": DATE}
        self._json(entries)

    def _resolve(self, files: dict[str, _File], commit: str, path: str, _query: dict) -> None:
        """A file's content (HEAD: its headers), whole or from ``Range: bytes=a-[b]``, with the fault injections."""
        file = files.get(path)
        if file is None or path in self.hub.gone:
            return self._error("EntryNotFound", f"{path} not found", {"X-Repo-Commit": commit})
        size, status, start, end = len(file.data), 200, 0, len(file.data) - 1
        headers = {"X-Repo-Commit": commit, "ETag": f'"{file.etag}"', "Accept-Ranges": "bytes"}
        headers["Content-Type"] = "application/octet-stream"
        if file.lfs:  # the Hub answers an LFS file with a redirect carrying these; the client prefers them
            headers.update({"X-Linked-Etag": f'"{file.etag}"', "X-Linked-Size": str(size)})
        if self.body and self.headers.get("Range"):
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers["Range"].strip())
            if match is None or int(match[1]) >= size:
                return self._send(416, b"", {**headers, "Content-Range": f"bytes */{size}"})
            start, end, status = int(match[1]), min(int(match[2] or size - 1), size - 1), 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        data = file.data.translate(_FLIP) if path in self.hub.corrupt else file.data
        cut = self.hub.truncate.get(path, size) - start
        if path in self.hub.stall and self.body:
            cut = (end + 1 - start) // 2
        self._send(status, data[start : end + 1], headers, cut=cut)
        if path in self.hub.stall and self.body:  # a download that hangs half-way (e.g. until a kill -9)
            self.wfile.flush()
            self.hub.stalled.set()
            self.hub._release.wait(120)

    def _json(self, value) -> None:
        self._send(200, json.dumps(value).encode(), {"Content-Type": "application/json"})

    def _error(self, code: str, message: str, headers: dict | None = None) -> None:
        """A 404 that ``hf_raise_for_status`` tells apart by its ``X-Error-Code``."""
        headers = {"X-Error-Code": code, "X-Error-Message": message, **(headers or {})}
        self._send(404, json.dumps({"error": message}).encode(), {"Content-Type": "application/json", **headers})

    def _send(self, status: int, payload: bytes, headers: dict | None = None, cut: int | None = None) -> None:
        """Answer with ``Content-Length: len(payload)``; with ``cut`` below it, send that many bytes and close."""
        self.send_response(status)
        for name, value in {"Content-Length": str(len(payload)), **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.body:
            if cut is not None and cut < len(payload):
                payload, self.close_connection = payload[: max(cut, 0)], True
            self.wfile.write(payload)


@pytest.fixture
def fake_hub(tmp_path, monkeypatch) -> FakeHub:
    """An empty, started :class:`FakeHub` and the environment that points subprocesses at it.

    ``huggingface_hub`` reads these variables when it is imported, so in-process callers must pass
    ``endpoint=fake_hub.endpoint`` and ``cache_dir=`` explicitly; the variables matter for subprocesses.
    """
    hub = FakeHub().start()
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("LRFORMER_CACHE", str(tmp_path / "lrformer-cache"))
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HF_HUB_DISABLE_TELEMETRY", "HF_HUB_DISABLE_XET", "HF_HUB_DISABLE_PROGRESS_BARS"):
        monkeypatch.setenv(name, "1")
    yield hub
    hub.stop()
