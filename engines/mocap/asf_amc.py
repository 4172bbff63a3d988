"""ASF/AMC reader (Acclaim skeleton + motion, as written by Vicon for CMU and HDM05).

Conventions, read from the files rather than assumed:

* ``:units length L``: lengths and root translations are in units of 1/L inch (the Acclaim/CMU
  convention: ``length 0.45`` means a file unit is 1/0.45 inch = 0.0564 m). ``angle deg|rad``
  is the unit of the ASF's angles; the AMC's own ``:DEGREES``/``:RADIANS`` line wins for motion.
* ``axis ax ay az ORDER`` gives the bone's local frame C as rotations applied in ORDER
  (``XYZ``: about x first, so C = Rz @ Ry @ Rx); ``dof`` lists the bone's AMC values and the
  order their rotations are applied in. The root's ``order`` lists its AMC values (TX TY TZ
  RX RY RZ, any order) and ``axis`` the order of its initial ``orientation``.
* Forward kinematics (the Acclaim definition): the bone's motion M acts in its local frame,
  so its world rotation is G = G_parent @ C @ M @ C^-1 and its end sits at
  start + G @ (direction * length).

The motion comes back as one node for the root and one node per bone placed at the bone's end,
carrying the bone's world rotation G.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from engines.mocap.motion import SourceMotion

INCH_M = 0.0254


@dataclass
class AsfBone:
    name: str
    direction: np.ndarray
    length: float
    axis: np.ndarray  # (3,) angles in the ASF's angle unit
    axis_order: str
    dofs: list[str] = field(default_factory=list)


@dataclass
class AsfSkeleton:
    """A parsed ASF file: units, root definition, bones and their hierarchy."""

    length_unit: float  # the ":units length" value
    angle_unit: str  # "deg" or "rad"
    root_order: list[str]
    root_axis_order: str
    root_position: np.ndarray
    root_orientation: np.ndarray
    bones: dict[str, AsfBone]
    children: dict[str, list[str]]
    path: str = ""

    @property
    def metres_per_unit(self) -> float:
        return INCH_M / self.length_unit

    def bone_order(self) -> list[str]:
        """Bones with parents before children (depth first from the root)."""
        out: list[str] = []
        stack = list(reversed(self.children.get("root", [])))
        while stack:
            b = stack.pop()
            out.append(b)
            stack.extend(reversed(self.children.get(b, [])))
        return out

    def parent_of(self) -> dict[str, str]:
        return {c: p for p, cs in self.children.items() for c in cs}


def _euler(order: str, angles: np.ndarray, degrees: bool) -> np.ndarray:
    """Rotations about ``order``'s axes applied first to last (extrinsic): (N, 3, 3)."""
    angles = np.atleast_2d(angles)
    if not order:
        return np.broadcast_to(np.eye(3), (angles.shape[0], 3, 3)).copy()
    return Rotation.from_euler(order.lower(), angles, degrees=degrees).as_matrix().reshape(-1, 3, 3)


def read_asf(path: str | Path) -> AsfSkeleton:
    """Parse an ASF skeleton file (units, root, bone data, hierarchy)."""
    path = str(path)
    text = Path(path).read_text(errors="replace")
    sections = re.split(r"^\s*:(\w+)", text, flags=re.M)
    sec = {sections[i].lower(): sections[i + 1] for i in range(1, len(sections) - 1, 2)}
    for need in ("units", "root", "bonedata", "hierarchy"):
        if need not in sec:
            raise ValueError(f"{path}: ASF section ':{need}' missing")
    units = dict(line.split()[:2] for line in sec["units"].splitlines() if len(line.split()) >= 2)
    if "length" not in units:
        raise ValueError(f"{path}: ':units' has no 'length' line; cannot tell the length unit")
    length_unit = float(units["length"])
    angle_unit = units.get("angle", "deg").lower()
    if angle_unit not in ("deg", "rad"):
        raise ValueError(f"{path}: ':units angle {angle_unit}' is neither deg nor rad")
    deg = angle_unit == "deg"

    root = {}
    for line in sec["root"].splitlines():
        parts = line.split()
        if parts:
            root[parts[0].lower()] = parts[1:]
    root_order = [t.upper() for t in root.get("order", "TX TY TZ RX RY RZ".split())]
    root_axis = root.get("axis", ["XYZ"])[0].upper()
    root_pos = np.array([float(v) for v in root.get("position", [0, 0, 0])])
    root_ori = np.array([float(v) for v in root.get("orientation", [0, 0, 0])])

    bones: dict[str, AsfBone] = {}
    for block in re.findall(r"begin(.*?)end", sec["bonedata"], flags=re.S):
        kv: dict[str, list[str]] = {}
        for line in block.splitlines():
            parts = line.split()
            if parts and not parts[0].startswith("("):
                kv[parts[0].lower()] = parts[1:]
        try:
            name = kv["name"][0]
            direction = np.array([float(v) for v in kv["direction"][:3]])
            length = float(kv["length"][0])
            axis = np.array([float(v) for v in kv["axis"][:3]])
            axis_order = kv["axis"][3].upper() if len(kv["axis"]) > 3 else "XYZ"
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"{path}: bone block lacks or garbles a field ({e}): {block.strip()[:80]}")
        dofs = [d.lower() for d in kv.get("dof", [])]
        bad = [d for d in dofs if d not in ("rx", "ry", "rz")]
        if bad:
            raise ValueError(f"{path}: bone {name!r} has dofs {bad}; only rotations rx/ry/rz on "
                             f"bones are supported")
        n = np.linalg.norm(direction)
        bones[name] = AsfBone(name, direction / (n if n > 0 else 1.0), length,
                              np.deg2rad(axis) if deg else axis, axis_order, dofs)

    children: dict[str, list[str]] = {}
    hier = sec["hierarchy"].replace("begin", "").replace("end", "")
    for line in hier.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            for c in parts[1:]:
                if c not in bones:
                    raise ValueError(f"{path}: hierarchy names bone {c!r} that :bonedata lacks")
            children.setdefault(parts[0], []).extend(parts[1:])
    return AsfSkeleton(length_unit, angle_unit, root_order, root_axis, root_pos,
                       np.deg2rad(root_ori) if deg else root_ori, bones, children, path)


