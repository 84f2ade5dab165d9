"""The image fetcher, against a local HTTP server: retries, resume, no garbage left, items.parquet updated,
safe file names for any item id, a deadline per download, and the report written whatever fails."""

from __future__ import annotations

import errno
import io
import json
import signal
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

import collab_iu.fetch_images as fetcher
from collab_iu.dataset import DatasetError
from collab_iu.fetch_images import (
    USER_AGENT,
    fetch_dataset_images,
    fetch_images,
    format_fetch_report,
    image_name,
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
        if path.startswith("/trickle"):
            return trickle(h, path)
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


def trickle(h: BaseHTTPRequestHandler, path: str) -> None:
    """One byte every 50 ms (each read is quick, the whole never ends in time): of the body
    (/trickle with a Content-Length, /trickle-unsized without) or of the headers (/trickle-headers)."""
    body = jpeg_bytes(7)
    if path == "/trickle-headers":
        h.wfile.write(b"HTTP/1.0 200 OK\r\nX-Slow: ")
        body = b"x" * len(body)
    else:
        h.send_response(200)
        if path == "/trickle":
            h.send_header("Content-Length", str(len(body)))
        h.end_headers()
    for byte in body[:200]:  # 10 s at most
        h.wfile.write(bytes([byte]))
        time.sleep(0.05)


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
    ("../evil", "/img/evil"),  # downloaded under a hashed name, inside the folder
]
MIXED_OK = {"good1", "good2", "flaky", "../evil"}


def names(ids) -> set[str]:
    return {image_name(i) for i in ids}


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
        "downloaded": 4,
        "skipped": 0,
        "failed": 4,
        "retries": 3,  # flaky: 1, down: 2
    }
    assert report["seconds"] >= 0 and report["unfinished"] == 0 and report["interrupted"] is None
    assert files_in(dest) == names(MIXED_OK)  # no garbage, no temporary files
    assert "good1.jpg" in files_in(dest) and image_name("../evil").startswith("sha256-")
    assert all(decode_problem(dest / image_name(i)) is None for i in MIXED_OK)
    assert files_in(tmp_path) == {"images"}  # nothing outside the images folder

    failures = failures_by_id(report)
    assert set(failures) == {"notfound", "down", "garbage", "ftp"}
    assert failures["notfound"]["error"].startswith("HTTP 404") and failures["notfound"]["attempts"] == 1
    assert failures["down"]["error"].startswith("HTTP 503") and failures["down"]["attempts"] == 3
    assert failures["garbage"]["error"].startswith("undecodable") and failures["garbage"]["attempts"] == 1
    assert failures["ftp"]["error"].startswith("unsupported scheme") and failures["ftp"]["attempts"] == 0
    assert failures["down"]["url"] == server.url("/down")

    assert server.requests == Counter(
        {"/img/good1": 1, "/img/good2": 1, "/notfound": 1, "/flaky": 2, "/down": 3, "/garbage": 1, "/img/evil": 1}
    )
    assert server.agents == {USER_AGENT}


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
    assert (report["downloaded"], report["failed"]) == (4, 4)
    expected = {i: (f"images/{image_name(i)}" if i in MIXED_OK else None) for i, _ in MIXED}
    assert images_column(folder) == expected | {"offline": "images/offline.png"}
    assert files_in(folder / "images") == names(MIXED_OK)

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
    }
    assert failures.set_index("item_id").loc["notfound", "url"] == server.url("/notfound")

    # second run: nothing re-requested for files present, failures retried, the fixed URL now works
    server.requests.clear()
    server.fixed = True
    report = fetch_dataset_images(folder, **FAST)
    assert (report["skipped"], report["downloaded"], report["failed"]) == (4, 1, 3)
    assert server.requests == Counter({"/notfound": 1, "/down": 3, "/garbage": 1})
    assert images_column(folder)["notfound"] == "images/notfound.jpg"
    assert images_column(folder)["../evil"] == f"images/{image_name('../evil')}"
    assert set(pd.read_csv(folder / "fetch_failures.csv")["item_id"]) == {"down", "garbage", "ftp"}
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
    assert "4 downloaded" in text and "0 already present" in text and "4 failed of 8" in text
    assert "not finished" not in text
    for reason in ("HTTP 404", "HTTP 503", "undecodable", "unsupported scheme"):
        assert f"1 x {reason}" in text


# ---------------------------------------------------------------------------------------------
# file names for any item id

LONG_ID = "L" * 300  # longer than any file system allows for a name (255 bytes)
ODD_IDS = [LONG_ID, "a/b/c", "..", ".", "../up", "a\\b", ".hidden", "line\nbreak", "nul\0", "a:b", "CON", "lpt1.x"]


