"""Wire format v1: one ZeroMQ multipart message per frame, every person in it.

Parts: ``[topic, header, payload]``.

- ``topic``: ``b"smplstream.v1"`` (subscribers filter on it).
- ``header``: UTF-8 JSON with the schema name and version, sequence number, frame index,
  timestamps, source size, camera, body model and, per person, the track id, score and,
  for each array, its name, dtype, shape, byte offset and byte length in the payload.
- ``payload``: the arrays as raw little-endian bytes, each starting at a multiple of 8.

``docs/wire-format.md`` is the specification; this module is the reference encoder and a
decoder that trusts nothing in the message (see :class:`WireError`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .frames import Frame, Person

TOPIC = b"smplstream.v1"
SCHEMA = "smplstream.frame"
VERSION = 1
ALIGNMENT = 8

# dtype strings on the wire (numpy's notation, always little-endian) -> numpy dtype
WIRE_DTYPES = {
    "<f4": np.dtype("<f4"),
    "<f8": np.dtype("<f8"),
    "<i4": np.dtype("<i4"),
    "<i8": np.dtype("<i8"),
    "<u1": np.dtype("<u1"),
    "<u2": np.dtype("<u2"),
}

# Decoder limits: a message that claims more is rejected before anything is allocated.
MAX_HEADER_BYTES = 1 << 20
MAX_PERSONS = 1024
MAX_ARRAYS_PER_PERSON = 64
MAX_NDIM = 8
MAX_ELEMENTS = 1 << 31  # product of an array's non-zero dimensions (an empty array's shape too)


class WireError(ValueError):
    """A message that is not valid wire v1. The message says which rule it broke."""


@dataclass
class DecodedPerson:
    track_id: int
    score: float
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class DecodedFrame:
    """A decoded message: the header dict and, per person, read-only numpy arrays."""

    header: dict[str, Any]
    persons: list[DecodedPerson]

    @property
    def seq(self) -> int:
        return self.header["seq"]

    @property
    def frame_index(self) -> int:
        return self.header["frame_index"]


def _wire_dtype(array: np.ndarray) -> tuple[str, np.ndarray]:
    dt = array.dtype
    if dt == np.float16:
        array = array.astype(np.float32)
    elif dt == np.bool_ or dt == np.int8:
        array = array.astype(np.uint8)
    elif dt.kind == "u" and dt.itemsize > 2:
        array = array.astype(np.int64)
    elif dt.kind == "i" and dt.itemsize < 4:
        array = array.astype(np.int32)
    array = array.astype(array.dtype.newbyteorder("<"), copy=False)
    code = "<" + array.dtype.str[1:]  # one-byte types print as "|u1"
    if code not in WIRE_DTYPES:
        raise TypeError(f"array of dtype {dt} cannot go on the wire")
    return code, np.ascontiguousarray(array)


def encode_frame(frame: Frame, seq: int, publish_time: float, *, wall_time: float,
                 extra: dict[str, Any] | None = None) -> list[bytes]:
    """Encode ``frame`` as the three parts of a wire v1 message."""
    chunks: list[bytes] = []
    offset = 0
    persons = []
    for person in frame.persons:
        arrays = []
        for name, value in person.arrays.items():
            code, arr = _wire_dtype(np.asarray(value))
            data = arr.tobytes()
            pad = (-offset) % ALIGNMENT
            if pad:
                chunks.append(b"\0" * pad)
                offset += pad
            arrays.append({"name": name, "dtype": code, "shape": list(arr.shape),
                           "offset": offset, "nbytes": len(data)})
            chunks.append(data)
            offset += len(data)
        persons.append({"track_id": int(person.track_id), "score": float(person.score),
                        "arrays": arrays})
    header = {
        "schema": SCHEMA,
        "version": VERSION,
        "seq": seq,
        "frame_index": frame.index,
        "capture_time": frame.capture_time,
        "publish_time": publish_time,
        "publish_wall_time": wall_time,
        "stream_time": frame.stream_time,
        "source_size": list(frame.source_size),
        "payload_bytes": offset,
        "persons": persons,
    }
    if extra:
        header.update(extra)
    if frame.camera_pose is not None:
        header["camera_pose"] = frame.camera_pose
    return [TOPIC, json.dumps(header, separators=(",", ":")).encode("utf-8"), b"".join(chunks)]


def decode_message(parts: list[bytes]) -> DecodedFrame:
    """Decode a wire v1 message, checking every claim it makes against the bytes present.

    Raises :class:`WireError` for anything malformed: wrong part count or topic, a header
    that is not JSON or lacks a field, an unknown dtype, a shape whose size does not match
    its byte length, or an array that reaches outside the payload. Arrays are zero-copy,
    read-only views of the payload.
    """
    if len(parts) != 3:
        raise WireError(f"expected 3 message parts (topic, header, payload), got {len(parts)}")
    topic, raw_header, payload = (bytes(p) if not isinstance(p, bytes) else p for p in parts)
    if topic != TOPIC:
        raise WireError(f"unknown topic {topic[:32]!r}, expected {TOPIC!r}")
    if len(raw_header) > MAX_HEADER_BYTES:
        raise WireError(f"header of {len(raw_header)} bytes exceeds {MAX_HEADER_BYTES}")
    try:
        header = json.loads(raw_header.decode("utf-8"))
    # ValueError also covers integers longer than Python's digit limit (4300 digits).
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise WireError(f"header is not UTF-8 JSON: {exc}") from None
    if not isinstance(header, dict):
        raise WireError("header is not a JSON object")
    if header.get("schema") != SCHEMA:
        raise WireError(f"schema {header.get('schema')!r} is not {SCHEMA!r}")
    if header.get("version") != VERSION:
        raise WireError(f"version {header.get('version')!r} is not supported (this decoder reads {VERSION})")
    for key in ("seq", "frame_index"):
        if not _is_int(header.get(key)):
            raise WireError(f"header field '{key}' must be an integer")
    if header.get("payload_bytes") != len(payload):
        raise WireError(f"payload has {len(payload)} bytes, header says {header.get('payload_bytes')!r}")
    persons_raw = header.get("persons")
    if not isinstance(persons_raw, list):
        raise WireError("header field 'persons' must be a list")
    if len(persons_raw) > MAX_PERSONS:
        raise WireError(f"{len(persons_raw)} persons exceeds the limit of {MAX_PERSONS}")
    persons = [_decode_person(i, p, payload) for i, p in enumerate(persons_raw)]
    return DecodedFrame(header=header, persons=persons)


def _decode_person(i: int, raw: Any, payload: bytes) -> DecodedPerson:
    where = f"persons[{i}]"
    if not isinstance(raw, dict):
        raise WireError(f"{where} is not an object")
    if not _is_int(raw.get("track_id")):
        raise WireError(f"{where}.track_id must be an integer")
    score = raw.get("score")
    if not isinstance(score, (int, float)) or isinstance(score, bool):
        raise WireError(f"{where}.score must be a number")
    arrays_raw = raw.get("arrays")
    if not isinstance(arrays_raw, list):
        raise WireError(f"{where}.arrays must be a list")
    if len(arrays_raw) > MAX_ARRAYS_PER_PERSON:
        raise WireError(f"{where} has {len(arrays_raw)} arrays, limit {MAX_ARRAYS_PER_PERSON}")
    arrays = {}
    for j, spec in enumerate(arrays_raw):
        name, arr = _decode_array(f"{where}.arrays[{j}]", spec, payload)
        arrays[name] = arr
    return DecodedPerson(track_id=raw["track_id"], score=float(score), arrays=arrays)


def _decode_array(where: str, spec: Any, payload: bytes) -> tuple[str, np.ndarray]:
    if not isinstance(spec, dict):
        raise WireError(f"{where} is not an object")
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise WireError(f"{where}.name must be a non-empty string")
    dtype = WIRE_DTYPES.get(spec.get("dtype")) if isinstance(spec.get("dtype"), str) else None
    if dtype is None:
        raise WireError(f"{where}.dtype {spec.get('dtype')!r} is not one of {sorted(WIRE_DTYPES)}")
    shape = spec.get("shape")
    if (not isinstance(shape, list) or len(shape) > MAX_NDIM
            or not all(_is_int(d) and d >= 0 for d in shape)):
        raise WireError(f"{where}.shape must be a list of at most {MAX_NDIM} non-negative integers")
    if math.prod(d for d in shape if d) > MAX_ELEMENTS:
        # Even an empty array (a zero dimension) may not claim more: numpy refuses such shapes.
        raise WireError(f"{where}.shape {shape} claims more than {MAX_ELEMENTS} elements")
    offset, nbytes = spec.get("offset"), spec.get("nbytes")
    if not (_is_int(offset) and _is_int(nbytes) and offset >= 0 and nbytes >= 0):
        raise WireError(f"{where}.offset and .nbytes must be non-negative integers")
    # Python integers do not overflow: a huge claimed shape simply fails this comparison.
    if math.prod(shape) * dtype.itemsize != nbytes:
        raise WireError(f"{where} ({name}): shape {shape} of {dtype.str} is not {nbytes} bytes")
    if offset + nbytes > len(payload):
        raise WireError(f"{where} ({name}): bytes {offset}..{offset + nbytes} lie outside the "
                        f"{len(payload)}-byte payload")
    if nbytes == 0:
        return name, np.empty(shape, dtype=dtype)
    arr = np.frombuffer(payload, dtype=dtype, count=math.prod(shape), offset=offset)
    return name, arr.reshape(shape)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def person_summary(person: DecodedPerson | Person) -> dict[str, Any]:
    """Track id, score and array shapes of a person, for printing."""
    return {"track_id": person.track_id, "score": round(float(person.score), 4),
            "arrays": {k: list(np.shape(v)) for k, v in person.arrays.items()}}
