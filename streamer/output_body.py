"""``--body-model``: outputs posed on the user's SMPL, SMPL+H or SMPL-X model.

The lifter and the keypoint fit keep the bundled model (the network was trained with it,
and the fit needs its BlazePose-33 regressors, which official files lack); what they
produce is carried over to the user's model (:mod:`engines.body.transfer`) where it
leaves the process: the published frames, the motion files (``run --record``) and
``lift``'s file. Each person's ``poses`` become the model's full pose (3J: 72 SMPL, 156
SMPL+H, 165 SMPL-X, smplx's joint order), ``betas`` and ``trans`` its shape and smplx
``transl``, ``joints`` its J joints. The preview and the viewer still draw the fitted
bundled body (the one matched to the image). Motion files also get the model's ``gender``
and smplx's parameter layout (:func:`streamer.motion_load.file_layout`).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch

from engines.body.body_model import BodyModel
from engines.body.families import FAMILIES
from engines.body.model_file import BodyModelData
from engines.body.transfer import BodyTransfer

from .atomic_write import write_npz_atomic
from .errors import ConfigError
from .frames import Frame, Person
from .motion_formats import MultiFormatRecorder
from .motion_load import file_layout
from .publisher import ZmqPublisher

log = logging.getLogger("smplstream.body")

class OutputBody:
    """The user's body model (``data``) that outputs are posed on, fed by ``fit_body`` (the
    bundled model the lift and fit use; loaded when not given)."""

    def __init__(self, data: BodyModelData, fit_body: BodyModel | None = None):
        self.data = data
        self.family = FAMILIES[data.family]
        self.model = BodyModel(data)
        self.fit_body = fit_body if fit_body is not None else BodyModel.load()
        self.transfer = BodyTransfer(self.fit_body, self.model)
        self._last: tuple[Frame, Frame] | None = None

    @property
    def name(self) -> str:
        return self.data.name

    @property
    def gender(self) -> str:
        return self.data.gender

    def describe(self) -> str:
        return f"{self.family.label} {self.gender} ({self.data.path})"

    def convert(self, poses: np.ndarray, betas: np.ndarray, trans: np.ndarray) -> dict[str, np.ndarray]:
        """Bodies of the fit (``poses`` (N, 72), ``betas`` (N, S), ``trans`` (N, 3)) on the
        user's model: ``poses`` (N, 3J), ``betas`` (N, S'), ``trans`` (N, 3), ``joints``
        (N, J, 3), float32."""
        out = self.transfer(torch.as_tensor(np.asarray(poses, np.float32)), torch.as_tensor(np.asarray(betas, np.float32)),
                            torch.as_tensor(np.asarray(trans, np.float32)))
        arrays = {"poses": out.poses, "betas": out.betas, "trans": out.transl, "joints": out.joints}
        return {k: v.numpy().astype(np.float32) for k, v in arrays.items()}

    def frame(self, frame: Frame) -> Frame:
        """``frame`` with its persons' bodies on the user's model (a copy; the original keeps
        the fit's, for the preview and viewer). The publisher and the recorder both ask for
        the frame in turn, so the last one is kept."""
        if self._last is not None and self._last[0] is frame:
            return self._last[1]
        with_body = [p for p in frame.persons if all(k in p.arrays for k in ("poses", "betas", "trans"))]
        converted = {}
        if with_body:
            stack = lambda k: np.stack([np.asarray(p.arrays[k], np.float32) for p in with_body])  # noqa: E731
            arrays = self.convert(stack("poses"), stack("betas"), stack("trans"))
            converted = {id(p): {k: v[i] for k, v in arrays.items()} for i, p in enumerate(with_body)}
        persons = [Person(p.track_id, p.score, {**p.arrays, **converted.get(id(p), {})}) for p in frame.persons]
        out = dataclasses.replace(frame, persons=persons)
        self._last = (frame, out)
        return out

    def check_formats(self, formats: tuple[str, ...]) -> None:
        """Refuse motion formats that cannot hold this model: BVH and .smpl carry SMPL's
        24-joint skeleton, and .smpl files are written with the neutral body."""
        world = [f for f in formats if f in ("bvh", "smpl", "glb")]
        if world and self.family.name != "smpl":
            raise ConfigError(f"--formats {','.join(formats)}: BVH, .smpl and GLB files hold SMPL's 24-joint skeleton; "
                              f"the {self.family.label} model {self.data.path} is recorded as npz only")
        if "smpl" in formats and self.gender != "neutral":
            raise ConfigError(f"--formats smpl: .smpl files are written for the neutral body; the {self.gender} "
                              f"model {self.data.path} is recorded as npz or bvh")


class BodyModelRecorder(MultiFormatRecorder):
    """The recorder of ``--record`` with ``--body-model``: records the frames with their
    bodies on the user's model and, once the files are complete, adds the model's
    ``gender`` and smplx's parameter layout to every track's SMPL ``.npz``."""

    def __init__(self, directory, *, output_body: OutputBody, formats=("npz",), **kwargs):
        output_body.check_formats(tuple(formats))
        body = BodyModel(output_body.data, dtype=torch.float64) if output_body.family.name == "smpl" else None
        super().__init__(directory, formats=formats, body=body, body_model=output_body.name,
                         gender=output_body.gender, **kwargs)
        self.output_body = output_body

    def write(self, frame: Frame) -> None:
        super().write(self.output_body.frame(frame))

    def close(self) -> None:
        super().close()
        # The recorder's assembly writes a fixed gender; the files are completed here, once.
        for path in sorted(self.files_written):
            if path.suffix == ".npz" and path.stem.startswith("track_") and path.stem[len("track_"):].isdigit():
                add_body_model_members(path, self.output_body.gender)


def add_body_model_members(path, gender: str) -> None:
    """Add ``gender`` and smplx's layout (:func:`streamer.motion_load.file_layout`) to the
    SMPL motion file ``path``, rewriting it atomically."""
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    data.update(file_layout(data["poses"], data["trans"], gender))
    write_npz_atomic(path, data)


class BodyModelPublisher(ZmqPublisher):
    """The publisher with ``--body-model``: sends the frames with their bodies on the user's model."""

    def __init__(self, *args, output_body: OutputBody, **kwargs):
        super().__init__(*args, **kwargs)
        self.output_body = output_body

    def publish(self, frame: Frame) -> None:
        converted = self.output_body.frame(frame)
        super().publish(converted)
        frame.publish_time = converted.publish_time  # the latency statistics read the original