def test_image_names_keep_plain_ids_and_hash_the_others():
    for plain in ("good1", "B00ABC1234", "1234567890123", "x..y", "été", "a b", "-", "x" * 100):
        assert image_name(plain) == f"{plain}.jpg"
    hashed = [image_name(i) for i in ODD_IDS + ["é" * 51, "x" * 101]]  # 102 and 101 bytes in UTF-8
    assert all(n.startswith("sha256-") and n.endswith(".jpg") and len(n) == 43 for n in hashed)
    assert len(set(hashed)) == len(hashed)
    assert image_name(LONG_ID) == image_name("L" * 300)  # a function of the id alone
    assert image_name("sha256-" + "0" * 32) != "sha256-" + "0" * 32 + ".jpg"  # no id takes a hashed name


def test_odd_item_ids_download_under_hashed_names(server, tmp_path):
    ids = ODD_IDS + ["normal", "x..y"]
    dest = tmp_path / "images"
    report = fetch_images(url_table(server, [(i, f"/img/{k}") for k, i in enumerate(ids)]), dest, **FAST)
    assert (report["downloaded"], report["failed"]) == (len(ids), 0), report["failures"]
    assert files_in(dest) == names(ids)
    assert {"normal.jpg", "x..y.jpg"} <= files_in(dest)
    assert all(decode_problem(dest / image_name(i)) is None for i in ids)
    assert files_in(tmp_path) == {"images"}


def test_an_empty_item_id_is_a_failure_never_requested(server, tmp_path):
    report = fetch_images(url_table(server, [("", "/img/x")]), tmp_path / "images", **FAST)
    assert report["failed"] == 1 and report["failures"][0]["error"] == "missing item id"
    assert not server.requests and files_in(tmp_path / "images") == set()


def write_folder(folder: Path, rows: list[tuple[str, str]], images: list[str | None] | None = None) -> Path:
    """A dataset folder whose items are the rows' ids (with `images`, else none) and image_urls.csv the rows."""
    folder.mkdir()
    ids = list(dict.fromkeys(i for i, _ in rows))
    pd.DataFrame({"item_id": ids, "image": images or [None] * len(ids)}).to_parquet(folder / "items.parquet")
    pd.DataFrame({"item_id": [i for i, _ in rows], "url": [u for _, u in rows]}).to_csv(
        folder / "image_urls.csv", index=False
    )
    return folder


def test_dataset_with_odd_item_ids_records_each_file(server, tmp_path):
    ids = [LONG_ID, "a/b/c", "..", "line\nbreak", "normal"]
    folder = write_folder(tmp_path / "ds", [(i, server.url(f"/img/{k}")) for k, i in enumerate(ids)])
    report = fetch_dataset_images(folder, **FAST)
    assert (report["downloaded"], report["failed"]) == (5, 0)

    images = images_column(folder)
    assert images == {i: f"images/{image_name(i)}" for i in ids}
    assert images["normal"] == "images/normal.jpg"
    assert all(decode_problem(folder / path) is None for path in images.values())
    assert files_in(folder / "images") == names(ids)
    assert json.loads((folder / "fetch_report.json").read_text()) == report

    server.requests.clear()  # resumed: every file is found under its name, nothing is requested
    report = fetch_dataset_images(folder, **FAST)
    assert (report["skipped"], report["downloaded"]) == (5, 0) and not server.requests
    assert images_column(folder) == images


def test_an_image_saved_under_an_old_name_is_renamed_not_downloaded_again(server, tmp_path):
    folder = write_folder(tmp_path / "ds", [("a:b", server.url("/img/ab"))])
    (folder / "images").mkdir()
    Image.new("RGB", (4, 4)).save(folder / "images" / "a:b.jpg", format="JPEG")  # a name earlier versions gave
    report = fetch_dataset_images(folder, **FAST)
    assert (report["skipped"], report["downloaded"]) == (1, 0) and not server.requests
    assert files_in(folder / "images") == {image_name("a:b")}
    assert images_column(folder) == {"a:b": f"images/{image_name('a:b')}"}


# ---------------------------------------------------------------------------------------------
# a deadline per download


def test_a_download_past_its_deadline_is_abandoned(server, tmp_path):
    rows = [
        ("good", "/img/good"),
        ("body", "/trickle"),
        ("unsized", "/trickle-unsized"),
        ("headers", "/trickle-headers"),
    ]
    start = time.monotonic()
    report = fetch_images(url_table(server, rows), tmp_path, retries=3, backoff=0.01, timeout=2.0, deadline=0.5)
    assert time.monotonic() - start < 2.0  # the three slow ones in parallel, each cut at 0.5 s
    assert (report["downloaded"], report["failed"]) == (1, 3)
    failures = failures_by_id(report)
    assert set(failures) == {"body", "unsized", "headers"}
    assert all(f["error"].startswith("deadline:") and f["attempts"] == 1 for f in failures.values())  # not retried
    assert files_in(tmp_path) == {"good.jpg"}  # no partial file
    assert "3 x deadline" in format_fetch_report(report)


