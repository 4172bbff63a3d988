"""BVH reader: hierarchy (offsets, per-joint channel orders), motion block, forward kinematics.

BVH has no unit field: the caller says how many metres one file unit is (``unit_m``; 0.01 for
centimetres, which both CMU BVH archives use). Rotation channels are applied in the order they
are listed (``Zrotation Xrotation Yrotation`` means R = Rz @ Rx @ Ry, the BVH convention), and a
joint with position channels is placed at its OFFSET plus those values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from engines.mocap.motion import SourceMotion, forward_kinematics

_AXES = {"Xrotation": "X", "Yrotation": "Y", "Zrotation": "Z"}
_POS = {"Xposition": 0, "Yposition": 1, "Zposition": 2}


@dataclass
class BvhHierarchy:
    """The skeleton part of a BVH file. End Sites become joints named ``<parent>_end``."""

    names: list[str]
    parents: np.ndarray
    offsets: np.ndarray  # (J, 3) file units
    channels: list[list[str]]  # per joint, as listed (empty for End Sites)
    channel_start: np.ndarray  # (J,) column of each joint's first channel in the motion block


def _parse_hierarchy(tokens: list[str], path: str) -> tuple[BvhHierarchy, int]:
    names: list[str] = []
    parents: list[int] = []
    offsets: list[list[float]] = []
    channels: list[list[str]] = []
    starts: list[int] = []
    stack: list[int] = []
    ncol = 0
    i = 0
    if not tokens or tokens[0] != "HIERARCHY":
        raise ValueError(f"{path}: not a BVH file (it does not start with HIERARCHY)")
    i = 1
    pending: int | None = None
    while i < len(tokens):
        tok = tokens[i]
        if tok in ("ROOT", "JOINT"):
            name = tokens[i + 1]
            pending = len(names)
            names.append(name)
            parents.append(stack[-1] if stack else -1)
            offsets.append([0.0, 0.0, 0.0]); channels.append([]); starts.append(ncol)
            i += 2
        elif tok == "End":  # "End Site"
            pending = len(names)
            names.append(f"{names[stack[-1]]}_end")
            parents.append(stack[-1])
            offsets.append([0.0, 0.0, 0.0]); channels.append([]); starts.append(ncol)
            i += 2
        elif tok == "{":
            if pending is None:
                raise ValueError(f"{path}: '{{' without a joint before it in HIERARCHY")
            stack.append(pending); pending = None
            i += 1
        elif tok == "}":
            if not stack:
                raise ValueError(f"{path}: unbalanced '}}' in HIERARCHY")
            stack.pop()
            i += 1
        elif tok == "OFFSET":
            offsets[stack[-1]] = [float(v) for v in tokens[i + 1:i + 4]]
            i += 4
        elif tok == "CHANNELS":
            n = int(tokens[i + 1])
            ch = tokens[i + 2:i + 2 + n]
            bad = [c for c in ch if c not in _AXES and c not in _POS]
            if bad:
                raise ValueError(f"{path}: joint {names[stack[-1]]!r} has unknown channels {bad}")
            channels[stack[-1]] = ch
            starts[stack[-1]] = ncol
            ncol += n
            i += 2 + n
        elif tok == "MOTION":
            if stack:
                raise ValueError(f"{path}: HIERARCHY ends with unclosed braces")
            return BvhHierarchy(names, np.array(parents), np.array(offsets, float), channels,
                                np.array(starts)), i
        else:
            raise ValueError(f"{path}: unexpected token {tok!r} in HIERARCHY")
    raise ValueError(f"{path}: no MOTION section")


def read_bvh(path: str | Path, unit_m: float = 0.01, fps: float | None = None,
             skip_frames: int = 0) -> SourceMotion:
    """Read a BVH file and pose every frame.

    Args:
        path: the .bvh file.
        unit_m: metres per file unit (BVH does not say; 0.01 = centimetres).
        fps: frame rate to use instead of the header's ``Frame Time`` (some files carry a wrong
            one, e.g. the CMU salsa clips say 120 fps but are 60 fps).
        skip_frames: frames to drop from the start (e.g. an added T-pose frame 0).

    Returns:
        A :class:`SourceMotion` in metres, the file's world axes.
    """
    path = str(path)
    text = Path(path).read_text(errors="replace")
    head, sep, body = text.partition("MOTION")
    if not sep:
        raise ValueError(f"{path}: no MOTION section; is this a BVH file?")
    hier, _ = _parse_hierarchy(head.split() + ["MOTION"], path)
    m = re.search(r"Frames:\s*(\d+)\s*Frame Time:\s*([0-9.eE+-]+)", body)
    if not m:
        raise ValueError(f"{path}: MOTION section lacks 'Frames:' / 'Frame Time:' lines")
    nframes, frame_time = int(m.group(1)), float(m.group(2))
    ncol = sum(len(c) for c in hier.channels)
    values = np.array(body[m.end():].split(), dtype=float)
    if values.size < nframes * ncol:
        raise ValueError(f"{path}: MOTION has {values.size} numbers, expected {nframes} frames x "
                         f"{ncol} channels = {nframes * ncol}")
    data = values[:nframes * ncol].reshape(nframes, ncol)[skip_frames:]
    if fps is None:
        if frame_time <= 0:
            raise ValueError(f"{path}: Frame Time {frame_time} is not positive; pass fps")
        fps = 1.0 / frame_time
        # "Frame Time" is printed with few digits (0.016667, 0.00833333): snap to the integer
        # rate it stands for when it is that close.
        if abs(fps - round(fps)) < 5e-4 * fps:
            fps = float(round(fps))

    J = len(hier.names)
    T = data.shape[0]
    local = np.broadcast_to(np.eye(3), (T, J, 3, 3)).copy()
    offsets = np.broadcast_to(hier.offsets * unit_m, (T, J, 3)).copy()
    for j, ch in enumerate(hier.channels):
        if not ch:
            continue
        cols = hier.channel_start[j] + np.arange(len(ch))
        rot_idx = [k for k, c in enumerate(ch) if c in _AXES]
        if rot_idx:
            order = "".join(_AXES[ch[k]] for k in rot_idx)  # upper case: intrinsic, R = R1 R2 R3
            local[:, j] = Rotation.from_euler(order, data[:, cols[rot_idx]], degrees=True).as_matrix()
        for k, c in enumerate(ch):
            if c in _POS:
                offsets[:, j, _POS[c]] += data[:, cols[k]] * unit_m
    pos, rot = forward_kinematics(hier.parents, offsets, local)
    rest_pos, rest_rot = forward_kinematics(hier.parents, hier.offsets[None] * unit_m,
                                            np.broadcast_to(np.eye(3), (1, J, 3, 3)))
    return SourceMotion(hier.names, hier.parents, pos, rot, float(fps), rest_pos[0], rest_rot[0],
                        path, {"header_fps": 1.0 / frame_time if frame_time > 0 else None})
