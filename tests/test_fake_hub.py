"""The fake Hub (tests/fake_hub.py) is faithful to the real ``huggingface_hub`` client: listings, downloads
into the cache, the errors the client raises, and the injected faults (truncated, corrupt, gone files)."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from .fake_hub import FakeHub, fake_hub  # noqa: F401

hf = pytest.importorskip("huggingface_hub")
errors = pytest.importorskip("huggingface_hub.errors")
file_download = pytest.importorskip("huggingface_hub.file_download")

REPO = "yuhuan-wu/LRFormer-Models"
CKPT = "LRFormer-T/lrformer_t_ade20k.pth"
WEIGHTS = hashlib.sha256(b"weights").digest() * 4096  # 128 KiB
README = b"# LRFormer models\n"


@pytest.fixture
def hub(fake_hub):  # noqa: F811
    fake_hub.add(CKPT, WEIGHTS)
    fake_hub.add("README.md", README)
    return fake_hub


def git_blob_id(data: bytes) -> str:
    """What `git hash-object` prints for ``data``: the id the Hub lists (and sends as ETag) for a non-LFS file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def download(hub: FakeHub, cache: Path, filename: str = CKPT, **kwargs) -> Path:
    return Path(hf.hf_hub_download(REPO, filename, endpoint=hub.endpoint, cache_dir=cache, **kwargs))


def test_listing_matches_the_hub_format(hub):
    api = hf.HfApi(endpoint=hub.endpoint)
    assert api.list_repo_files(REPO) == ["LRFormer-T/lrformer_t_ade20k.pth", "README.md"]
    tree = {entry.path: entry for entry in api.list_repo_tree(REPO, recursive=True)}
    assert isinstance(tree["LRFormer-T"], hf.hf_api.RepoFolder)
    ckpt, readme = tree[CKPT], tree["README.md"]
    assert (ckpt.size, ckpt.lfs.size, ckpt.lfs.sha256) == (len(WEIGHTS),) * 2 + (hashlib.sha256(WEIGHTS).hexdigest(),)
    assert ckpt.lfs.sha256 == hub.sha256(CKPT) and readme.lfs is None and readme.blob_id == git_blob_id(README)
    assert [e.path for e in api.list_repo_tree(REPO)] == ["LRFormer-T", "README.md"]  # not recursive
    assert [e.path for e in api.list_repo_tree(REPO, "LRFormer-T", expand=True)] == [CKPT]
    assert api.model_info(REPO, files_metadata=True).sha == hub.commit
    assert ("GET", f"/api/models/{REPO}/tree/main") in hub.requests


def test_download_then_cached_copy_with_the_server_stopped(hub, tmp_path):
    path = download(hub, tmp_path / "cache")
    assert path.read_bytes() == WEIGHTS and (tmp_path / "cache") in path.parents
    assert hub.commit in path.parts  # snapshots/<X-Repo-Commit>/...
    assert [r for r in hub.requests if "resolve" in r[1]] == [("HEAD", f"/{REPO}/resolve/main/{CKPT}"),
                                                             ("GET", f"/{REPO}/resolve/main/{CKPT}")]  # fmt: skip
    served = len(hub.requests)
    hub.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", int(hub.endpoint.rsplit(":", 1)[1])), timeout=5)
    assert download(hub, tmp_path / "cache", local_files_only=True) == path
    assert len(hub.requests) == served


def test_missing_file_repo_and_revision_raise_what_the_hub_makes_the_client_raise(hub, tmp_path):
    hub.gone.add(CKPT)
    for filename in ("nope.pth", CKPT):
        # RemoteEntryNotFoundError: an EntryNotFoundError, as is LocalEntryNotFoundError (offline cache miss)
        with pytest.raises(errors.RemoteEntryNotFoundError):
            download(hub, tmp_path / "cache", filename)
    assert CKPT in hf.HfApi(endpoint=hub.endpoint).list_repo_files(REPO)  # gone: still listed
    with pytest.raises(errors.RepositoryNotFoundError):
        hf.hf_hub_download("someone/else", "README.md", endpoint=hub.endpoint, cache_dir=tmp_path / "cache")
    with pytest.raises(errors.RepositoryNotFoundError):
        hf.HfApi(endpoint=hub.endpoint).list_repo_files("someone/else")
    with pytest.raises(errors.RevisionNotFoundError):
        download(hub, tmp_path / "cache", "README.md", revision="v9")
    with pytest.raises(errors.RevisionNotFoundError):
        hf.HfApi(endpoint=hub.endpoint).list_repo_files(REPO, revision="v9")
    with pytest.raises(errors.RemoteEntryNotFoundError):
        list(hf.HfApi(endpoint=hub.endpoint).list_repo_tree(REPO, "no-such-folder"))


