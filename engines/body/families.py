"""The SMPL family of body models: SMPL (24 joints), SMPL+H (52) and SMPL-X (55).

All three share SMPL's first 22 joints (pelvis to wrists, same order, same tree); they
differ after that: SMPL ends each arm in one ``hand`` joint (22, 23), SMPL+H has 15 finger
joints per hand instead, SMPL-X has jaw and eyes (22-24) and then SMPL+H's fingers. A
model file's family is known from its joint count, and its ``kintree_table`` must then be
that family's tree (the tables below are those of the official files).

The lifter and the keypoint fit work on SMPL's 24 joints; a user's model of any family
takes their first 22 joints (:data:`BODY_JOINTS`), see :mod:`engines.body.transfer`.
"""
from __future__ import annotations

import dataclasses
import re

from engines.body.joint_sets import SMPL24_NAMES, SMPL24_PARENTS

#: Joints every family shares, in SMPL's order: pelvis ... left_wrist, right_wrist.
BODY_JOINTS = 22

_FINGERS = ("index", "middle", "pinky", "ring", "thumb")
#: The 15 joints of one hand, SMPL+H / SMPL-X order (three per finger, knuckle first).
HAND_NAMES: tuple[str, ...] = tuple(f"{finger}{k}" for finger in _FINGERS for k in (1, 2, 3))


def _hand_parents(first: int, wrist: int) -> tuple[int, ...]:
    """Parents of one hand's 15 joints starting at index ``first``: each finger's knuckle
    hangs from the wrist, its next two joints from the one before."""
    out = []
    for f in range(5):
        base = first + 3 * f
        out += [wrist, base, base + 1]
    return tuple(out)


_BODY_NAMES = SMPL24_NAMES[:BODY_JOINTS]
_BODY_PARENTS = SMPL24_PARENTS[:BODY_JOINTS]

SMPLH52_NAMES: tuple[str, ...] = (
    *_BODY_NAMES, *(f"left_{n}" for n in HAND_NAMES), *(f"right_{n}" for n in HAND_NAMES))
SMPLH52_PARENTS: tuple[int, ...] = (*_BODY_PARENTS, *_hand_parents(22, 20), *_hand_parents(37, 21))

SMPLX55_NAMES: tuple[str, ...] = (
    *_BODY_NAMES, "jaw", "left_eye", "right_eye",
    *(f"left_{n}" for n in HAND_NAMES), *(f"right_{n}" for n in HAND_NAMES))
SMPLX55_PARENTS: tuple[int, ...] = (*_BODY_PARENTS, 15, 15, 15, *_hand_parents(25, 20), *_hand_parents(40, 21))


@dataclasses.dataclass(frozen=True)
class Family:
    """One member of the SMPL family.

    Attributes:
        name: ``smpl``, ``smplh`` or ``smplx`` (smplx's ``model_type``).
        label: how people write it: ``SMPL``, ``SMPL+H``, ``SMPL-X``.
        names, parents: joint names and the kinematic tree (-1 for the root).
        file_prefix: official file names are ``<prefix>_<GENDER>.<ext>`` (``SMPLX_FEMALE.npz``).
        max_betas: shape coefficients of the official files' full shape space; SMPL-X files
            store expression blend shapes after them (see :func:`shape_columns`).
    """

    name: str
    label: str
    names: tuple[str, ...]
    parents: tuple[int, ...]
    file_prefix: str
    max_betas: int = 300

    @property
    def num_joints(self) -> int:
        return len(self.parents)


SMPL = Family("smpl", "SMPL", SMPL24_NAMES, SMPL24_PARENTS, "SMPL")
SMPLH = Family("smplh", "SMPL+H", SMPLH52_NAMES, SMPLH52_PARENTS, "SMPLH")
SMPLX = Family("smplx", "SMPL-X", SMPLX55_NAMES, SMPLX55_PARENTS, "SMPLX")
FAMILIES: dict[str, Family] = {f.name: f for f in (SMPL, SMPLH, SMPLX)}
_BY_JOINTS = {f.num_joints: f for f in FAMILIES.values()}


def family_of(num_joints: int) -> Family | None:
    """The family with ``num_joints`` joints, or None."""
    return _BY_JOINTS.get(int(num_joints))


def expected_joint_counts() -> str:
    """``SMPL's 24, SMPL+H's 52 or SMPL-X's 55`` for error messages."""
    parts = [f"{f.label}'s {f.num_joints}" for f in FAMILIES.values()]
    return ", ".join(parts[:-1]) + " or " + parts[-1]


def shape_columns(family: Family, columns: int) -> int:
    """How many leading columns of a file's ``shapedirs`` are shape (betas), as smplx reads
    them: SMPL-X files hold 300 shape then 100 expression components, or (older files,
    fewer than 400 columns) 10 and 10; SMPL and SMPL+H files hold shape only."""
    if family is SMPLX:
        return family.max_betas if columns >= family.max_betas + 100 else min(columns, 10)
    return min(columns, family.max_betas)


_GENDER_WORDS = {"neutral": "neutral", "female": "female", "f": "female", "male": "male", "m": "male"}


def gender_in_name(name: str) -> str | None:
    """The gender an official model file's name states, or None.

    ``SMPLX_FEMALE.npz``, ``SMPL_NEUTRAL.pkl``, ``SMPLH_male.pkl`` and SMPL 1.0's
    ``basicModel_f_lbs_10_207_0_v1.0.0.pkl`` / ``basicmodel_m_...`` /
    ``basicModel_neutral_...`` all say theirs; ``model.npz`` does not.
    """
    words = re.split(r"[^a-z0-9]+", name.lower())
    found = {_GENDER_WORDS[w] for w in words if w in _GENDER_WORDS}
    return found.pop() if len(found) == 1 else None
