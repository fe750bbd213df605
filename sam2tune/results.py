"""The results table: one flat row per run, built by scanning ``runs/*/report.json``.

Each run writes its own report atomically, so concurrent writers never lose a row; the table is
cached as Parquet (``.cache/results.parquet``) and refreshed incrementally from the reports that
are new or changed since the cache was written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from sam2tune.record import COLUMNS

__all__ = ["load_results", "iter_reports"]


def iter_reports(results_dir: str | os.PathLike) -> list[Path]:
    """Every run's report.json under ``results_dir``, sorted by run id (time order)."""
    runs = Path(results_dir) / "runs"
    if not runs.is_dir():
        return []
    return sorted(p / "report.json" for p in runs.iterdir() if (p / "report.json").is_file())


def _empty() -> pd.DataFrame:
    return pd.DataFrame(columns=[c.name for c in COLUMNS])


def load_results(results_dir: str | os.PathLike = "results", cache: bool = True) -> pd.DataFrame:
    """Every recorded row under ``results_dir`` (failed runs included), one per run.

    Args:
        results_dir: the folder given as ``results_dir=`` to the runs.
        cache: read / refresh the Parquet cache (a pure function of the reports).

    Returns:
        A DataFrame with the documented columns (``sam2tune.record.COLUMNS``) first.
    """
    root = Path(results_dir)
    reports = iter_reports(root)
    if not reports:
        return _empty()
    stamp = {p.parent.name: p.stat().st_mtime_ns for p in reports}
    cache_pq = root / ".cache" / "results.parquet"
    cache_ix = root / ".cache" / "results.index.json"
    old: pd.DataFrame | None = None
    known: dict[str, int] = {}
    if cache and cache_pq.is_file() and cache_ix.is_file():
        try:
            known = json.loads(cache_ix.read_text())
            old = pd.read_parquet(cache_pq)
        except Exception:  # a damaged cache is rebuilt from the reports
            old, known = None, {}
    if old is not None and known == stamp:
        return old.reset_index(drop=True)
    keep = {rid for rid, m in stamp.items() if known.get(rid) == m} if old is not None else set()
    rows = []
    for p in reports:
        rid = p.parent.name
        if rid in keep:
            continue
        try:
            rows.append(json.loads(p.read_text())["row"])
        except (ValueError, KeyError, OSError):
            stamp.pop(rid)  # unreadable now: not cached as known, so it is retried next time
    new = pd.DataFrame(rows)
    if old is not None and keep:
        df = pd.concat([old[old["run_id"].isin(keep)], new], ignore_index=True)
    else:
        df = new
    cols = [c.name for c in COLUMNS]
    df = df.reindex(columns=cols + [c for c in df.columns if c not in cols])
    df = df.sort_values("run_id", kind="stable").reset_index(drop=True)
    if cache:
        _write_cache(df, stamp, cache_pq, cache_ix)
    return df


def _write_cache(df: pd.DataFrame, stamp: dict[str, int], pq: Path, ix: Path) -> None:
    from sam2tune.paths import atomic_write_text

    try:
        pq.parent.mkdir(parents=True, exist_ok=True)
        tmp = pq.with_name(f".{pq.name}.{os.getpid()}.tmp")
        df.to_parquet(tmp, index=False)
        os.replace(tmp, pq)
        atomic_write_text(ix, json.dumps(stamp))
    except Exception:
        pass  # the cache is an optimisation; the reports are the truth
