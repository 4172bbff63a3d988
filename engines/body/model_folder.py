"""Finding a user's body model the way smplx does: a model file, or a models folder in
smplx's layout, and a gender.

smplx (``smplx.create(folder, model_type=..., gender=...)``) keeps official files as::

    models/smpl/SMPL_NEUTRAL.pkl      models/smplh/SMPLH_FEMALE.pkl
    models/smplx/SMPLX_NEUTRAL.npz    (and _FEMALE / _MALE of each)

:func:`load_user_body_model` takes a file, a family folder (``models/smplx``) or the
``models`` folder above them. A folder must hold exactly one family with a file of the
asked gender (default ``neutral``), else the one-line error says what was found and what
to pass instead. Where both ``.npz`` and ``.pkl`` exist, the ``.npz`` is taken (it loads
without unpickling).
"""
from __future__ import annotations

from pathlib import Path

from engines.body.families import FAMILIES, Family
from engines.body.model_file import GENDERS, BodyModelData, BodyModelFileError, load_body_model

_SUFFIXES = (".npz", ".pkl")  # preference order


def _family_named(path: Path) -> Family | None:
    """The family a file's official name (``SMPLX_FEMALE.npz``) or its folder states."""
    prefix = path.stem.split("_")[0].lower()
    if prefix in FAMILIES:
        return FAMILIES[prefix]
    return FAMILIES.get(path.parent.name.lower())


def _model_files(folder: Path, family: Family) -> dict[str, Path]:
    """``gender -> file`` of ``family``'s official files in ``folder`` (names matched without
    regard to case: SMPL+H's own files are ``SMPLH_female.pkl``)."""
    found: dict[str, Path] = {}
    if not folder.is_dir():
        return found
    files = {p.name.lower(): p for p in folder.iterdir() if p.is_file()}
    for gender in GENDERS:
        for suffix in _SUFFIXES:
            hit = files.get(f"{family.file_prefix}_{gender}{suffix}".lower())
            if hit is not None:
                found[gender] = hit
                break
    return found


def find_body_model_file(path: str | Path, gender: str | None = None) -> Path:
    """The model file ``path`` stands for: ``path`` itself if it is a file, else the file of
    the asked ``gender`` (default neutral) in the smplx-layout folder ``path``.

    Raises:
        BodyModelFileError: nothing there, no file of that gender, or several families to
            choose from; the message names the folder, what it holds and what to pass.
    """
    p = Path(path)
    if p.is_file():
        return p
    if not p.is_dir():
        raise BodyModelFileError(
            f"body model not found: {p} (expected a .pkl or .npz model file, or a models folder in smplx's layout)"
        )
    want = gender or "neutral"
    if want not in GENDERS:
        raise BodyModelFileError(f"unknown gender {want!r} for {p}; expected one of {', '.join(GENDERS)}")
    if p.name.lower() in FAMILIES:  # a family folder: models/smplx
        places = [(p, FAMILIES[p.name.lower()])]
    else:  # the models folder above the family folders, or official files straight in it
        places = [(p / f.name, f) for f in FAMILIES.values()] + [(p, f) for f in FAMILIES.values()]
    hits: dict[Family, Path] = {}
    others: list[Path] = []
    for folder, fam in places:
        files = _model_files(folder, fam)
        if want in files:
            hits.setdefault(fam, files[want])
        others += [f for g, f in files.items() if g != want]
    if len(hits) == 1:
        return next(iter(hits.values()))
    if len(hits) > 1:
        names = ", ".join(f"{f.label} ({q.parent})" for f, q in hits.items())
        raise BodyModelFileError(
            f"{p}: holds {want} models of several families: {names}; pass one family's folder or file"
        )
    if others:
        have = ", ".join(sorted({str(o.relative_to(p)) for o in others}))
        raise BodyModelFileError(
            f"{p}: no {want} model file (expected e.g. SMPLX_{want.upper()}.npz or SMPL_{want.upper()}.pkl); "
            f"it holds {have}: pass --gender to match one"
        )
    raise BodyModelFileError(
        f"{p}: no body model file in smplx's layout (expected smpl/SMPL_{want.upper()}.pkl, "
        f"smplh/SMPLH_{want.upper()}.pkl or smplx/SMPLX_{want.upper()}.npz, or those files in the folder itself)"
    )


def load_user_body_model(path: str | Path, gender: str | None = None) -> BodyModelData:
    """Find (:func:`find_body_model_file`) and load (:func:`load_body_model`) a user's body
    model, checking that the file is the family its name or folder says (an
    ``SMPLX_NEUTRAL.npz`` with 24 joints is refused) and of the asked gender.

    Raises:
        BodyModelFileError: one line naming the file and what was expected.
    """
    file = find_body_model_file(path, gender)
    data = load_body_model(file, gender=gender)
    named = _family_named(file)
    if named is not None and named.name != data.family:
        got = FAMILIES[data.family]
        raise BodyModelFileError(
            f"{file}: expected a {named.label} model ({named.num_joints} joints, as its name or folder says), "
            f"got {got.num_joints} joints ({got.label})"
        )
    return data