def read_amc(path: str | Path, skeleton: AsfSkeleton) -> tuple[dict[str, np.ndarray], bool]:
    """Parse an AMC motion file: per bone (and ``root``), a (T, ndof) array of values.

    Returns the values and whether they are in degrees (from the file's header, else the
    ASF's angle unit).
    """
    path = str(path)
    degrees = skeleton.angle_unit == "deg"
    frames: list[dict[str, list[float]]] = []
    with open(path, errors="replace") as f:
        for line in f:
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            if s.startswith(":"):
                if s.upper().startswith(":RADIANS"):
                    degrees = False
                elif s.upper().startswith(":DEGREES"):
                    degrees = True
                continue
            parts = s.split()
            if len(parts) == 1 and parts[0].isdigit():
                frames.append({})
                continue
            if not frames:
                raise ValueError(f"{path}: values before the first frame number: {s[:60]!r}")
            frames[-1][parts[0]] = [float(v) for v in parts[1:]]
    if not frames:
        raise ValueError(f"{path}: no frames")
    out: dict[str, np.ndarray] = {}
    names = ["root"] + list(skeleton.bones)
    for name in names:
        n = len(skeleton.root_order) if name == "root" else len(skeleton.bones[name].dofs)
        if n == 0:
            continue
        arr = np.zeros((len(frames), n))
        for t, fr in enumerate(frames):
            v = fr.get(name)
            if v is None:
                continue  # a bone missing from a frame keeps zeros (allowed by the format)
            if len(v) != n:
                raise ValueError(f"{path}: frame {t + 1}: {name!r} has {len(v)} values, the ASF "
                                 f"declares {n}")
            arr[t] = v
        out[name] = arr
    return out, degrees


def fps_from_name(path: str | Path, default: float = 120.0) -> float:
    """Frame rate from an HDM05-style name ending in ``_<fps>.amc``; else ``default``."""
    m = re.search(r"_(\d+)\.amc$", str(path), flags=re.I)
    return float(m.group(1)) if m else default


def pose_asf(skeleton: AsfSkeleton, values: dict[str, np.ndarray], degrees: bool
             ) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Forward kinematics of an ASF skeleton.

    Returns node names (``root`` then bones, parents first), parents, positions (T, J, 3) in
    metres and world rotations (T, J, 3, 3).
    """
    T = next(iter(values.values())).shape[0] if values else 1
    scale = skeleton.metres_per_unit
    order = skeleton.bone_order()
    names = ["root"] + order
    idx = {n: i for i, n in enumerate(names)}
    par = skeleton.parent_of()
    parents = np.array([-1] + [idx[par[b]] for b in order])
    J = len(names)
    pos = np.zeros((T, J, 3))
    rot = np.zeros((T, J, 3, 3))

    # root: translation and rotation channels in the declared order
    rv = values.get("root", np.zeros((T, len(skeleton.root_order))))
    trans = np.zeros((T, 3))
    rot_axes, rot_cols = "", []
    for k, ch in enumerate(skeleton.root_order):
        if ch[0] == "T":
            trans[:, "XYZ".index(ch[1])] = rv[:, k]
        elif ch[0] == "R":
            rot_axes += ch[1]
            rot_cols.append(k)
    C = _euler(skeleton.root_axis_order, skeleton.root_orientation[None], degrees=False)[0]
    M = _euler(rot_axes, rv[:, rot_cols], degrees) if rot_axes else np.eye(3)[None]
    rot[:, 0] = C @ M @ C.T
    pos[:, 0] = (skeleton.root_position + trans) * scale

    for b in order:
        j = idx[b]
        bone = skeleton.bones[b]
        C = _euler(bone.axis_order, bone.axis[None], degrees=False)[0]
        if bone.dofs:
            M = _euler("".join(d[1] for d in bone.dofs), values[b], degrees)
        else:
            M = np.eye(3)[None]
        rot[:, j] = rot[:, parents[j]] @ (C @ M @ C.T)
        pos[:, j] = pos[:, parents[j]] + np.einsum("tab,b->ta", rot[:, j],
                                                   bone.direction * bone.length * scale)
    return names, parents, pos, rot


def read_asf_amc(asf_path: str | Path, amc_path: str | Path, fps: float | None = None
                 ) -> SourceMotion:
    """Read an ASF skeleton and an AMC motion and pose every frame (metres, file axes).

    ``fps`` defaults to the ``_<fps>.amc`` suffix of HDM05 names, else 120 (CMU's rate).
    """
    skel = read_asf(asf_path)
    values, degrees = read_amc(amc_path, skel)
    names, parents, pos, rot = pose_asf(skel, values, degrees)
    zero = {k: np.zeros((1, v.shape[1])) for k, v in values.items()}
    _, _, rpos, rrot = pose_asf(skel, zero, degrees)
    rpos[0] -= rpos[0, 0]  # zero pose at the origin
    return SourceMotion(names, parents, pos, rot, float(fps or fps_from_name(amc_path)),
                        rpos[0], rrot[0], str(amc_path),
                        {"asf": str(asf_path), "length_unit": skel.length_unit,
                         "angle_unit": skel.angle_unit})
