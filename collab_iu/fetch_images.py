"""Downloading a dataset's images from their URLs (Pinterest, Amazon, ...), resumably.

An importer leaves a canonical dataset folder with `items.parquet` and `image_urls.csv`
(columns `item_id,url`). `collab-iu fetch-images --dataset NAME` calls
`fetch_dataset_images(folder)`, which:

- downloads every URL to `folder/images/<item_id>.jpg` (that name whatever the real format),
  in parallel threads, with retries and exponential back-off on connection errors, timeouts,
  HTTP 5xx and 429 (never on other 4xx nor on content that does not decode);
- skips, without any request, files that already exist and decode, so an interrupted or
  partly failed run is resumed by running it again;
- writes each download to a temporary file and renames it only once it decodes, so a
  `<item_id>.jpg` is always a usable image;
- rewrites `items.parquet` so that `image` is `images/<item_id>.jpg` for the items whose file is
  now valid and null for the others (items without a URL keep their image);
- writes `fetch_report.json` (counts and failures) and `fetch_failures.csv`
  (`item_id,url,error,attempts`).

An item listed several times in `image_urls.csv` has alternative URLs, tried in order until one
works. `fetch_images(urls, dest)` is the download step alone, for any table of `item_id,url`.
"""

from __future__ import annotations

import random
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from collab_iu.artifacts import ITEMS
from collab_iu.atomic import atomic_file, write_json
from collab_iu.dataset import DatasetError, TableProblem
from collab_iu.image_io import decode_problem

URLS_FILE = "image_urls.csv"
ITEMS_FILE = ITEMS
IMAGES_DIR = "images"
REPORT_FILE = "fetch_report.json"
FAILURES_FILE = "fetch_failures.csv"
FAILURE_COLUMNS = ["item_id", "url", "error", "attempts"]

USER_AGENT = "collab-iu-image-fetcher/0.1 (+research dataset download; python-urllib)"
SCHEMES = ("http", "https")
CHUNK = 1 << 16
MAX_RETRY_AFTER = 60.0  # seconds; a server's Retry-After is honoured up to this


class _Failure(Exception):
    """A download failed; `retry` says whether another attempt may succeed."""

    def __init__(self, error: str, retry: bool, retry_after: float = 0.0):
        super().__init__(error)
        self.error = error
        self.retry = retry
        self.retry_after = retry_after


@dataclass
class _Outcome:
    """What happened to one item."""

    item_id: str
    url: str
    status: str  # "downloaded", "skipped" or "failed"
    error: str | None = None
    attempts: int = 0  # requests made
    retries: int = 0


@dataclass(frozen=True)
class _Options:
    dest: Path
    retries: int
    backoff: float
    timeout: float
    max_bytes: int
    opener: urllib.request.OpenerDirector


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to http/https (urllib would also follow ftp)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        scheme = urllib.parse.urlsplit(newurl).scheme.lower()
        if scheme not in SCHEMES:
            raise _Failure(f"unsupported scheme: redirect to {scheme or 'relative'} URL", retry=False)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def fetch_images(
    urls: pd.DataFrame,
    dest: Path,
    *,
    workers: int = 8,
    retries: int = 3,
    backoff: float = 1.0,
    timeout: float = 30.0,
    max_bytes: int = 50_000_000,
    progress: bool = False,
) -> dict:
    """Download each row's `url` to `dest/<item_id>.jpg`; return the report (counts and failures).

    `retries` is the number of attempts per URL in all (1: no retry); the wait before attempt
    k + 1 is `backoff * 2**(k - 1)` seconds plus a little jitter.
    """
    report, _ = _fetch_all(urls, Path(dest), workers, retries, backoff, timeout, max_bytes, progress)
    return report


def fetch_dataset_images(
    folder: Path,
    *,
    workers: int = 8,
    retries: int = 3,
    backoff: float = 1.0,
    timeout: float = 30.0,
    max_bytes: int = 50_000_000,
    progress: bool = False,
) -> dict:
    """Download a dataset folder's images, point `items.parquet` at them, write the report files."""
    folder = Path(folder)
    urls = read_image_urls(folder)
    items_path = folder / ITEMS_FILE
    if not items_path.is_file():
        raise DatasetError(folder, [TableProblem(ITEMS_FILE, "missing; run the dataset importer first")])
    table = pq.read_table(items_path)
    if "item_id" not in table.column_names or "image" not in table.column_names:
        raise DatasetError(folder, [TableProblem(ITEMS_FILE, "needs columns item_id and image")])
    report, present = _fetch_all(urls, folder / IMAGES_DIR, workers, retries, backoff, timeout, max_bytes, progress)
    _write_items(table, set(urls["item_id"].dropna()), present, items_path)
    write_json(report, folder / REPORT_FILE)
    with atomic_file(folder / FAILURES_FILE) as tmp:
        pd.DataFrame(report["failures"], columns=FAILURE_COLUMNS).to_csv(tmp, index=False)
    return report


