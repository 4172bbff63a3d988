"""``track_NNNN.glb``: a track as a glTF 2.0 binary with the body attached, for Blender,
Unity, Unreal and three.js (``--formats glb``), written with ``pygltflib``.

The file holds:

- the body model's mesh (every vertex and triangle; the bundled model's is 13 718 vertices,
  about 0.8 MB) in its rest T-pose for the track's mean shape (``betas``), with normals
  and a plain material;
- a skin over 24 joint nodes named as SMPL's joints (``pelvis`` the root, SMPL's tree),
  the body model's skinning weights cut to the 4 largest per vertex and renormalised (what
  glTF viewers read: ``JOINTS_0`` / ``WEIGHTS_0``), and inverse bind matrices of the
  mean shape's rest joints;
- one animation: per joint, its local rotation; the pelvis's translation is its position in
  the world; every other joint's translation is its rest offset from its parent for that
  frame's shape (the per-frame ``betas``), so the joints equal the ``.npz``'s ``joints``.
  Keys are at the source frame times, ``(frame_index - first) / fps`` (a frame where the
  person was not seen has no key; players interpolate over it).

The world is the Y-up world of the BVH and ``.smpl`` files
(:func:`streamer.motion_formats.world_motion`): the camera frame turned 180 degrees about
its x axis, moved up by the same floor shift, metres. glTF is right-handed, Y up, so this
is also glTF's frame. The scene's ``extras`` name the floor, the frame rate and the frame
change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from engines.body.joint_sets import SMPL24_NAMES, SMPL24_PARENTS
from engines.body.rotations import axis_angle_to_matrix

from .atomic_write import write_bytes_atomic

#: Camera frame (OpenCV) -> Y-up world, as :data:`streamer.motion_formats.CAMERA_TO_WORLD`
#: (not imported: that module imports this one).
_CAMERA_TO_WORLD = np.diag([1.0, -1.0, -1.0])
#: Skinning influences per vertex that glTF viewers read (one JOINTS_0 / WEIGHTS_0 set).
INFLUENCES = 4
_MESH_COLOUR = [0.62, 0.66, 0.74, 1.0]


@dataclass
class GlbAnimation:
    """A track's animation in the Y-up world, gathered block by block (:meth:`add`):
    ``times`` (T,) seconds from the first frame, ``rotations`` (T, 24, 4) local quaternions
    (x, y, z, w), ``translations`` (T, 24, 3) local translations (the pelvis's: its world
    position; the others': the frame's rest offset from the parent); ``first_frame_index``
    the source frame of time 0."""

    fps: float
    shift: float
    times: list[np.ndarray] = field(default_factory=list)
    rotations: list[np.ndarray] = field(default_factory=list)
    translations: list[np.ndarray] = field(default_factory=list)
    first_frame_index: int | None = None
    _last_quat: np.ndarray | None = None

    def add(self, poses: np.ndarray, trans: np.ndarray, betas: np.ndarray, frame_index: np.ndarray, body) -> None:
        """Append frames: camera-frame ``poses`` (n, 72) axis-angle, ``trans`` (n, 3), the
        frames' own ``betas`` (n, S), their source ``frame_index`` (n,)."""
        n = len(poses)
        if n == 0:
            return
        frame_index = np.asarray(frame_index, np.int64).reshape(n)
        if self.first_frame_index is None:
            self.first_frame_index = int(frame_index[0])
        with torch.no_grad():
            b = torch.as_tensor(np.asarray(betas, np.float64).reshape(n, -1), dtype=body.J_template.dtype)
            rest = body.rest_joints(b).double().numpy()  # (n, 24, 3)
            R = axis_angle_to_matrix(torch.from_numpy(np.asarray(poses, np.float64).reshape(n, 24, 3))).numpy()
        C = _CAMERA_TO_WORLD
        R[:, 0] = C @ R[:, 0]
        local = rest - rest[:, [max(p, 0) for p in SMPL24_PARENTS]]
        # The root turns about the pelvis: its world position is C (J0 + trans) + floor shift.
        local[:, 0] = (rest[:, 0] + np.asarray(trans, np.float64).reshape(n, 3)) @ C.T + [0.0, self.shift, 0.0]
        quat = Rotation.from_matrix(R.reshape(-1, 3, 3)).as_quat().reshape(n, 24, 4)
        # q and -q are one rotation; keep neighbours in one hemisphere so interpolation
        # between keys takes the short way.
        prev = self._last_quat
        for t in range(n):
            ref = quat[t - 1] if t else prev
            if ref is not None:
                quat[t][np.einsum("jc,jc->j", quat[t], ref) < 0] *= -1
        self._last_quat = quat[-1].copy()
        self.times.append((frame_index - self.first_frame_index) / self.fps)
        self.rotations.append(quat)
        self.translations.append(local)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(times (T,), rotations (T, 24, 4), translations (T, 24, 3)) as float32."""
        if not self.times:
            raise ValueError("a GLB needs at least one frame")
        times = np.concatenate(self.times).astype(np.float32)
        if len(times) > 1 and not (np.diff(times) > 0).all():
            raise ValueError("GLB keys must be at increasing frame indices")
        return (times, np.concatenate(self.rotations).astype(np.float32),
                np.concatenate(self.translations).astype(np.float32))


class _Blob:
    """The binary chunk: accessors appended one by one, each view 4-byte aligned."""

    def __init__(self, gltf):
        self.gltf = gltf
        self.parts: list[bytes] = []
        self.size = 0

    def add(self, array: np.ndarray, component: int, kind: str, *, target: int | None = None,
            minmax: bool = False) -> int:
        import pygltflib as g

        data = np.ascontiguousarray(array).tobytes()
        pad = -self.size % 4
        if pad:
            self.parts.append(b"\0" * pad)
            self.size += pad
        self.gltf.bufferViews.append(g.BufferView(buffer=0, byteOffset=self.size, byteLength=len(data), target=target))
        self.parts.append(data)
        self.size += len(data)
        count = len(array)
        accessor = g.Accessor(bufferView=len(self.gltf.bufferViews) - 1, componentType=component, count=count,
                              type=kind)
        if minmax:
            flat = np.asarray(array).reshape(count, -1)
            accessor.min = flat.min(axis=0).tolist()
            accessor.max = flat.max(axis=0).tolist()
        self.gltf.accessors.append(accessor)
        return len(self.gltf.accessors) - 1

    def bytes(self) -> bytes:
        return b"".join(self.parts)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unit area-weighted vertex normals (V, 3); a vertex in no triangle gets +Y."""
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    n_face = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    normals = np.zeros_like(v)
    for k in range(3):
        np.add.at(normals, f[:, k], n_face)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return np.where(length > 1e-12, normals / np.maximum(length, 1e-12), [0.0, 1.0, 0.0])