@pytest.mark.parametrize("deadline", [0, -1, float("inf"), float("nan")])
def test_the_deadline_must_be_positive(tmp_path, deadline):
    with pytest.raises(ValueError, match="deadline must be a positive number of seconds"):
        fetch_images(pd.DataFrame({"item_id": ["a"], "url": ["http://127.0.0.1/a"]}), tmp_path, deadline=deadline)


def test_cli_fetch_images_takes_a_deadline(server, tmp_path, capsys):
    from orchestration.cli.main import main

    folder = write_folder(tmp_path / "ds", [("good", server.url("/img/good")), ("slow", server.url("/trickle"))])
    args = ["fetch-images", "--folder", str(folder), "--deadline", "0.3", "--backoff", "0.01", "--strict"]
    assert main(args) == 1
    assert "1 x deadline" in capsys.readouterr().out
    assert images_column(folder) == {"good": "images/good.jpg", "slow": None}
    for bad in ("0", "-5", "soon"):
        with pytest.raises(SystemExit) as exit_:
            main(["fetch-images", "--folder", str(folder), "--deadline", bad])
        assert exit_.value.code == 2
        assert f"expected a positive number of seconds, got '{bad}'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# the report is written whatever fails


def test_an_unexpected_error_is_that_items_failure(server, tmp_path, monkeypatch):
    copy_body = fetcher._copy_body

    def disk_full_for_boom(response, tmp, max_bytes):
        if response.url.endswith("/img/boom"):
            tmp.write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")
        return copy_body(response, tmp, max_bytes)

    monkeypatch.setattr(fetcher, "_copy_body", disk_full_for_boom)
    rows = [("ok1", server.url("/img/ok1")), ("boom", server.url("/img/boom")), ("ok2", server.url("/img/ok2"))]
    folder = write_folder(tmp_path / "ds", rows)
    report = fetch_dataset_images(folder, **FAST)

    assert (report["downloaded"], report["failed"], report["unfinished"]) == (2, 1, 0)
    error = f"unexpected error: OSError: [Errno 28] No space left on device: '{folder / 'images' / 'boom.jpg'}'"
    assert report["failures"] == [{"item_id": "boom", "url": server.url("/img/boom"), "error": error, "attempts": 0}]
    assert json.loads((folder / "fetch_report.json").read_text()) == report
    failures = pd.read_csv(folder / "fetch_failures.csv")
    assert failures.to_dict("records") == report["failures"]
    assert images_column(folder) == {"ok1": "images/ok1.jpg", "boom": None, "ok2": "images/ok2.jpg"}
    assert files_in(folder / "images") == {"ok1.jpg", "ok2.jpg"}  # the half-written file is gone


def test_ctrl_c_writes_what_was_done_then_stops(server, tmp_path, monkeypatch):
    copy_body = fetcher._copy_body

    def ctrl_c_while_trickling(response, tmp, max_bytes):
        if "/trickle" in response.url:
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # Ctrl-C
        return copy_body(response, tmp, max_bytes)

    monkeypatch.setattr(fetcher, "_copy_body", ctrl_c_while_trickling)
    rows = [("first", server.url("/img/first")), ("slow", server.url("/trickle")), ("after", server.url("/img/after"))]
    folder = write_folder(tmp_path / "ds", rows, images=[None, "images/slow-old.png", "images/after-old.png"])
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        fetch_dataset_images(folder, workers=1, retries=1, timeout=30.0, deadline=30.0)
    assert time.monotonic() - start < 3.0  # the slow download was cut short, not waited for

    report = json.loads((folder / "fetch_report.json").read_text())
    assert (report["downloaded"], report["failed"], report["unfinished"]) == (1, 0, 2)
    assert report["interrupted"] == "KeyboardInterrupt"
    assert "2 not finished: stopped by KeyboardInterrupt" in format_fetch_report(report)
    assert pd.read_csv(folder / "fetch_failures.csv").empty
    # what finished is recorded; what did not keeps its image
    assert images_column(folder) == {
        "first": "images/first.jpg",
        "slow": "images/slow-old.png",
        "after": "images/after-old.png",
    }
    assert files_in(folder / "images") == {"first.jpg"}
    assert server.requests == Counter({"/img/first": 1, "/trickle": 1})
