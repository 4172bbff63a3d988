"""Reading and writing small parameter files: YAML/XML through ``cv2.FileStorage``, JSON through ``json``.

YAML written here is plain OpenCV FileStorage output (matrices as ``!!opencv-matrix``), so
``cv2.FileStorage`` in C++, Python or any OpenCV version reads it. JSON is plain JSON
(matrices as nested lists) so any language reads it without OpenCV; matrices written by
``cv2.FileStorage`` in its JSON flavour (``{"type_id": "opencv-matrix", ...}``) are accepted too.

Every error is a :class:`FileFormatError` whose one-line message names the file and field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np


class FileFormatError(ValueError):
    """A parameter file that cannot be read; the message names the file and the field."""


YAML_SUFFIXES = (".yaml", ".yml")
XML_SUFFIXES = (".xml",)
JSON_SUFFIXES = (".json",)


def file_format(path: str | Path) -> str:
    """``"yaml"``, ``"xml"`` or ``"json"`` from the file suffix; other suffixes are an error."""
    suffix = Path(path).suffix.lower()
    if suffix in YAML_SUFFIXES:
        return "yaml"
    if suffix in XML_SUFFIXES:
        return "xml"
    if suffix in JSON_SUFFIXES:
        return "json"
    raise FileFormatError(f"{path}: unknown file type {suffix!r}; use .yaml, .yml, .json or .xml")


def read_fields(path: str | Path) -> dict[str, Any]:
    """Top-level fields of a YAML/XML/JSON file as Python values.

    Matrices come back as 2D float arrays, sequences of numbers as 1D float arrays (nested
    sequences as 2D), strings as ``str``, numbers as ``int``/``float``, maps as ``dict``.
    """
    path = Path(path)
    fmt = file_format(path)
    if not path.is_file():
        raise FileFormatError(f"{path}: file not found")
    if fmt == "json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise FileFormatError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(data, dict):
            raise FileFormatError(f"{path}: the top level must be an object of fields")
        return {k: _from_json(v, f"{path}: {k}") for k, v in data.items()}
    try:
        fs = cv2.FileStorage(str(path), cv2.FileStorage_READ)
    except (cv2.error, SystemError) as e:
        raise FileFormatError(f"{path}: cannot parse {fmt.upper()} ({_cv_message(e)})") from None
    try:
        if not fs.isOpened():
            raise FileFormatError(f"{path}: cannot parse {fmt.upper()}")
        root = fs.root()
        if not root.isMap():
            raise FileFormatError(f"{path}: the top level must be a map of fields")
        return {k: _from_node(root.getNode(k), f"{path}: {k}") for k in root.keys()}
    finally:
        fs.release()


def write_fields(path: str | Path, fields: dict[str, Any], comment: str | None = None) -> None:
    """Write top-level ``fields`` (str, int, float, bool, arrays, lists of numbers) to ``path``."""
    path = Path(path)
    fmt = file_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "json":
        # one field per line, matrices compact: readable and diff-friendly
        lines = [f"  {json.dumps(k)}: {json.dumps(_to_json(v))}" for k, v in fields.items()]
        path.write_text("{\n" + ",\n".join(lines) + "\n}\n", encoding="utf-8")
        return
    fs = cv2.FileStorage(str(path), cv2.FileStorage_WRITE)
    if not fs.isOpened():
        raise FileFormatError(f"{path}: cannot open for writing")
    try:
        if comment and fmt == "yaml":
            for line in comment.splitlines():
                fs.writeComment(line)
        for k, v in fields.items():
            if isinstance(v, (bool, np.bool_)):
                fs.write(k, int(v))
            elif isinstance(v, (int, np.integer)):
                fs.write(k, int(v))
            elif isinstance(v, (float, np.floating)):
                fs.write(k, float(v))
            elif isinstance(v, str):
                fs.write(k, v)
            else:
                arr = np.asarray(v, dtype=np.float64)
                if arr.ndim == 1:
                    arr = arr.reshape(1, -1)
                elif arr.ndim != 2:
                    raise FileFormatError(f"{path}: {k}: cannot write a {arr.ndim}-D array")
                if arr.size == 0:  # FileStorage writes empty matrices as empty maps; keep a shape
                    arr = np.zeros((1, 0))
                fs.write(k, arr)
    finally:
        fs.release()


# --- field accessors that raise with the field named -------------------------------------------
def require(fields: dict[str, Any], name: str, where: str) -> Any:
    if name not in fields:
        raise FileFormatError(f"{where}: field '{name}' is missing")
    return fields[name]


def get_str(fields: dict[str, Any], name: str, where: str, choices: tuple[str, ...] | None = None) -> str:
    v = require(fields, name, where)
    if not isinstance(v, str):
        raise FileFormatError(f"{where}: {name}: must be a string, got {_describe(v)}")
    if choices is not None and v not in choices:
        raise FileFormatError(f"{where}: {name}: must be one of {', '.join(choices)}, got {v!r}")
    return v


def get_int(fields: dict[str, Any], name: str, where: str, positive: bool = True) -> int:
    v = require(fields, name, where)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not float(v).is_integer():
        raise FileFormatError(f"{where}: {name}: must be an integer, got {_describe(v)}")
    if positive and v <= 0:
        raise FileFormatError(f"{where}: {name}: must be positive, got {int(v)}")
    return int(v)


def get_array(
    fields: dict[str, Any], name: str, where: str, shape: tuple[int, ...] | None = None, flatten: bool = False
) -> np.ndarray:
    """A numeric field as a float64 array; ``shape`` checks the size (a 3x3 may be given flat)."""
    v = require(fields, name, where)
    if isinstance(v, np.ndarray):
        arr = v
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        arr = np.array([float(v)])
    else:
        raise FileFormatError(f"{where}: {name}: must be a matrix or a list of numbers, got {_describe(v)}")
    if flatten:
        arr = arr.reshape(-1)
    if shape is not None:
        if arr.size != int(np.prod(shape)):
            raise FileFormatError(
                f"{where}: {name}: must have {'x'.join(map(str, shape))} values, got shape "
                f"{'x'.join(map(str, arr.shape))}"
            )
        arr = arr.reshape(shape)
    if not np.isfinite(arr).all():
        raise FileFormatError(f"{where}: {name}: contains non-finite values")
    return arr.astype(np.float64)


# --- conversions -----------------------------------------------------------------------------
def _from_node(node: cv2.FileNode, where: str) -> Any:
    if node.isString():
        return node.string()
    if node.isInt():
        return int(node.real())
    if node.isReal():
        return float(node.real())
    if node.isSeq():
        items = [_from_node(node.at(i), where) for i in range(node.size())]
        return _numeric_list(items, where)
    if node.isMap():
        if "data" in node.keys() and "dt" in node.keys():  # !!opencv-matrix
            try:
                m = node.mat()
            except cv2.error as e:
                raise FileFormatError(f"{where}: malformed matrix ({_cv_message(e)})") from None
            if m is None:
                if "rows" in node.keys() and node.getNode("rows").real() * node.getNode("cols").real() == 0:
                    return np.zeros((0,))
                raise FileFormatError(f"{where}: malformed matrix")
            m = np.asarray(m, dtype=np.float64)
            return m.reshape(m.shape[0], -1) if m.ndim >= 2 else m.reshape(1, -1)
        if node.size() == 0:
            return {}
        return {k: _from_node(node.getNode(k), f"{where}.{k}") for k in node.keys()}
    if node.isNone():
        return None
    return None


def _numeric_list(items: list, where: str) -> Any:
    if all(isinstance(i, (int, float)) and not isinstance(i, bool) for i in items):
        return np.array(items, dtype=np.float64)
    if items and all(isinstance(i, np.ndarray) and i.ndim == 1 for i in items):
        if len({i.size for i in items}) != 1:
            raise FileFormatError(f"{where}: rows of a nested list must have equal lengths")
        return np.stack(items).astype(np.float64)
    return items


def _from_json(v: Any, where: str) -> Any:
    if isinstance(v, dict):
        if v.get("type_id") == "opencv-matrix":
            try:
                rows, cols = int(v["rows"]), int(v["cols"])
                return np.asarray(v["data"], dtype=np.float64).reshape(rows, cols)
            except (KeyError, TypeError, ValueError) as e:
                raise FileFormatError(f"{where}: malformed opencv-matrix ({e})") from None
        return {k: _from_json(x, f"{where}.{k}") for k, x in v.items()}
    if isinstance(v, list):
        items = [_from_json(x, where) for x in v]
        if any(x is None for x in items):
            raise FileFormatError(f"{where}: contains null")
        return _numeric_list(items, where)
    return v


def _to_json(v: Any) -> Any:
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v)
    if isinstance(v, str):
        return v
    return np.asarray(v, dtype=np.float64).tolist()


def _describe(v: Any) -> str:
    if isinstance(v, np.ndarray):
        return f"an array of shape {'x'.join(map(str, v.shape))}"
    if isinstance(v, dict):
        return "a map"
    if isinstance(v, list):
        return "a list"
    return repr(v)


def _cv_message(e: BaseException) -> str:
    """The informative part of a cv2 error, on one line."""
    cause = e.__cause__ or e.__context__ or e
    msg = str(cause) or str(e)
    for line in msg.splitlines():
        if "error:" in line:
            msg = line.split("error:", 1)[1].strip()
            break
    return " ".join(msg.split())[:200] or type(e).__name__
