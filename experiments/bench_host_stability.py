"""Host RSS of one and the same run, repeated: idle vs under load, with the run process's fixed
allocator settings (sam2tune's default) vs glibc's defaults. Prints the run-to-run spread
(max - min over repeats, and relative to the median) side by side.

Load = two busy processes (multi-threaded matrix products) started beside the run. Run it on an
otherwise idle machine (about 6 minutes on a 2-core CPU):

    .venv/bin/python experiments/bench_host_stability.py --repeats 3
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import tempfile
import time

from sam2tune.config import process
from sam2tune.config.store import compose_run
from sam2tune.runner import launcher


def _burn(stop) -> None:
    import numpy as np

    a = np.random.rand(600, 600)
    while not stop.is_set():
        a = (a @ a) / 600.0


def _runs(overrides: list[str], repeats: int, loaded: bool) -> list[int]:
    out = []
    stop = mp.Event()
    procs = [mp.Process(target=_burn, args=(stop,)) for _ in range(2 if loaded else 0)]
    for p in procs:
        p.start()
    try:
        for _ in range(repeats):
            row = launcher.run_isolated(compose_run(overrides)).row
            assert row["status"] == "ok", row["error"]
            out.append(int(row["peak_host_rss_bytes"]))
    finally:
        stop.set()
        for p in procs:
            p.join()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--frames", type=int, default=24)
    a = ap.parse_args()
    results = tempfile.mkdtemp(prefix="sam2tune-hoststab-")
    overrides = [
        "device=cpu",
        f"model.image_size={a.image_size}",
        f"video.num_frames={a.frames}",
        "video.num_objects=2",
        "probe.reference=false",
        f"results_dir={results}",
    ]
    fixed = dict(process.RUN_ALLOCATOR_ENV)
    table = []
    for alloc in ("fixed", "glibc default"):
        process.RUN_ALLOCATOR_ENV.clear()
        if alloc == "fixed":
            process.RUN_ALLOCATOR_ENV.update(fixed)
        for loaded in (False, True):
            t0 = time.perf_counter()
            v = _runs(overrides, a.repeats, loaded)
            table.append((alloc, "loaded" if loaded else "idle", v, time.perf_counter() - t0))
    process.RUN_ALLOCATOR_ENV.update(fixed)
    print(
        f"peak host RSS of one run ({a.image_size} px, {a.frames} frames, 2 objects, CPU), "
        f"{a.repeats} repeats each [measured, ru_maxrss]; MiB = 2^20 bytes"
    )
    med_idle = {}
    for alloc, cond, v, secs in table:
        med = statistics.median(v)
        if cond == "idle":
            med_idle[alloc] = med
        shift = (med - med_idle[alloc]) / med_idle[alloc]
        print(
            f"  allocator {alloc:13s} {cond:6s}: median {med / 2**20:8.1f} MiB, spread "
            f"{(max(v) - min(v)) / 2**20:6.1f} MiB ({(max(v) - min(v)) / med:.1%}), "
            f"median vs idle {shift:+.1%}  ({secs:.0f} s)"
        )


if __name__ == "__main__":
    main()
