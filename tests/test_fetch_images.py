"""The image fetcher, against a local HTTP server: retries, resume, no garbage left, items.parquet updated."""

from __future__ import annotations

import io
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from collab_iu.dataset import DatasetError
from collab_iu.fetch_images import (
    USER_AGENT,
    fetch_dataset_images,
    fetch_images,
    format_fetch_report,
)
from collab_iu.image_io import decode_problem

FAST = {"retries": 3, "backoff": 0.01, "timeout": 2.0, "workers": 4}


def jpeg_bytes(value: int = 128, size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), (value, 255 - value, 0)).save(buf, format="JPEG")
    return buf.getvalue()


class Server:
    """A local image server; `requests` counts requests by path.

    `fixed` makes /notfound serve an image; `gone` makes every path a 404.
    """

    def __init__(self):
        self.requests: Counter[str] = Counter()
        self.agents: set[str] = set()
        self.fixed = False
        self.gone = False
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base + path

    def count(self, path: str) -> int:
        """Requests so far for `path`; its first request is number 1."""
        with self.lock:
            self.requests[path] += 1
            return self.requests[path]

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                n = server.count(self.path)
                server.agents.add(self.headers.get("User-Agent", ""))
                try:
                    server.respond(self, self.path, n)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

        return Handler

    def respond(self, h: BaseHTTPRequestHandler, path: str, n: int) -> None:
        if self.gone:
            return send(h, 404, b"gone")
        if path.startswith("/img/"):
            return send(h, 200, jpeg_bytes(len(path) * 7 % 256))
        if path == "/notfound":
            return send(h, 200, jpeg_bytes(1)) if self.fixed else send(h, 404, b"no")
        if path == "/flaky":
            return send(h, 500, b"oops") if n == 1 else send(h, 200, jpeg_bytes(2))
        if path == "/down":
            return send(h, 503, b"unavailable")
        if path == "/garbage":
            return send(h, 200, b"definitely not an image " * 20)
        if path == "/ratelimited":
            return send(h, 429, b"slow down", {"Retry-After": "0"}) if n == 1 else send(h, 200, jpeg_bytes(3))
        if path == "/slow":
            if n == 1:
                time.sleep(0.6)
            return send(h, 200, jpeg_bytes(4))
        if path == "/big":
            return send(h, 200, jpeg_bytes(5, size=64))
        if path == "/big-unsized":  # no Content-Length: the body ends when the connection closes
            h.send_response(200)
            h.end_headers()
            h.wfile.write(jpeg_bytes(6, size=64))
            return None
        if path == "/to-ftp":
            return send(h, 302, b"", {"Location": "ftp://127.0.0.1/x.jpg"})
        if path == "/to-img":
            return send(h, 302, b"", {"Location": "/img/redirected"})
        return send(h, 404, b"unknown path")

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def send(h: BaseHTTPRequestHandler, code: int, body: bytes, headers: dict | None = None) -> None:
    h.send_response(code)
    for key, value in (headers or {}).items():
        h.send_header(key, value)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


