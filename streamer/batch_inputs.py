"""What ``smplstream batch`` is asked to process: files, folders, globs and list files of
paths or URLs, expanded into videos with the name of their output folder, and the content
hash that says whether a video was processed already."""

from __future__ import annotations

import glob
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .errors import ConfigError
from .sources import NETWORK_SCHEMES

#: Files a folder is searched for (case-insensitive); a file named on the command line or
#: in a list is taken whatever its suffix.
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts",
                            ".m2ts", ".wmv", ".flv", ".3gp", ".ogv", ".y4m"})
#: A file with one of these suffixes is a list: one path, folder, glob or URL a line.
LIST_SUFFIXES = frozenset({".txt", ".list", ".lst"})
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Video:
    """One video of the batch: ``source`` (an absolute path or a URL, as ``run --source``
    takes it) and ``name``, its folder under ``--out``."""

    source: str
    name: str

    @property
    def is_url(self) -> bool:
        return is_url(self.source)


def is_url(text: str) -> bool:
    """Whether ``text`` is a network address ``run`` can open (``rtsp://``, ``https://`` ...)."""
    return urlsplit(text).scheme.lower() in NETWORK_SCHEMES and "://" in text


def expand_inputs(inputs: list[str]) -> list[Video]:
    """The videos ``inputs`` name, each once, in the order given (a folder's and a glob's
    sorted by path). Raises ConfigError for an input that names nothing."""
    sources: list[str] = []
    for item in inputs:
        sources += _expand(item, base=Path.cwd(), depth=0)
    unique = list(dict.fromkeys(sources))
    if not unique:
        raise ConfigError("batch: the inputs hold no video (give files, folders, globs or a .txt list of paths)")
    return [Video(source, name) for source, name in zip(unique, output_names(unique))]


def _expand(item: str, *, base: Path, depth: int) -> list[str]:
    item = item.strip()
    if is_url(item):
        return [item]
    path = Path(item).expanduser()
    if not path.is_absolute():
        path = base / path
    if path.is_dir():
        return sorted(str(p) for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    if path.is_file():
        if path.suffix.lower() in LIST_SUFFIXES:
            if depth >= 4:
                raise ConfigError(f"batch: {path}: lists nested more than 4 deep (does a list name itself?)")
            return _read_list(path, depth)
        return [str(path.resolve())]
    if glob.has_magic(item):
        found = sorted(str(Path(p).resolve()) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        if not found:
            raise ConfigError(f"batch: {item}: the pattern matches no file")
        return found
    raise ConfigError(f"batch: {item}: no such file, folder or URL")


def _read_list(path: Path, depth: int) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"batch: cannot read the list {path}: {exc}") from None
    out: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            out += _expand(line, base=path.parent, depth=depth + 1)  # relative to the list's folder
        except ConfigError as exc:
            raise ConfigError(f"{exc} (line {number} of {path})") from None
    return out


def output_names(sources: list[str]) -> list[str]:
    """Each source's folder name under ``--out``: its file name without suffix, made safe
    for every file system; names that two sources share get a short hash of the source."""
    stems = [_stem(s) for s in sources]
    counts: dict[str, int] = {}
    for stem in stems:
        counts[stem] = counts.get(stem, 0) + 1
    return [stem if counts[stem] == 1 else f"{stem}-{hashlib.sha256(s.encode()).hexdigest()[:8]}"
            for s, stem in zip(sources, stems)]


def _stem(source: str) -> str:
    if is_url(source):
        parts = urlsplit(source)
        tail = Path(parts.path).stem or parts.hostname or "stream"
    else:
        tail = Path(source).stem
    safe = _UNSAFE.sub("_", tail).lstrip("._-")
    return safe[:100] or "video"


def content_hash(video: Video, block: int = 1 << 20) -> str:
    """SHA-256 of the video file's bytes (``url:`` and the address's hash for a URL, whose
    content cannot be read ahead). Raises OSError for a file that cannot be read."""
    if video.is_url:
        return "url:" + hashlib.sha256(video.source.encode()).hexdigest()
    digest = hashlib.sha256()
    with open(video.source, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def probe(video: Video) -> tuple[int | None, float | None]:
    """The number of frames and the frame rate the container announces (for the progress
    bar and the manifest), None where it does not say."""
    if video.is_url:
        return None, None
    try:
        import av

        with av.open(video.source) as container:
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            return stream.frames or None, round(float(rate), 3) if rate else None
    except Exception:  # noqa: BLE001 - a file that cannot be probed fails later, in its task
        return None, None
