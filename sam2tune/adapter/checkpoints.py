"""Official SAM 2 checkpoints: the download cache, resolution, hashing and loading."""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from sam2tune.errors import InputError
from sam2tune.paths import atomic_write, atomic_write_json, cache_dir

if TYPE_CHECKING:
    import torch

    from sam2tune.config.schema import ModelConfig

__all__ = ["resolve_checkpoint", "sha256_file", "load_state_dict", "download", "DownloadError"]


class DownloadError(RuntimeError):
    """A checkpoint could not be fetched (no network, HTTP error)."""


def checkpoint_dir(cache_root: Path) -> Path:
    """Where downloaded official checkpoints are kept: ``<cache_root>/checkpoints``."""
    return Path(cache_root) / "checkpoints"


def resolve_checkpoint(model: ModelConfig, cache_root: Path) -> Path | None:
    """``model.checkpoint`` if given (it must exist), else the downloaded official file, else
    None (random-init)."""
    if model.checkpoint:
        p = Path(model.checkpoint).expanduser()
        if not p.is_file():
            raise InputError(f"model.checkpoint: no such file: {str(p)!r}")
        return p
    p = checkpoint_dir(cache_root) / model.checkpoint_name
    return p if p.is_file() else None


def sha256_file(path: Path, cache_root: Path | None = None) -> str:
    """sha256 of a file, remembered by (path, size, mtime) so a 900 MB checkpoint is hashed
    once."""
    st = path.stat()
    key = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    memo = Path(cache_root) / "sha256.json" if cache_root else None
    known: dict[str, str] = {}
    if memo and memo.is_file():
        try:
            known = json.loads(memo.read_text())
        except ValueError:
            known = {}
    if key in known:
        return known[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    if memo:
        known[key] = digest
        try:
            atomic_write_json(memo, known)
        except OSError:
            pass
    return digest


def load_state_dict(module: torch.nn.Module, path: Path, model_name: str) -> str:
    """Load Meta's checkpoint format (``{"model": state_dict}``) with ``weights_only=True``.

    Returns:
        The weights label ``sha256:<hex>``.

    Raises:
        InputError: the file is not a SAM 2 checkpoint or does not match ``model_name``.
    """
    import torch

    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise InputError(f"model.checkpoint: cannot load {str(path)!r}: {e}") from None
    if not isinstance(sd, dict) or "model" not in sd:
        raise InputError(f"model.checkpoint: {str(path)!r} has no 'model' state dict")
    try:
        missing, unexpected = module.load_state_dict(sd["model"], strict=False)
    except RuntimeError as e:
        first = str(e).splitlines()[1:2] or [str(e)]
        raise InputError(
            f"model.checkpoint: {path.name} does not match model {model_name} ({first[0].strip()})"
        ) from None
    if missing or unexpected:
        raise InputError(
            f"model.checkpoint: {path.name} does not match model {model_name} "
            f"({len(missing)} missing, {len(unexpected)} unexpected keys, e.g. "
            f"{(list(missing) + list(unexpected))[0]})"
        )
    # the hash's memo lives in sam2tune's cache, never beside the user's checkpoint
    return "sha256:" + sha256_file(path, cache_dir())


def download(model: ModelConfig, cache_root: Path, timeout_s: float = 30.0) -> Path:
    """Fetch ``model``'s official checkpoint into the cache (atomically) and return its path.

    Raises:
        DownloadError: with a one-line reason (no network, HTTP error).
    """
    dest = checkpoint_dir(cache_root) / model.checkpoint_name
    if dest.is_file():
        return dest

    def fetch(tmp: Path) -> None:
        try:
            with (
                open(tmp, "wb") as f,
                urllib.request.urlopen(model.checkpoint_url, timeout=timeout_s) as r,
            ):
                for chunk in iter(lambda: r.read(1 << 20), b""):
                    f.write(chunk)
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            reason = getattr(e, "reason", None) or e
            raise DownloadError(
                f"cannot download {model.checkpoint_url} ({reason}); without network, fetch it "
                f"elsewhere and copy it to {dest} or pass model.checkpoint=PATH"
            ) from None

    atomic_write(dest, fetch, suffix=".part")
    return dest