@pytest.fixture
def server(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    with Server() as s:
        yield s


def url_table(server: Server, rows: list[tuple[str, str]]) -> pd.DataFrame:
    """item_id, url rows; a url starting with '/' is on the local server."""
    return pd.DataFrame(
        {"item_id": [i for i, _ in rows], "url": [server.url(u) if u.startswith("/") else u for _, u in rows]}
    )


MIXED = [
    ("good1", "/img/good1"),
    ("good2", "/img/good2"),
    ("notfound", "/notfound"),
    ("flaky", "/flaky"),
    ("down", "/down"),
    ("garbage", "/garbage"),
    ("ftp", "ftp://127.0.0.1/x.jpg"),
    ("../evil", "/img/evil"),
]
MIXED_OK = {"good1", "good2", "flaky"}


def files_in(folder: Path) -> set[str]:
    """Every entry in `folder`, hidden (temporary) ones included."""
    return {p.name for p in folder.iterdir()}


def failures_by_id(report: dict) -> dict[str, dict]:
    return {f["item_id"]: f for f in report["failures"]}


def test_fetch_images_counts_files_and_failures(server, tmp_path):
    dest = tmp_path / "images"
    report = fetch_images(url_table(server, MIXED), dest, **FAST)

    assert {k: report[k] for k in ("requested", "downloaded", "skipped", "failed", "retries")} == {
        "requested": 8,
        "downloaded": 3,
        "skipped": 0,
        "failed": 5,
        "retries": 3,  # flaky: 1, down: 2
    }
    assert report["seconds"] >= 0
    assert files_in(dest) == {f"{i}.jpg" for i in MIXED_OK}  # no garbage, no temporary files
    assert all(decode_problem(dest / f"{i}.jpg") is None for i in MIXED_OK)
    assert not (tmp_path / "evil.jpg").exists()

    failures = failures_by_id(report)
    assert set(failures) == {"notfound", "down", "garbage", "ftp", "../evil"}
    assert failures["notfound"]["error"].startswith("HTTP 404") and failures["notfound"]["attempts"] == 1
    assert failures["down"]["error"].startswith("HTTP 503") and failures["down"]["attempts"] == 3
    assert failures["garbage"]["error"].startswith("undecodable") and failures["garbage"]["attempts"] == 1
    assert failures["ftp"]["error"].startswith("unsupported scheme") and failures["ftp"]["attempts"] == 0
    assert failures["../evil"]["error"] == "unsafe item id" and failures["../evil"]["attempts"] == 0
    assert failures["down"]["url"] == server.url("/down")

    assert server.requests == Counter(
        {"/img/good1": 1, "/img/good2": 1, "/notfound": 1, "/flaky": 2, "/down": 3, "/garbage": 1}
    )
    assert server.agents == {USER_AGENT}


@pytest.mark.parametrize("item_id", ["../up", "a/b", "a\\b", ".hidden", "x..y", ""])
def test_unsafe_item_ids_are_never_requested(server, tmp_path, item_id):
    report = fetch_images(url_table(server, [(item_id, "/img/x")]), tmp_path / "images", **FAST)
    assert report["failed"] == 1 and report["failures"][0]["error"] == "unsafe item id"
    assert not server.requests
    assert files_in(tmp_path / "images") == set()


def test_timeout_and_429_are_retried(server, tmp_path):
    rows = [("slow", "/slow"), ("limited", "/ratelimited")]
    report = fetch_images(url_table(server, rows), tmp_path, retries=2, backoff=0.01, timeout=0.2)
    assert (report["downloaded"], report["failed"], report["retries"]) == (2, 0, 2)
    assert server.requests == Counter({"/slow": 2, "/ratelimited": 2})


def test_responses_over_max_bytes_are_refused(server, tmp_path):
    rows = [("sized", "/big"), ("unsized", "/big-unsized"), ("small", "/img/small")]
    limit = len(jpeg_bytes(5, size=64)) - 1
    assert len(jpeg_bytes(size=8)) <= limit
    report = fetch_images(url_table(server, rows), tmp_path, max_bytes=limit, **FAST)
    failures = failures_by_id(report)
    assert set(failures) == {"sized", "unsized"}
    assert all(f["error"].startswith("too large") and f["attempts"] == 1 for f in failures.values())
    assert files_in(tmp_path) == {"small.jpg"}


def test_redirects_only_to_http(server, tmp_path):
    rows = [("to_ftp", "/to-ftp"), ("to_img", "/to-img")]
    report = fetch_images(url_table(server, rows), tmp_path, **FAST)
    assert report["downloaded"] == 1
    assert failures_by_id(report)["to_ftp"]["error"].startswith("unsupported scheme")
    assert files_in(tmp_path) == {"to_img.jpg"}


def test_resume_skips_valid_files_and_replaces_broken_ones(server, tmp_path):
    rows = [("kept", "/img/kept"), ("broken", "/img/broken")]
    Image.new("RGB", (4, 4)).save(tmp_path / "kept.jpg", format="PNG")  # any decodable format counts
    (tmp_path / "broken.jpg").write_bytes(b"half a file")
    report = fetch_images(url_table(server, rows), tmp_path, **FAST)
    assert (report["skipped"], report["downloaded"], report["failed"]) == (1, 1, 0)
    assert server.requests == Counter({"/img/broken": 1})
    assert decode_problem(tmp_path / "broken.jpg") is None


def test_repeated_item_ids_are_alternative_urls(server, tmp_path):
    rows = [("multi", "/notfound"), ("multi", "/img/second"), ("multi", "/img/third")]
    report = fetch_images(url_table(server, rows), tmp_path, **FAST)
    assert (report["requested"], report["downloaded"], report["retries"]) == (1, 1, 0)
    assert server.requests == Counter({"/notfound": 1, "/img/second": 1})


# ---------------------------------------------------------------------------------------------
# a dataset folder


def make_folder(server: Server, folder: Path) -> Path:
    """A canonical dataset folder: items.parquet (one extra item without a URL) and image_urls.csv."""
    folder.mkdir()
    ids = [i for i, _ in MIXED] + ["offline"]
    items = pd.DataFrame(
        {
            "item_id": ids,
            "image": [None] * len(MIXED) + ["images/offline.png"],
            "labels": [["a", "b"] if k % 2 else ["c"] for k in range(len(ids))],
            "title": [f"title {i}" for i in ids],
        }
    )
    items.to_parquet(folder / "items.parquet", index=False)
    url_table(server, MIXED).to_csv(folder / "image_urls.csv", index=False)
    return folder


def images_column(folder: Path) -> dict[str, str | None]:
    items = pd.read_parquet(folder / "items.parquet")
    return {i: (None if pd.isna(v) else v) for i, v in zip(items["item_id"], items["image"], strict=True)}


def test_fetch_dataset_images_updates_items_and_resumes(server, tmp_path):
    folder = make_folder(server, tmp_path / "ds")
    before = pd.read_parquet(folder / "items.parquet")
    schema = pq.read_schema(folder / "items.parquet")

    report = fetch_dataset_images(folder, **FAST)
    assert (report["downloaded"], report["failed"]) == (3, 5)
    expected = {i: (f"images/{i}.jpg" if i in MIXED_OK else None) for i, _ in MIXED} | {"offline": "images/offline.png"}
    assert images_column(folder) == expected
    assert files_in(folder / "images") == {f"{i}.jpg" for i in MIXED_OK}

    after = pd.read_parquet(folder / "items.parquet")
    assert pq.read_schema(folder / "items.parquet").types == schema.types
    assert list(after["item_id"]) == list(before["item_id"])
    assert [list(x) for x in after["labels"]] == [list(x) for x in before["labels"]]
    assert after["item_id"].dtype == before["item_id"].dtype and after["image"].dtype == before["image"].dtype
    pd.testing.assert_series_equal(after["title"], before["title"])

    assert json.loads((folder / "fetch_report.json").read_text()) == report
    failures = pd.read_csv(folder / "fetch_failures.csv", dtype={"item_id": str})
    assert list(failures.columns) == ["item_id", "url", "error", "attempts"]
    assert dict(zip(failures["item_id"], failures["attempts"], strict=True)) == {
        "notfound": 1,
        "down": 3,
        "garbage": 1,
        "ftp": 0,
        "../evil": 0,
    }
    assert failures.set_index("item_id").loc["notfound", "url"] == server.url("/notfound")

    # second run: nothing re-requested for files present, failures retried, the fixed URL now works
    server.requests.clear()
    server.fixed = True
    report = fetch_dataset_images(folder, **FAST)
    assert (report["skipped"], report["downloaded"], report["failed"]) == (3, 1, 4)
    assert server.requests == Counter({"/notfound": 1, "/down": 3, "/garbage": 1})
    assert images_column(folder)["notfound"] == "images/notfound.jpg"
    assert set(pd.read_csv(folder / "fetch_failures.csv")["item_id"]) == {"down", "garbage", "ftp", "../evil"}
    assert pq.read_schema(folder / "items.parquet").types == schema.types


def test_a_file_that_went_bad_loses_its_image(server, tmp_path):
    folder = make_folder(server, tmp_path / "ds")
    fetch_dataset_images(folder, **FAST)
    (folder / "images" / "good1.jpg").write_bytes(b"corrupted")
    server.requests.clear()
    server.gone = True
    report = fetch_dataset_images(folder, **FAST)
    assert failures_by_id(report)["good1"]["error"].startswith("HTTP 404")
    assert images_column(folder)["good1"] is None
    assert decode_problem(folder / "images" / "good1.jpg") is not None  # left as it was, never pointed at


def test_missing_or_bad_urls_file_is_a_clear_error(server, tmp_path):
    folder = make_folder(server, tmp_path / "ds")
    (folder / "image_urls.csv").unlink()
    with pytest.raises(DatasetError, match="image_urls.csv: missing"):
        fetch_dataset_images(folder, **FAST)
    (folder / "image_urls.csv").write_text("id,link\nx,http://127.0.0.1/x\n")
    with pytest.raises(DatasetError, match=r"image_urls.csv: missing column\(s\) item_id, url"):
        fetch_dataset_images(folder, **FAST)
    assert not server.requests


def test_format_fetch_report(server, tmp_path):
    report = fetch_images(url_table(server, MIXED), tmp_path, **FAST)
    text = format_fetch_report(report)
    assert "3 downloaded" in text and "0 already present" in text and "5 failed of 8" in text
    for reason in ("HTTP 404", "HTTP 503", "undecodable", "unsupported scheme", "unsafe item id"):
        assert f"1 x {reason}" in text
