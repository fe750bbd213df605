"""The results table: one flat row per run, built by scanning ``runs/*/report.json``.

Each run writes its own report atomically, so concurrent writers never lose a row; the table is
cached as Parquet (``.cache/results.parquet``) and refreshed incrementally from the reports that
are new or changed since the cache was written.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from sam2tune.errors import InputError
from sam2tune.record import COLUMNS, STATUSES
from sam2tune.stale import stale_runs

__all__ = [
    "load_results",
    "iter_reports",
    "InvalidRecordWarning",
    "InvalidRecordError",
    "StaleRunWarning",
    "NotAResultsDir",
]


class InvalidRecordWarning(UserWarning):
    """A run's report.json could not be read or is not a valid record (it is left out)."""


class InvalidRecordError(ValueError):
    """``load_results(strict=True)`` met a report.json that is not a valid record."""


def check_record(d: Any) -> dict[str, Any]:
    """The row of a parsed report.json, or ValueError saying what is wrong with it."""
    if not isinstance(d, dict) or not isinstance(d.get("row"), dict):
        raise ValueError("no 'row' object")
    row = d["row"]
    for key in ("run_id", "config_hash", "status"):
        if not row.get(key):
            raise ValueError(f"row has no {key!r}")
    if row["status"] not in STATUSES:
        raise ValueError(f"row status {row['status']!r} is not one of {', '.join(STATUSES)}")
    return row


def iter_reports(results_dir: str | os.PathLike) -> list[Path]:
    """Every run's report.json under ``results_dir``, sorted by run id (time order)."""
    runs = Path(results_dir) / "runs"
    if not runs.is_dir():
        return []
    return sorted(p / "report.json" for p in runs.iterdir() if (p / "report.json").is_file())


def _empty() -> pd.DataFrame:
    return pd.DataFrame(columns=[c.name for c in COLUMNS])


def load_results(
    results_dir: str | os.PathLike = "results", cache: bool = True, strict: bool = False
) -> pd.DataFrame:
    """Every recorded row under ``results_dir`` (failed runs included), one per run.

    Args:
        results_dir: the folder given as ``results_dir=`` to the runs (it must exist).
        cache: read / refresh the Parquet cache (a pure function of the reports).
        strict: raise :class:`InvalidRecordError` on an unreadable or invalid report.json
            instead of leaving it out with an :class:`InvalidRecordWarning` naming its path.

    Returns:
        A DataFrame with the documented columns (``sam2tune.record.COLUMNS``) first;
        ``df.attrs["invalid_records"]`` lists the reports left out (path and reason).

    Raises:
        FileNotFoundError: ``results_dir`` does not exist.
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"results_dir: {str(root)!r} does not exist or is not a folder")
    _check_root(root)
    invalid = _unreadable_runs(root / "runs")
    stale = stale_runs(root)
    reports = iter_reports(root)
    if not reports:
        df = _empty()
        return _finish(df, invalid, strict, stale)
    stamp = {p.parent.name: p.stat().st_mtime_ns for p in reports}
    cache_pq = root / ".cache" / "results.parquet"
    cache_ix = root / ".cache" / "results.index.json"
    old, known = _read_cache(cache_pq, cache_ix) if cache else (None, {})
    if old is not None and known == stamp:
        df = old.reset_index(drop=True)
        return _finish(df, invalid, strict, stale)
    keep = {rid for rid, m in stamp.items() if known.get(rid) == m} if old is not None else set()
    rows = []
    for p in reports:
        rid = p.parent.name
        if rid in keep:
            continue
        try:
            rows.append(check_record(json.loads(p.read_text())))
        except (ValueError, OSError) as e:
            stamp.pop(rid)  # unreadable now: not cached as known, so it is retried next time
            invalid.append((str(p), str(e).splitlines()[0] if str(e) else type(e).__name__))
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
    return _finish(df, invalid, strict, stale)


class StaleRunWarning(UserWarning):
    """In-flight run folders (``.tmp/<id>``) whose process is gone: removed by the next sweep."""


class NotAResultsDir(InputError):
    """``load_results`` was pointed at a run's folder, at ``runs/`` itself, or at a file."""


def _check_root(root: Path) -> None:
    """A results dir, not one of its parts (those would read as 0 rows without a word)."""
    hint = "give the results dir (the folder given as results_dir= to the runs)"
    if (root / "report.json").exists() or (root / "config.json").is_file():
        raise NotAResultsDir(f"results_dir: {str(root)!r} is one run's folder; {hint}")
    if root.name == "runs" and any((d / "report.json").exists() for d in root.iterdir()):
        raise NotAResultsDir(
            f"results_dir: {str(root)!r} is the runs/ folder itself; give its parent"
        )
    if (root / "runs").exists() and not (root / "runs").is_dir():
        raise NotAResultsDir(f"results_dir: {str(root / 'runs')!r} is a file, not a folder")


def _unreadable_runs(runs: Path) -> list[tuple[str, str]]:
    """Run folders without a readable report.json file (a config.json and no report, or a
    report.json that is a folder)."""
    out = []
    for d in sorted(runs.iterdir()) if runs.is_dir() else []:
        rep = d / "report.json"
        if not d.is_dir():
            continue
        if rep.is_dir():
            out.append((str(rep), "a folder, not a file"))
        elif not rep.exists() and (d / "config.json").is_file():
            out.append((str(rep), "missing (config.json without a report)"))
    return out


def _finish(
    df: pd.DataFrame, invalid: list[tuple[str, str]], strict: bool,
    stale: list[Path] | None = None,
) -> pd.DataFrame:
    # rows written before knobs.stream_prefetch existed decoded frames in the loop: 0, not null
    if len(df):
        col = df["stream_prefetch"] if "stream_prefetch" in df else pd.Series(0, index=df.index)
        df["stream_prefetch"] = col.fillna(0).astype(int)
        # rows written before impl= existed ran Meta's sam2, which caches one frame's features
        df["impl"] = df["impl"].fillna("sam2") if "impl" in df else "sam2"
        vfc = df["vision_features_cache"] if "vision_features_cache" in df else None
        df["vision_features_cache"] = 1 if vfc is None else vfc.fillna(1).astype(int)
        ob = df["object_batch"] if "object_batch" in df else None  # before the knob: 1
        df["object_batch"] = 1 if ob is None else ob.fillna(1).astype(int)
    _report_invalid(df, invalid, strict)
    df.attrs["stale_runs"] = [str(p) for p in stale or []]
    if stale:
        warnings.warn(
            f"{len(stale)} in-flight run folder(s) whose process is gone (e.g. {stale[0]}): "
            "no record; the next sweep into this results dir removes them",
            StaleRunWarning,
            stacklevel=3,
        )
    return df


def _read_cache(pq: Path, ix: Path) -> tuple[pd.DataFrame | None, dict[str, int]]:
    """The cached table and the report stamps it was built from (none if absent or damaged:
    the cache is a pure function of the reports, so it is rebuilt)."""
    if not (pq.is_file() and ix.is_file()):
        return None, {}
    try:
        return pd.read_parquet(pq), json.loads(ix.read_text())
    except Exception:  # a damaged cache is rebuilt from the reports
        return None, {}


def _report_invalid(df: pd.DataFrame, invalid: list[tuple[str, str]], strict: bool) -> None:
    df.attrs["invalid_records"] = [{"path": p, "reason": r} for p, r in invalid]
    for path, reason in invalid:
        if strict:
            raise InvalidRecordError(f"{path}: not a valid run record ({reason})")
        warnings.warn(
            f"{path}: not a valid run record ({reason}); left out", InvalidRecordWarning,
            stacklevel=3,
        )


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
