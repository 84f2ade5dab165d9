"""Downloading a dataset's images from their URLs (Pinterest, Amazon, ...), resumably.

An importer leaves a canonical dataset folder with `items.parquet` and `image_urls.csv`
(columns `item_id,url`). `collab-iu fetch-images --dataset NAME` calls
`fetch_dataset_images(folder)`, which:

- downloads every URL to `folder/images/<image_name(item_id)>`: `<item_id>.jpg` (that name
  whatever the real format), or `sha256-<32 hex digits of the id's SHA-256>.jpg` for an id that
  cannot name a file everywhere (see `image_name`), in parallel threads, with retries and
  exponential back-off on connection errors, timeouts, HTTP 5xx and 429 (never on other 4xx, on
  content that does not decode, nor on a download that passed its deadline);
- gives each download `deadline` seconds in all (`timeout` bounds each read only): then its
  connection is shut down, the partial file removed and the failure recorded as "deadline";
- skips, without any request, files that already exist and decode, so an interrupted or
  partly failed run is resumed by running it again;
- writes each download to a temporary file and renames it only once it decodes, so an image
  file is always a usable image;
- rewrites `items.parquet` so that `image` is `images/<file>` for the items whose file is now
  valid and null for the others that were tried (items without a URL keep their image): the
  items table is the map from item id to file;
- writes `fetch_report.json` (counts and failures) and `fetch_failures.csv`
  (`item_id,url,error,attempts`).

Whatever happens, the report files and `items.parquet` record what was done: an unexpected error
for one item is that item's failure; on Ctrl-C or a fatal error the downloads under way are cut
short, what finished is written, items not finished keep their `image`, and the error is raised
again (the report then counts them as `unfinished` and names the error in `interrupted`).

An item listed several times in `image_urls.csv` has alternative URLs, tried in order until one
works. `fetch_images(urls, dest)` is the download step alone, for any table of `item_id,url`.
"""

from __future__ import annotations

import hashlib
import http.client
import math
import os
import random
import re
import socket
import ssl
import threading
import time
import unicodedata
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
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
from collab_iu.locks import output_lock

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
DEADLINE = 120.0  # seconds for one download, from the connection to the last byte

SUFFIX = ".jpg"
MAX_ID_BYTES = 100  # longer ids (UTF-8) get a hashed file name
HASH_PREFIX = "sha256-"
HASH_HEX = 32  # 128 bits of the SHA-256
_HASHED = re.compile(rf"{HASH_PREFIX}[0-9a-f]{{{HASH_HEX}}}", re.IGNORECASE)
_RESERVED_CHARS = frozenset('/\\:*?"<>|')  # path separators and the characters Windows refuses
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})  # control characters, surrogates, line breaks
_WINDOWS_DEVICES = frozenset(
    {"CON", "PRN", "AUX", "NUL"} | {f"{name}{k}" for name in ("COM", "LPT") for k in range(10)}
)


