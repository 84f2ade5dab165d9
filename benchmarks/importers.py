"""Importer benchmark: wall time and peak memory of `run_import` on raw files of the paper's sizes.

Writes synthetic raw files in the exact formats at the sizes of the real datasets (MovieLens
ml-20m: 20,000,263 ratings of 27,278 movies by 138,493 users; Amazon Clothing 2014:
5,748,920 reviews and 1,503,384 metadata lines; Pinterest: 2,900,000 repins), plus
`--images` JPEG posters (MovieLens), then imports each one `--repeats` times, each time in a
fresh child process (`os.wait4` rusage gives the child's peak RSS), and prints the median.
The raw files are generated once into `--work-dir` (default: a temporary folder) and reused.

    .venv/bin/python benchmarks/importers.py [--scale 1.0] [--images 5000] [--repeats 3] [--work-dir DIR]
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = {  # the real datasets' sizes
    "movielens": {"ratings": 20_000_263, "movies": 27_278, "users": 138_493},
    "amazon": {"reviews": 5_748_920, "items": 1_503_384, "users": 3_117_268},
    "pinterest": {"repins": 2_900_000, "pins": 180_000, "users": 46_000},
}
GENRES = ["Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama", "Fantasy"]


def _zipf_ids(rng, n: int, size: int):
    """Ids 1..n with a long-tailed popularity, as in real interaction data."""
    import numpy as np

    weights = 1.0 / np.arange(1, n + 1) ** 0.9
    return rng.choice(np.arange(1, n + 1), size=size, p=weights / weights.sum())


def write_movielens(dest: Path, scale: float, images: int) -> None:
    import numpy as np
    import pandas as pd
    from PIL import Image

    s = SIZES["movielens"]
    rng = np.random.default_rng(0)
    n, movies = int(s["ratings"] * scale), max(50, int(s["movies"] * scale))
    dest.mkdir(parents=True)
    genres = ["|".join(rng.choice(GENRES, size=rng.integers(1, 4), replace=False)) for _ in range(movies)]
    pd.DataFrame(
        {"movieId": np.arange(1, movies + 1), "title": [f"Movie, {i} (1999)" for i in range(movies)], "genres": genres}
    ).to_csv(dest / "movies.csv", index=False)
    ratings = pd.DataFrame(
        {
            "userId": rng.integers(1, int(s["users"] * scale) + 2, n),
            "movieId": _zipf_ids(rng, movies, n),
            "rating": rng.integers(1, 11, n) / 2,
            "timestamp": rng.integers(8e8, 1.4e9, n),
        }
    )
    ratings.to_csv(dest / "ratings.csv", index=False)
    (dest / "posters").mkdir()
    for movie in range(1, min(images, movies) + 1):  # posters of the most rated movies, 182 x 268 like TMDB's
        pixels = rng.integers(0, 255, (268, 182, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(dest / "posters" / f"{movie}.jpg", quality=85)


def write_amazon(dest: Path, scale: float) -> None:
    import numpy as np

    s = SIZES["amazon"]
    rng = np.random.default_rng(1)
    n, items = int(s["reviews"] * scale), int(s["items"] * scale)
    dest.mkdir(parents=True)
    users = _zipf_ids(rng, int(s["users"] * scale), n)  # a few heavy reviewers, so a 5-core exists
    asins = _zipf_ids(rng, items, n)
    times = rng.integers(1e9, 1.4e9, n)
    with gzip.open(dest / "reviews_Clothing_Shoes_and_Jewelry.json.gz", "wt", compresslevel=1) as f:
        for u, a, t in zip(users.tolist(), asins.tolist(), times.tolist()):
            f.write(
                f'{{"reviewerID": "U{u}", "asin": "B{a:09d}", "overall": 4.0, "unixReviewTime": {t}, '
                f'"reviewText": "fine", "summary": "ok"}}\n'
            )
    tree = [["Women", "Clothing", "Dresses"], ["Men", "Shoes"], ["Women", "Jewelry", "Rings"], ["Boys", "Clothing"]]
    with gzip.open(dest / "meta_Clothing_Shoes_and_Jewelry.json.gz", "wt", compresslevel=1) as f:
        for a in range(1, items + 1):
            path = tree[a % len(tree)][: 1 + a % 3]
            f.write(
                f"{{'asin': 'B{a:09d}', 'imUrl': 'http://ecx.images-amazon.com/images/I/{a}.jpg', "
                f"'categories': [['Clothing, Shoes & Jewelry', {', '.join(repr(p) for p in path)}]], "
                f"'title': \"Item {a}\"}}\n"
            )


def write_pinterest(dest: Path, scale: float) -> None:
    import numpy as np
    import pandas as pd

    s = SIZES["pinterest"]
    rng = np.random.default_rng(2)
    n, pins = int(s["repins"] * scale), int(s["pins"] * scale)
    dest.mkdir(parents=True)
    (dest / "ImageCategoryID.txt").write_text("".join(f"category {i}|{i}\n" for i in range(32)))
    pin = _zipf_ids(rng, pins, n)
    category = (pin * 7 + (rng.random(n) < 0.1) * rng.integers(0, 32, n)) % 32
    repins = pd.DataFrame(
        {
            "pin": pin,
            "user": rng.integers(1, int(s["users"] * scale) + 2, n),
            "cat": category,
            "board": rng.integers(1, 10**6, n),
        }
    )
    repins.to_csv(dest / "ImageDatasetRepinactivity", sep="|", header=False, index=False)
    urls = pd.DataFrame(
        {"pin": np.arange(1, pins + 1), "url": [f"http://media-cache.pinimg.com/{i}.jpg" for i in range(pins)]}
    )
    urls.to_csv(dest / "ImageDatasetImagesURLs", sep="|", header=False, index=False)


def child(kind: str, source: Path, out: Path) -> None:
    """Run one import in this process; print its wall time as JSON."""
    from collab_iu.importers import run_import
    from collab_iu.params import ImportParams

    start = time.perf_counter()
    report = run_import(kind, source, out, ImportParams(), force=True)
    print(json.dumps({"seconds": time.perf_counter() - start, "kept": report["kept"], "images": report["images"]}))


def measure(kind: str, source: Path, out: Path) -> tuple[float, float, dict]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", kind, str(source), str(out)], stdout=subprocess.PIPE, text=True
    )
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"{kind} import failed")
    result = json.loads(stdout.strip().splitlines()[-1])
    return result["seconds"], usage.ru_maxrss / 1024, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the real datasets' sizes")
    parser.add_argument("--images", type=int, default=5000, help="MovieLens posters to write and check")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work-dir", type=Path)
    parser.add_argument("--child", nargs=3, metavar=("KIND", "SOURCE", "OUT"))
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="collab_iu_import_bench_"))
    writers = {
        "movielens": lambda d: write_movielens(d, args.scale, args.images),
        "amazon": lambda d: write_amazon(d, args.scale),
        "pinterest": lambda d: write_pinterest(d, args.scale),
    }
    print(
        f"# importer benchmark, {datetime.date.today()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, scale {args.scale:g}, raw files in {work}\n"
    )
    for kind, write in writers.items():
        source = work / "raw" / kind
        if not source.exists():
            start = time.perf_counter()
            write(source)
            print(
                f"{kind}: raw files written in {time.perf_counter() - start:.0f} s "
                f"({sum(p.stat().st_size for p in source.rglob('*') if p.is_file()) / 1e6:.0f} MB)"
            )
    print("\n| dataset | raw input | kept | median s | runs (s) | peak RSS MiB |\n|---|---|---|---:|---|---:|")
    for kind in writers:
        source, out = work / "raw" / kind, work / "out" / kind
        times, peaks, last = [], [], {}
        for _ in range(args.repeats):
            seconds, peak, last = measure(kind, source, out)
            times.append(seconds)
            peaks.append(peak)
        size = {k: f"{int(v * args.scale):,}" for k, v in SIZES[kind].items()}
        kept = last["kept"]
        print(
            f"| {kind} | {', '.join(f'{v} {k}' for k, v in size.items())} | {kept['items']:,} items, "
            f"{kept['interactions']:,} interactions, {last['images']['found']:,} images | "
            f"{statistics.median(times):.1f} | {', '.join(f'{t:.1f}' for t in times)} | {max(peaks):,.0f} |"
        )


if __name__ == "__main__":
    main()
