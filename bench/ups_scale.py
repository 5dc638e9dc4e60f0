"""UPS score-cache scale benchmark: is the bookkeeping negligible next to model inference at 1M tasks?

Builds a synthetic cache of ``--n`` scored tasks, then times one iteration's worth of cache work: sync with a
pool where 1% of tasks were annotated/deleted and 1% imported, the UPS select, the update of the selected
(rescored) subset, save and load. Memory: the cache's column bytes (bytes/task) and the tracemalloc peak of
select + update (numpy reports its buffers to tracemalloc). Prints a table and writes JSON.

    python bench/ups_scale.py --n 1000000 --gamma 0.1 --t 0.01 --out bench/out/ups_scale.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from albackend.algorithms.ups.cache import ScoreCache  # noqa: E402
from albackend.algorithms.ups.sampler import expected_kept_fraction  # noqa: E402


def build_cache(n: int, rng: np.random.Generator) -> tuple[ScoreCache, np.ndarray]:
    """A cache of n scored tasks with gappy ids (as in a real LS project) and 5 model versions."""
    ids = np.sort(rng.choice(np.int64(3 * n), size=n, replace=False)).astype(np.int64)
    cache = ScoreCache.empty()
    cache.sync_pool(ids)
    for it in range(5):  # scores from several past iterations, as UPS leaves them
        part = ids if it == 0 else ids[rng.random(n) < 0.11]
        cache.update(part, rng.random(part.size).astype(np.float32), iteration=it, model_version=f"v{it}")
    return cache, ids


def best_of(repeats: int, fn: Callable[[], object]) -> tuple[float, object]:
    """Minimum wall time over repeats (the least-disturbed run on a shared machine) and the last result."""
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="number of unlabeled tasks")
    ap.add_argument("--gamma", type=float, default=0.1)
    ap.add_argument("--t", type=float, default=0.01, help="UPS temperature")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("bench/out/ups_scale.json"))
    args = ap.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    base, ids = build_cache(args.n, rng)
    build_s = time.perf_counter() - t0

    # New pool: 1% of tasks gone (annotated / deleted), 1% new ones imported.
    k = max(1, args.n // 100)
    gone = rng.choice(args.n, size=k, replace=False)
    pool = np.concatenate([np.delete(ids, gone), 3 * args.n + np.arange(k, dtype=np.int64)])
    rng.shuffle(pool)  # LS does not hand ids back sorted

    def fresh() -> ScoreCache:
        return ScoreCache(base.task_ids.copy(), base.uncertainty.copy(), base.iteration.copy(),
                          base.version_idx.copy(), list(base.versions))

    def do_sync() -> tuple[int, int]:
        return fresh().sync_pool(pool)

    t_copy, _ = best_of(args.repeats, fresh)
    t_sync, (added, removed) = best_of(args.repeats, do_sync)
    t_sync = max(0.0, t_sync - t_copy)  # exclude the copy of the base cache
    cache = fresh()
    cache.sync_pool(pool)
    unscored = float(np.isnan(cache.uncertainty).mean())  # new tasks: always kept on top of the UPS share
    expected = unscored + (1.0 - unscored) * expected_kept_fraction(args.gamma, args.t)

    t_select, selected = best_of(args.repeats, lambda: cache.select(args.gamma, args.t,
                                                                      np.random.default_rng(1), full=False))
    new_scores = rng.random(selected.size).astype(np.float32)

    def do_update() -> None:
        cache.update(selected, new_scores, iteration=5, model_version="v5")

    t_update, _ = best_of(args.repeats, do_update)
    t_full, full = best_of(args.repeats, lambda: cache.select(args.gamma, args.t, rng, full=True))

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ups_cache.npz"
        t_save, _ = best_of(args.repeats, lambda: cache.save(path))
        file_bytes = path.stat().st_size
        t_load, loaded = best_of(args.repeats, lambda: ScoreCache.load(path))
        assert len(loaded) == len(cache)

    # Memory: tracemalloc on a separate run, so its overhead does not distort the timings above.
    mem_cache = fresh()
    mem_cache.sync_pool(pool)
    tracemalloc.start()
    sel = mem_cache.select(args.gamma, args.t, np.random.default_rng(1), full=False)
    mem_cache.update(sel, rng.random(sel.size).astype(np.float32), iteration=5, model_version="v5")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    result = {
        "n_tasks": args.n,
        "gamma": args.gamma,
        "temperature": args.t,
        "build_s": build_s,
        "sync_pool_s": t_sync,
        "sync_added": int(added),
        "sync_removed": int(removed),
        "select_s": t_select,
        "selected": int(selected.size),
        "selected_fraction": selected.size / len(cache),
        "unscored_fraction": unscored,
        "ups_formula_fraction": expected_kept_fraction(args.gamma, args.t),
        "expected_fraction": expected,
        "update_s": t_update,
        "select_plus_update_s": t_select + t_update,
        "select_full_s": t_full,
        "full_selected": int(full.size),
        "save_s": t_save,
        "load_s": t_load,
        "file_bytes": int(file_bytes),
        "cache_nbytes": int(cache.nbytes),
        "bytes_per_task": cache.nbytes / len(cache),
        "select_update_peak_bytes": int(peak),
        "repeats": args.repeats,
        "timing": "min over repeats",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
    }

    rows = [
        ("tasks", f"{args.n:,}"),
        ("sync_pool (1% gone, 1% new)", f"{t_sync * 1e3:8.1f} ms  (+{added:,} / -{removed:,})"),
        ("select (UPS)", f"{t_select * 1e3:8.1f} ms  ({selected.size:,} = {result['selected_fraction']:.4f}, "
                         f"expected {expected:.4f} = {unscored:.2f} new + UPS share)"),
        ("update (selected subset)", f"{t_update * 1e3:8.1f} ms"),
        ("select + update", f"{(t_select + t_update) * 1e3:8.1f} ms"),
        ("select (full pool)", f"{t_full * 1e3:8.1f} ms"),
        ("save (atomic, fsync)", f"{t_save * 1e3:8.1f} ms  ({file_bytes / 2**20:.1f} MiB)"),
        ("load", f"{t_load * 1e3:8.1f} ms"),
        ("cache nbytes", f"{cache.nbytes / 2**20:8.1f} MiB  ({result['bytes_per_task']:.2f} B/task)"),
        ("select+update tracemalloc peak", f"{peak / 2**20:8.1f} MiB"),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
