"""On-disk cache of compiled engines.

An engine is valid only for the exact model, input shapes, precision, library versions and
GPU it was built for. :func:`cache_key` hashes all of them; the file name carries the hash,
so any change (new weights, another profile, a torch-tensorrt upgrade, another GPU) misses
the cache and the engine is rebuilt. A JSON file beside each engine lists the key's fields
for people reading the cache folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def cache_dir() -> Path:
    """``$SMPLSTREAM_CACHE`` if set, else ``~/.cache/smplstream/engines``."""
    env = os.environ.get("SMPLSTREAM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "smplstream" / "engines"


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def library_versions() -> dict[str, str]:
    """Versions that change what a compiled engine contains (absent ones read ``none``)."""
    import torch

    versions = {"torch": torch.__version__, "cuda": str(torch.version.cuda), "torch_tensorrt": "none",
                "tensorrt": "none"}
    try:
        import torch_tensorrt

        versions["torch_tensorrt"] = torch_tensorrt.__version__
    except ImportError:
        pass
    try:
        import tensorrt

        versions["tensorrt"] = tensorrt.__version__
    except ImportError:
        pass
    return versions


def gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "none"


def cache_fields(model_sha256: str, shapes: dict, precision: str, *, versions: dict[str, str] | None = None,
                 gpu: str | None = None, extra: dict | None = None) -> dict:
    """Everything the compiled engine depends on, as a JSON-able dict."""
    return {
        "model_sha256": model_sha256,
        "shapes": {k: [list(s) for s in v] if isinstance(v, (tuple, list)) and v and isinstance(v[0], (tuple, list))
                   else list(v) for k, v in sorted(shapes.items())},
        "precision": precision,
        "versions": dict(sorted((versions if versions is not None else library_versions()).items())),
        "gpu": gpu if gpu is not None else gpu_name(),
        **({"extra": extra} if extra else {}),
    }


def cache_key(fields: dict) -> str:
    """A stable hash of :func:`cache_fields` (order-independent)."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def cache_path(name: str, fields: dict, suffix: str = ".ep", directory: Path | None = None) -> Path:
    """Where the engine for ``fields`` lives: ``<dir>/<name>-<key[:16]><suffix>``."""
    return (directory or cache_dir()) / f"{name}-{cache_key(fields)[:16]}{suffix}"


def write_fields(path: Path, fields: dict) -> None:
    path.with_suffix(".json").write_text(json.dumps(fields, indent=2, sort_keys=True) + "\n")