def top_influences(weights: np.ndarray, k: int = INFLUENCES) -> tuple[np.ndarray, np.ndarray]:
    """Per vertex the ``k`` joints of largest weight and their weights renormalised to sum
    1: (joints (V, k) uint8, weights (V, k) float32). Slots without weight point at joint 0."""
    w = np.asarray(weights, np.float64)
    idx = np.argsort(-w, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(w, idx, axis=1)
    top = np.where(top > 0, top, 0.0)
    top /= top.sum(axis=1, keepdims=True)
    idx = np.where(top > 0, idx, 0)
    return idx.astype(np.uint8), top.astype(np.float32)


def glb_bytes(animation: GlbAnimation, body, betas: np.ndarray, *, name: str = "body",
              extras: dict | None = None) -> bytes:
    """The GLB of ``animation``: ``body``'s mesh and skin for the mean shape ``betas`` (S,),
    24 SMPL joint nodes and one animation (see the module's docstring)."""
    import pygltflib as g

    times, quats, trans = animation.arrays()
    J = 24
    if body.num_joints != J:
        raise ValueError(f"GLB files hold SMPL's 24-joint skeleton; the body model has {body.num_joints} joints")
    with torch.no_grad():
        b = torch.as_tensor(np.asarray(betas, np.float64).reshape(1, -1), dtype=body.J_template.dtype)
        vertices = body.shaped_vertices(b)[0].double().numpy()
        rest = body.rest_joints(b)[0].double().numpy()
    faces = body.faces.numpy()
    joints, weights = top_influences(body.weights.double().numpy())
    normals = vertex_normals(vertices, faces)

    gltf = g.GLTF2(asset=g.Asset(version="2.0", generator="smplstream (pygltflib)"))
    blob = _Blob(gltf)
    index_type = g.UNSIGNED_SHORT if len(vertices) < 65535 else g.UNSIGNED_INT
    attributes = g.Attributes(
        POSITION=blob.add(vertices.astype(np.float32), g.FLOAT, g.VEC3, target=g.ARRAY_BUFFER, minmax=True),
        NORMAL=blob.add(normals.astype(np.float32), g.FLOAT, g.VEC3, target=g.ARRAY_BUFFER),
        JOINTS_0=blob.add(joints, g.UNSIGNED_BYTE, g.VEC4, target=g.ARRAY_BUFFER),
        WEIGHTS_0=blob.add(weights, g.FLOAT, g.VEC4, target=g.ARRAY_BUFFER))
    indices = blob.add(faces.reshape(-1).astype(np.uint16 if index_type == g.UNSIGNED_SHORT else np.uint32),
                       index_type, g.SCALAR, target=g.ELEMENT_ARRAY_BUFFER)
    gltf.materials.append(g.Material(name="body", pbrMetallicRoughness=g.PbrMetallicRoughness(
        baseColorFactor=_MESH_COLOUR, metallicFactor=0.0, roughnessFactor=0.8)))
    gltf.meshes.append(g.Mesh(name=name, primitives=[g.Primitive(attributes=attributes, indices=indices, material=0)]))

    # Joint nodes 0..23 in SMPL's order; their rest transforms put the mesh in its bind pose.
    offsets = rest - rest[[max(p, 0) for p in SMPL24_PARENTS]]
    offsets[0] = rest[0]
    for j in range(J):
        children = [c for c in range(J) if SMPL24_PARENTS[c] == j]
        gltf.nodes.append(g.Node(name=SMPL24_NAMES[j], translation=offsets[j].tolist(), children=children or None))
    inverse_bind = np.tile(np.eye(4), (J, 1, 1))
    inverse_bind[:, :3, 3] = -rest
    # glTF matrices are column-major: the transpose's rows are the columns.
    ibm = blob.add(inverse_bind.transpose(0, 2, 1).astype(np.float32).reshape(J, 16), g.FLOAT, g.MAT4)
    gltf.skins.append(g.Skin(name="smpl24", joints=list(range(J)), skeleton=0, inverseBindMatrices=ibm))
    gltf.nodes.append(g.Node(name=name, mesh=0, skin=0))
    gltf.scenes.append(g.Scene(name=name, nodes=[0, J], extras=extras or {}))
    gltf.scene = 0

    key_times = blob.add(times, g.FLOAT, g.SCALAR, minmax=True)
    samplers, channels = [], []
    for j in range(J):
        for path, values in ((g.ROTATION, quats[:, j]), (g.TRANSLATION, trans[:, j])):
            out = blob.add(np.ascontiguousarray(values), g.FLOAT, g.VEC4 if path == g.ROTATION else g.VEC3)
            samplers.append(g.AnimationSampler(input=key_times, output=out, interpolation=g.ANIM_LINEAR))
            channels.append(g.AnimationChannel(sampler=len(samplers) - 1,
                                               target=g.AnimationChannelTarget(node=j, path=path)))
    gltf.animations.append(g.Animation(name=name, samplers=samplers, channels=channels))
    data = blob.bytes()
    gltf.buffers.append(g.Buffer(byteLength=len(data)))
    gltf.set_binary_blob(data)
    return b"".join(gltf.save_to_bytes())


def write_glb(rows, path: Path, body, *, shift: float) -> Path:
    """Write ``path`` (a GLB) of a track's SMPL frames, read piece by piece from ``rows``
    (``rows.blocks("betas", "frame_index")`` yields poses, trans, per-frame betas and
    frame indices; ``rows.betas`` the mean shape; ``rows.fps``), in the Y-up world moved
    up by ``shift`` (the BVH's floor). The animation stays in memory until written: 700
    bytes a frame."""
    animation = GlbAnimation(fps=float(rows.fps), shift=float(shift))
    for poses, trans, betas, frame_index in rows.blocks("betas", "frame_index"):
        animation.add(poses, trans, betas, frame_index, body)
    extras = {"smplstream": {
        "fps": float(rows.fps), "first_frame_index": animation.first_frame_index,
        "body_model": getattr(body, "name", None), "betas": np.asarray(rows.betas, float).round(6).tolist(),
        "floor_m": -float(shift),
        "world": "camera frame (OpenCV) turned 180 degrees about x, then moved up by -floor_m: Y up, metres",
        "camera_to_world": _CAMERA_TO_WORLD.tolist()}}
    data = glb_bytes(animation, body, rows.betas, name=path.stem, extras=extras)
    write_bytes_atomic(path, data)
    return path