def image_name(item_id: str) -> str:
    """The image file name of `item_id`: `<item_id>.jpg`, or `sha256-<hex>.jpg` when the id is unsafe.

    An id is hashed when it is longer than MAX_ID_BYTES in UTF-8, starts with a dot (`.`, `..`,
    hidden files), contains a path separator, a character Windows refuses (`:*?"<>|`), a control
    character (NUL, newline, ...) or a line separator, is a Windows device name (`CON`, `nul`,
    `COM1`, ...), or looks like a hashed name itself (so no id can take another's file). The
    hash is the first HASH_HEX hex digits of the SHA-256 of the id's UTF-8 bytes.
    """
    if _plain_id(item_id):
        return f"{item_id}{SUFFIX}"
    digest = hashlib.sha256(item_id.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{HASH_PREFIX}{digest[:HASH_HEX]}{SUFFIX}"


def _plain_id(item_id: str) -> bool:
    """Whether `item_id` + ".jpg" is a safe, portable file name (see `image_name`)."""
    try:
        size = len(item_id.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return (
        0 < size <= MAX_ID_BYTES
        and not item_id.startswith(".")
        and not any(c in _RESERVED_CHARS or unicodedata.category(c) in _UNSAFE_CATEGORIES for c in item_id)
        and item_id.split(".", 1)[0].rstrip(" ").upper() not in _WINDOWS_DEVICES
        and _HASHED.fullmatch(item_id) is None
    )


def _legacy_name(item_id: str) -> str | None:
    """The name an earlier version gave `item_id`'s image (`<item_id>.jpg` for ids it accepted), or None."""
    try:
        size = len(item_id.encode("utf-8"))
    except UnicodeEncodeError:
        return None
    accepted = bool(item_id) and not item_id.startswith(".") and ".." not in item_id
    if not accepted or any(c in item_id for c in "/\\\0") or size > 255 - len(SUFFIX):
        return None
    return f"{item_id}{SUFFIX}"


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
    file: str | None = None  # the image's name in the images folder, when it is there and valid


@dataclass
class _Run:
    """The items to fetch and, as they finish, their outcomes (None: not finished)."""

    jobs: list[tuple[str, list[str]]]
    outcomes: list[_Outcome | None]
    start: float = field(default_factory=time.monotonic)
    interrupted: str | None = None  # the error that stopped the run, if one did

    @classmethod
    def of(cls, urls: pd.DataFrame) -> _Run:
        missing = [c for c in ("item_id", "url") if c not in urls.columns]
        if missing:
            raise ValueError(f"urls table lacks column(s) {', '.join(missing)}")
        jobs = _group_urls(urls)
        return cls(jobs, [None] * len(jobs))


class _Stopper:
    """Stops a run: no new download starts, and the ones under way lose their connections at once."""

    def __init__(self):
        self.event = threading.Event()
        self._running: set[_Deadline] = set()
        self._lock = threading.Lock()

    def stop(self) -> None:
        with self._lock:
            self.event.set()
            for deadline in self._running:
                deadline.expire()

    def add(self, deadline: _Deadline) -> None:
        with self._lock:
            self._running.add(deadline)
            if self.event.is_set():
                deadline.expire()

    def discard(self, deadline: _Deadline) -> None:
        with self._lock:
            self._running.discard(deadline)


_current = threading.local()  # .deadline: the _Deadline of the download running in this thread


class _Deadline:
    """Ends one download after `seconds`: its sockets are shut down, so a blocked read returns at once.

    The connections urllib opens in this thread meanwhile (redirects included) register
    themselves (`_watch`), from when they are connected (for HTTPS: after the TLS handshake, which
    `timeout` bounds) to the last byte of the body.
    """

    def __init__(self, seconds: float, stopper: _Stopper):
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stopper = stopper
        self._timer = threading.Timer(seconds, self.expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        _current.deadline = self
        self._stopper.add(self)
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()
        self._stopper.discard(self)
        _current.deadline = None

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shutdown(sock)

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    """Shut `sock` down for both directions (the plain socket call: for TLS too, without touching its state)."""
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:  # already closed
        pass


def _watch(sock: socket.socket | None) -> None:
    deadline = getattr(_current, "deadline", None)
    if deadline is not None and sock is not None:
        deadline.watch(sock)


class _WatchedHTTPConnection(http.client.HTTPConnection):
    def connect(self) -> None:
        super().connect()
        _watch(self.sock)


class _WatchedHTTPSConnection(http.client.HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        _watch(self.sock)


class _HTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req):
        return self.do_open(_WatchedHTTPConnection, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req):
        return self.do_open(_WatchedHTTPSConnection, req)  # the default TLS context, as urllib's


@dataclass(frozen=True)
class _Options:
    dest: Path
    retries: int
    backoff: float
    timeout: float
    deadline: float
    max_bytes: int
    opener: urllib.request.OpenerDirector
    stopper: _Stopper


def _options(dest: Path, retries: int, backoff: float, timeout: float, deadline: float, max_bytes: int) -> _Options:
    if not 0 < deadline < math.inf:
        raise ValueError(f"deadline must be a positive number of seconds, not {deadline!r}")
    opener = urllib.request.build_opener(_HttpOnlyRedirects(), _HTTPHandler(), _HTTPSHandler())
    return _Options(Path(dest), max(1, retries), backoff, timeout, deadline, max_bytes, opener, _Stopper())


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
    deadline: float = DEADLINE,
    max_bytes: int = 50_000_000,
    progress: bool = False,
) -> dict:
    """Download each row's `url` to `dest/<image_name(item_id)>`; return the report (counts and failures).

    `retries` is the number of attempts per URL in all (1: no retry); the wait before attempt
    k + 1 is `backoff * 2**(k - 1)` seconds plus a little jitter. `timeout` bounds each read,
    `deadline` each download (one request, its redirects included) in all.
    """
    run = _Run.of(urls)
    _fetch_all(run, _options(dest, retries, backoff, timeout, deadline, max_bytes), workers, progress)
    return _report(run)


def fetch_dataset_images(
    folder: Path,
    *,
    workers: int = 8,
    retries: int = 3,
    backoff: float = 1.0,
    timeout: float = 30.0,
    deadline: float = DEADLINE,
    max_bytes: int = 50_000_000,
    progress: bool = False,
) -> dict:
    """Download a dataset folder's images, point `items.parquet` at them, write the report files.

    These three are written even when the run stops on an error (which is then raised again). The lock of
    `images/` (collab_iu/locks.py, in the folder's `.locks/`) keeps a second fetch of the folder waiting, and
    removes the partial downloads of a killed one.
    """
    folder = Path(folder)
    with output_lock(folder / IMAGES_DIR):
        urls = read_image_urls(folder)
        items_path = folder / ITEMS_FILE
        if not items_path.is_file():
            raise DatasetError(folder, [TableProblem(ITEMS_FILE, "missing; run the dataset importer first")])
        table = pq.read_table(items_path)
        if "item_id" not in table.column_names or "image" not in table.column_names:
            raise DatasetError(folder, [TableProblem(ITEMS_FILE, "needs columns item_id and image")])
        run = _Run.of(urls)
        opts = _options(folder / IMAGES_DIR, retries, backoff, timeout, deadline, max_bytes)
        try:
            _fetch_all(run, opts, workers, progress)
        except BaseException as exc:
            run.interrupted = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise
        finally:
            report = _report(run)
            _write_items(table, _images(run), items_path)
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
    if report.get("unfinished"):
        lines.append(f"  {report['unfinished']} not finished: stopped by {report.get('interrupted') or 'an error'}")
    reasons = Counter(_reason(f["error"]) for f in report["failures"])
    for reason, count in reasons.most_common(top):
        lines.append(f"  {count} x {reason}")
    if len(reasons) > top:
        lines.append(f"  ... and {len(reasons) - top} other reason(s)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# downloading


def _fetch_all(run: _Run, opts: _Options, workers: int, progress: bool) -> None:
    """Fetch every job of `run` into `run.outcomes`, in parallel.

    On any exception here (Ctrl-C included) the downloads under way are cut short, the outcomes of
    the items that finished are kept, and the exception is raised again.
    """
    opts.dest.mkdir(parents=True, exist_ok=True)
    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    futures: dict[Future, int] = {}
    try:
        with tqdm(total=len(run.jobs), disable=not progress, desc="fetch images", unit="img") as bar:
            for i, (item_id, item_urls) in enumerate(run.jobs):
                futures[pool.submit(_fetch_item_guarded, item_id, item_urls, opts)] = i
            for future in as_completed(futures):
                run.outcomes[futures[future]] = future.result()
                bar.update()
    except BaseException:
        opts.stopper.stop()
        pool.shutdown(wait=True, cancel_futures=True)
        for future, i in futures.items():
            if future.done() and not future.cancelled() and future.exception() is None:
                run.outcomes[i] = future.result()
        raise
    finally:
        pool.shutdown(wait=True)


def _group_urls(urls: pd.DataFrame) -> list[tuple[str, list[str]]]:
    """(item_id, [urls in order]) per distinct item, in order of first appearance."""
    groups: dict[str, list[str]] = {}
    for item_id, url in zip(urls["item_id"], urls["url"], strict=True):
        item_id = "" if pd.isna(item_id) else str(item_id)
        urls_of_item = groups.setdefault(item_id, [])
        if not pd.isna(url) and str(url).strip():
            urls_of_item.append(str(url).strip())
    return list(groups.items())


def _report(run: _Run) -> dict:
    done = [o for o in run.outcomes if o is not None]
    counts = Counter(o.status for o in done)
    failures = [
        {"item_id": o.item_id, "url": o.url, "error": o.error, "attempts": o.attempts}
        for o in done
        if o.status == "failed"
    ]
    return {
        "requested": len(run.outcomes),
        "downloaded": counts["downloaded"],
        "skipped": counts["skipped"],
        "failed": counts["failed"],
        "unfinished": len(run.outcomes) - len(done),
        "retries": sum(o.retries for o in done),
        "seconds": round(time.monotonic() - run.start, 3),
        "interrupted": run.interrupted,
        "failures": failures,
    }


def _fetch_item_guarded(item_id: str, urls: list[str], opts: _Options) -> _Outcome | None:
    """`_fetch_item`, with an unexpected error as the item's failure; None when a stop cut it short."""
    if opts.stopper.event.is_set():
        return None
    try:
        outcome = _fetch_item(item_id, urls, opts)
    except Exception as exc:  # noqa: BLE001 - one item's bug or fault must not lose the others' results
        error = f"unexpected error: {type(exc).__name__}: {exc}".splitlines()[0][:300]
        outcome = _Outcome(item_id, urls[0] if urls else "", "failed", error)
    if outcome.status == "failed" and opts.stopper.event.is_set():
        return None
    return outcome


def _fetch_item(item_id: str, urls: list[str], opts: _Options) -> _Outcome:
    """Fetch one item, trying its URLs in order until one gives a valid image."""
    first = urls[0] if urls else ""
    if not item_id:
        return _Outcome(item_id, first, "failed", "missing item id")
    name = image_name(item_id)
    target = opts.dest / name
    if decode_problem(target) is None or _adopt_legacy(item_id, target):
        return _Outcome(item_id, first, "skipped", file=name)
    if not urls:
        return _Outcome(item_id, "", "failed", "missing url")
    outcome = _Outcome(item_id, first, "failed")
    for url in urls:
        attempts, error = _fetch_url(url, target, opts)
        outcome.attempts += attempts
        outcome.retries += max(0, attempts - 1)
        outcome.url, outcome.error = url, error
        if error is None:
            outcome.status, outcome.file = "downloaded", name
            break
    return outcome


def _adopt_legacy(item_id: str, target: Path) -> bool:
    """Rename a valid image an earlier version saved as `<item_id>.jpg` to `target` (no new download)."""
    legacy = _legacy_name(item_id)
    if legacy is None or legacy == target.name:
        return False
    path = target.with_name(legacy)
    try:
        if decode_problem(path) is not None:
            return False
        os.replace(path, target)
    except OSError:
        return False
    return True


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
            if opts.stopper.event.wait(_delay(opts.backoff, attempt, failure.retry_after)):
                return attempt, "interrupted"


def _delay(backoff: float, attempt: int, retry_after: float) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based)."""
    delay = backoff * 2 ** (attempt - 1)
    delay += random.uniform(0, 0.1 * delay)
    return max(delay, min(retry_after, MAX_RETRY_AFTER))


def _download(url: str, target: Path, opts: _Options) -> None:
    """One request: the body goes to a temporary file, renamed to `target` only if it decodes in time."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "image/*,*/*;q=0.8"})
    with atomic_file(target) as tmp:
        with _Deadline(opts.deadline, opts.stopper) as deadline:
            try:
                _receive(request, tmp, opts)
            except Exception as exc:
                if not deadline.expired:
                    raise _failure(exc) from None
        if deadline.expired:  # whatever the read saw (an error, or an early end of the body)
            raise _Failure(f"deadline: not complete within {opts.deadline:g} s", retry=False)
        problem = decode_problem(tmp)
        if problem is not None:
            raise _Failure(problem, retry=False)


def _receive(request: urllib.request.Request, tmp: Path, opts: _Options) -> None:
    with opts.opener.open(request, timeout=opts.timeout) as response:
        _check_length(response.headers.get("Content-Length"), opts.max_bytes)
        _copy_body(response, tmp, opts.max_bytes)


def _failure(exc: Exception) -> Exception:
    """The _Failure a request's exception means; an exception that is not about the request, unchanged."""
    if isinstance(exc, _Failure):
        return exc
    if isinstance(exc, urllib.error.HTTPError):
        return _http_failure(exc)
    if isinstance(exc, urllib.error.URLError):
        return _network_failure(exc.reason)
    if isinstance(exc, TimeoutError | ConnectionError | ssl.SSLError | HTTPException):
        return _network_failure(exc)
    if isinstance(exc, ValueError):  # malformed URL (http.client.InvalidURL, ...)
        return _Failure(f"invalid url: {exc}", retry=False)
    return exc


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


def _images(run: _Run) -> dict[str, str | None]:
    """Item id -> its `image` (relative path, or None when it failed) for every item that finished."""
    return {o.item_id: (None if o.file is None else f"{IMAGES_DIR}/{o.file}") for o in run.outcomes if o is not None}


def _write_items(table: pa.Table, images: dict[str, str | None], path: Path) -> None:
    """Set `image` of the items in `images` (item id -> relative path or None); keep everything else."""
    item_ids = table.column("item_id").to_pylist()
    old = table.column("image").to_pylist()
    new = [images.get(item_id, image) for item_id, image in zip(item_ids, old, strict=True)]
    index = table.schema.get_field_index("image")
    image_field = table.schema.field(index)
    if pa.types.is_null(image_field.type):
        image_field = image_field.with_type(pa.string())
    table = table.set_column(index, image_field, pa.array(new, type=image_field.type))
    with atomic_file(path) as tmp:
        pq.write_table(table, tmp)
