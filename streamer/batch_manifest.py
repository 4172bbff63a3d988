"""What ``smplstream batch`` keeps on disk under ``--out``: each finished video's folder,
published whole (written under a temporary name, then renamed) with a ``batch.json`` that
says which input and settings made it, and ``manifest.jsonl``, one line per video.

A video counts as done when its folder holds a ``batch.json`` whose key (content hash and
settings) is the one asked for now; a half-written result never carries that name.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

from .atomic_write import fsync_directory, write_bytes_atomic
from .errors import ConfigError

MANIFEST = "manifest.jsonl"
MARKER = "batch.json"
PARTIAL = ".batch-partial"  # results being written, and old ones being replaced
#: Parts of the run plan that change the speed, not the result: not part of the key.
SPEED_ONLY = ("threads",)


def settings_key(plan: dict, outputs: dict) -> str:
    """A short hash of what makes the outputs: the resolved run plan (less its thread
    counts) and the output options (formats, camera file content ...)."""
    plan = {k: ({kk: vv for kk, vv in v.items() if kk not in SPEED_ONLY} if isinstance(v, dict) else v)
            for k, v in plan.items()}
    text = json.dumps({"plan": plan, "outputs": outputs}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def job_key(content: str, settings: str) -> str:
    """The key of one video under one set of settings."""
    return hashlib.sha256(f"{content}|{settings}".encode()).hexdigest()[:24]


def file_digest(path: str | None) -> str | None:
    """SHA-256 of a settings file (``--camera``), so that editing it redoes the videos."""
    if path is None:
        return None
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None


def done_record(out: Path, name: str, key: str) -> dict | None:
    """The ``batch.json`` of ``out/name`` if it was made with ``key``, else None."""
    try:
        record = json.loads((out / name / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("key") == key else None


def publish(out: Path, name: str, files: dict[str, bytes], record: dict) -> Path:
    """Write ``files`` (relative path -> bytes) and ``record`` as ``batch.json`` into
    ``out/name`` as one step: all is written and synced under a temporary name first, then
    the folder is renamed into place (an older result of that name is moved aside and
    removed). Returns the folder."""
    staging = out / PARTIAL
    staging.mkdir(parents=True, exist_ok=True)
    tmp = staging / f"{name}.{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    for rel, data in files.items():
        target = (tmp / rel).resolve()
        if tmp.resolve() not in target.parents:
            raise ValueError(f"result file {rel!r} would lie outside its folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    write_bytes_atomic(tmp / MARKER, (json.dumps(record, indent=2) + "\n").encode())
    fsync_directory(tmp)
    final = out / name
    if final.exists():
        old = staging / f"{name}.old.{uuid.uuid4().hex[:12]}"
        os.replace(final, old)
        shutil.rmtree(old, ignore_errors=True)
    os.replace(tmp, final)
    fsync_directory(out)
    return final


def clear_partial(out: Path) -> None:
    """Remove what an interrupted batch left half-written (never counted as done)."""
    shutil.rmtree(out / PARTIAL, ignore_errors=True)


class Manifest:
    """``out/manifest.jsonl``: the latest line of every video, those of earlier batches into
    the same folder included; rewritten whole (atomically) after each video."""

    def __init__(self, out: Path) -> None:
        self.path = out / MANIFEST
        self.lines: dict[str, dict] = {}
        try:
            for text in self.path.read_text().splitlines():
                try:
                    line = json.loads(text)
                except ValueError:
                    continue  # a damaged line: the video is found done (or not) from its folder
                if isinstance(line, dict) and isinstance(line.get("video"), str):
                    self.lines[line["video"]] = line
        except OSError:
            pass

    def set(self, line: dict) -> None:
        """Record ``line`` (it has ``video``) and write the file."""
        self.lines[line["video"]] = line
        write_bytes_atomic(self.path, "".join(json.dumps(v) + "\n" for v in self.lines.values()).encode())