def test_truncated_download_raises_and_leaves_nothing_then_restarts(hub, tmp_path, monkeypatch):
    httpx2 = pytest.importorskip("httpx2")  # the HTTP client of huggingface_hub 2.x
    sleeps: list[float] = []
    monkeypatch.setattr(file_download, "time", SimpleNamespace(sleep=sleeps.append))  # its 1 s pause per retry
    hub.truncate[CKPT] = 1000
    # The client retries 5 times, then raises httpx2.RemoteProtocolError ("peer closed connection without
    # sending complete message body"): not an OSError, not an HfHubHTTPError. It reads the body in 10 MiB chunks,
    # so a retry resumes (Range) only after a whole chunk arrived; here each retry starts again from byte 0.
    with pytest.raises(httpx2.RemoteProtocolError):
        download(hub, tmp_path / "cache")
    assert sleeps == [1] * 5
    assert [r[0] for r in hub.requests if "resolve" in r[1]] == ["HEAD"] + ["GET"] * 6
    # No blob, no snapshot link, no partial file (its unique temp file is deleted); refs/main is written before.
    left = [p.name for p in (tmp_path / "cache").rglob("*") if p.is_file() and {"blobs", "snapshots"} & set(p.parts)]
    assert left == [] and (tmp_path / "cache" / "models--yuhuan-wu--LRFormer-Models" / "refs" / "main").is_file()
    # So a later call cannot resume: it downloads the whole file again.
    del hub.truncate[CKPT]
    assert download(hub, tmp_path / "cache").read_bytes() == WEIGHTS


def test_corrupt_download_is_not_detected_by_the_client(hub, tmp_path):
    hub.corrupt.add(CKPT)
    path = download(hub, tmp_path / "cache")  # huggingface_hub checks the size only, never the sha256
    assert path.stat().st_size == len(WEIGHTS)
    assert hashlib.sha256(path.read_bytes()).hexdigest() != hub.sha256(CKPT) == hashlib.sha256(WEIGHTS).hexdigest()


def test_resolve_headers_and_ranges(hub):
    url = f"{hub.endpoint}/{REPO}/resolve/main/{CKPT}"
    with httpx.Client() as client:
        head = client.head(url)
        assert head.headers["x-repo-commit"] == hub.commit and len(hub.commit) == 40
        assert head.headers["etag"] == head.headers["x-linked-etag"] == f'"{hub.sha256(CKPT)}"'
        assert int(head.headers["content-length"]) == int(head.headers["x-linked-size"]) == len(WEIGHTS)
        part = client.get(url, headers={"Range": "bytes=100-"})
        assert part.status_code == 206 and part.content == WEIGHTS[100:]
        assert part.headers["content-range"] == f"bytes 100-{len(WEIGHTS) - 1}/{len(WEIGHTS)}"
        assert client.get(url, headers={"Range": f"bytes={len(WEIGHTS)}-"}).status_code == 416
        readme = client.head(f"{hub.endpoint}/{REPO}/resolve/main/README.md")
        assert readme.headers["etag"] == f'"{git_blob_id(README)}"'
        assert "x-linked-etag" not in readme.headers and not any(h.startswith("x-xet") for h in readme.headers)
        hub.stop()  # closes the keep-alive connection too
        with pytest.raises(httpx.ConnectError):
            client.head(url)


def test_a_replaced_file_is_a_new_commit_and_is_downloaded_again(hub, tmp_path):
    first, commit = download(hub, tmp_path / "cache"), hub.commit
    hub.add(CKPT, WEIGHTS[::-1])
    assert hub.commit != commit
    assert download(hub, tmp_path / "cache").read_bytes() == WEIGHTS[::-1] and first.read_bytes() == WEIGHTS


def test_fixture_environment_reaches_a_subprocess(hub, tmp_path):
    code = f"import huggingface_hub as h; print(h.hf_hub_download({REPO!r}, 'README.md'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    path = Path(out.stdout.strip())
    assert path.read_bytes() == README and (tmp_path / "hf-cache") in path.parents