def read_image_urls(folder: Path) -> pd.DataFrame:
    """`folder/image_urls.csv` as a table of string columns item_id, url; DatasetError if unusable."""
    path = Path(folder) / URLS_FILE
    if not path.is_file():
        raise DatasetError(folder, [TableProblem(URLS_FILE, f"missing (expected {path} with columns item_id,url)")])
    try:
        urls = pd.read_csv(path, dtype="string", keep_default_na=False, na_values=[""])
    except Exception as exc:  # noqa: BLE001 - any reader failure is reported, not raised
        raise DatasetError(folder, [TableProblem(URLS_FILE, f"cannot be read as CSV: {exc}")]) from exc
    missing = [c for c in ("item_id", "url") if c not in urls.columns]
    if missing:
        found = ", ".join(map(str, urls.columns)) or "none"
        raise DatasetError(folder, [TableProblem(URLS_FILE, f"missing column(s) {', '.join(missing)}; found {found}")])
    return urls


def format_fetch_report(report: dict, top: int = 5) -> str:
    """A short human summary: counts, then the most common failure reasons."""
    lines = [
        f"images: {report['downloaded']} downloaded, {report['skipped']} already present, "
        f"{report['failed']} failed of {report['requested']} ({report['retries']} retries, {report['seconds']:.1f} s)"
    ]
    reasons = Counter(_reason(f["error"]) for f in report["failures"])
    for reason, count in reasons.most_common(top):
        lines.append(f"  {count} x {reason}")
    if len(reasons) > top:
        lines.append(f"  ... and {len(reasons) - top} other reason(s)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# downloading


def _fetch_all(
    urls: pd.DataFrame,
    dest: Path,
    workers: int,
    retries: int,
    backoff: float,
    timeout: float,
    max_bytes: int,
    progress: bool,
) -> tuple[dict, set[str]]:
    """Fetch every item; the report and the ids whose file is now present and valid."""
    start = time.monotonic()
    missing = [c for c in ("item_id", "url") if c not in urls.columns]
    if missing:
        raise ValueError(f"urls table lacks column(s) {', '.join(missing)}")
    dest.mkdir(parents=True, exist_ok=True)
    opener = urllib.request.build_opener(_HttpOnlyRedirects())
    opts = _Options(dest, max(1, retries), backoff, timeout, max_bytes, opener)
    jobs = _group_urls(urls)
    outcomes: list[_Outcome | None] = [None] * len(jobs)
    with (
        ThreadPoolExecutor(max_workers=max(1, workers)) as pool,
        tqdm(total=len(jobs), disable=not progress, desc="fetch images", unit="img") as bar,
    ):
        futures = {pool.submit(_fetch_item, item_id, item_urls, opts): i for i, (item_id, item_urls) in enumerate(jobs)}
        for future in as_completed(futures):
            outcomes[futures[future]] = future.result()
            bar.update()
    return _report(outcomes, time.monotonic() - start), {o.item_id for o in outcomes if o.status != "failed"}


def _group_urls(urls: pd.DataFrame) -> list[tuple[str, list[str]]]:
    """(item_id, [urls in order]) per distinct item, in order of first appearance."""
    groups: dict[str, list[str]] = {}
    for item_id, url in zip(urls["item_id"], urls["url"], strict=True):
        item_id = "" if pd.isna(item_id) else str(item_id)
        urls_of_item = groups.setdefault(item_id, [])
        if not pd.isna(url) and str(url).strip():
            urls_of_item.append(str(url).strip())
    return list(groups.items())


def _report(outcomes: list[_Outcome], seconds: float) -> dict:
    counts = Counter(o.status for o in outcomes)
    failures = [
        {"item_id": o.item_id, "url": o.url, "error": o.error, "attempts": o.attempts}
        for o in outcomes
        if o.status == "failed"
    ]
    return {
        "requested": len(outcomes),
        "downloaded": counts["downloaded"],
        "skipped": counts["skipped"],
        "failed": counts["failed"],
        "retries": sum(o.retries for o in outcomes),
        "seconds": round(seconds, 3),
        "failures": failures,
    }


def _fetch_item(item_id: str, urls: list[str], opts: _Options) -> _Outcome:
    """Fetch one item, trying its URLs in order until one gives a valid image."""
    first = urls[0] if urls else ""
    if not _safe_item_id(item_id):
        return _Outcome(item_id, first, "failed", "unsafe item id")
    target = opts.dest / f"{item_id}.jpg"
    if decode_problem(target) is None:
        return _Outcome(item_id, first, "skipped")
    if not urls:
        return _Outcome(item_id, "", "failed", "missing url")
    outcome = _Outcome(item_id, first, "failed")
    for url in urls:
        attempts, error = _fetch_url(url, target, opts)
        outcome.attempts += attempts
        outcome.retries += max(0, attempts - 1)
        outcome.url, outcome.error = url, error
        if error is None:
            outcome.status = "downloaded"
            break
    return outcome


def _safe_item_id(item_id: str) -> bool:
    """False for ids that could name a file outside the images folder (or no file at all)."""
    return bool(item_id) and not (item_id.startswith(".") or ".." in item_id or any(c in item_id for c in "/\\\0"))


def _fetch_url(url: str, target: Path, opts: _Options) -> tuple[int, str | None]:
    """Download `url` to `target` with retries: (requests made, error or None)."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in SCHEMES:
        return 0, f"unsupported scheme: {scheme or 'none'}"
    attempt = 0
    while True:
        attempt += 1
        try:
            _download(url, target, opts)
            return attempt, None
        except _Failure as failure:
            if not failure.retry or attempt >= opts.retries:
                return attempt, failure.error
            time.sleep(_delay(opts.backoff, attempt, failure.retry_after))


def _delay(backoff: float, attempt: int, retry_after: float) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based)."""
    delay = backoff * 2 ** (attempt - 1)
    delay += random.uniform(0, 0.1 * delay)
    return max(delay, min(retry_after, MAX_RETRY_AFTER))


def _download(url: str, target: Path, opts: _Options) -> None:
    """One request: the body goes to a temporary file, renamed to `target` only if it decodes."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "image/*,*/*;q=0.8"})
    with atomic_file(target) as tmp:
        try:
            with opts.opener.open(request, timeout=opts.timeout) as response:
                _check_length(response.headers.get("Content-Length"), opts.max_bytes)
                _copy_body(response, tmp, opts.max_bytes)
        except _Failure:
            raise
        except urllib.error.HTTPError as exc:
            raise _http_failure(exc) from None
        except urllib.error.URLError as exc:
            raise _network_failure(exc.reason) from None
        except (TimeoutError, ConnectionError, ssl.SSLError, HTTPException) as exc:
            raise _network_failure(exc) from None
        except ValueError as exc:  # malformed URL (http.client.InvalidURL, ...)
            raise _Failure(f"invalid url: {exc}", retry=False) from None
        problem = decode_problem(tmp)
        if problem is not None:
            raise _Failure(problem, retry=False)


def _check_length(header: str | None, max_bytes: int) -> None:
    if header is not None and header.strip().isdigit() and int(header) > max_bytes:
        raise _Failure(f"too large: {int(header)} bytes > max_bytes {max_bytes}", retry=False)


def _copy_body(response, tmp: Path, max_bytes: int) -> None:
    """Stream the response body to `tmp`, refusing more than `max_bytes`."""
    size = 0
    with tmp.open("wb") as out:
        while chunk := response.read(CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise _Failure(f"too large: more than max_bytes {max_bytes}", retry=False)
            out.write(chunk)


def _http_failure(exc: urllib.error.HTTPError) -> _Failure:
    code = exc.code
    retry = code >= 500 or code == 429
    retry_after = exc.headers.get("Retry-After", "") if exc.headers else ""
    wait = float(retry_after) if retry_after.strip().isdigit() else 0.0
    reason = f": {exc.reason}" if exc.reason else ""
    return _Failure(f"HTTP {code}{reason}", retry=retry, retry_after=wait)


def _network_failure(reason) -> _Failure:
    if isinstance(reason, TimeoutError):
        return _Failure("timeout", retry=True)
    return _Failure(f"connection error: {reason}", retry=True)


def _reason(error: str | None) -> str:
    """The failure's kind, for grouping: the error up to its first colon."""
    return (error or "unknown").split(":", 1)[0]


# ---------------------------------------------------------------------------------------------
# items.parquet


def _write_items(table: pa.Table, listed: set[str], present: set[str], path: Path) -> None:
    """Point `image` at the files now present, null for listed items without one; keep everything else."""
    item_ids = table.column("item_id").to_pylist()
    old = table.column("image").to_pylist()
    images = [
        (f"{IMAGES_DIR}/{item_id}.jpg" if item_id in present else None) if item_id in listed else image
        for item_id, image in zip(item_ids, old, strict=True)
    ]
    index = table.schema.get_field_index("image")
    field = table.schema.field(index)
    if pa.types.is_null(field.type):
        field = field.with_type(pa.string())
    table = table.set_column(index, field, pa.array(images, type=field.type))
    with atomic_file(path) as tmp:
        pq.write_table(table, tmp)
