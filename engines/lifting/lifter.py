"""The lifter: 2D keypoints of a batch of persons -> SMPL pose, shape and translation with
uncertainty, by few-step sampling of the conditional diffusion model.

>>> lifter = Lifter.load()                       # bundled weights, bundled body model
>>> result = lifter.lift(keypoints)              # (B, 33, 3) normalised x, y, confidence
>>> result.poses.shape, result.trans.shape       # (B, 72) axis-angle, (B, 3) metres

Keypoints are in normalised camera coordinates (``calibration.Camera.normalize_keypoints``
turns pixels of a calibrated or assumed camera into them). N samples are drawn per person;
the estimate is their rotation-wise mean, and their spread is the per-joint uncertainty.
The camera translation is solved in closed form from the keypoints and the posed body.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engines.body.body_model import BodyModel
from engines.body.joint_sets import BLAZEPOSE33_FLIP, COCO17_FROM_BLAZEPOSE33, SMPL24_FLIP
from engines.body.rotations import matrix_to_axis_angle, nearest_rotation
from engines.diffusion.denoiser import BETAS, NUM_JOINTS, PoseDenoiser, rotations_of
from engines.diffusion.features import condition_features, liftable, world_landmarks_given
from engines.diffusion.onnx_denoiser import OrtDenoiser
from engines.diffusion.sampler import draw_noise, sample
from engines.diffusion.schedule import DDIMScheduler
from engines.diffusion.weights import DEFAULT_WEIGHTS, LifterWeightsError, load_denoiser, spread_temperature
from engines.lifting.translation import solve_translation
from engines.runtime.backends import resolve_backend
from engines.run_defaults import LIFT_SAMPLES, LIFT_STEPS
from engines.runtime.models import load_sampler
from engines.runtime.quantize import check_int8, int8_onnx
from engines.runtime.spec import EngineInfo

log = logging.getLogger("engines.lifting")

@dataclass
class LiftResult:
    """Per person (B rows). Camera frame: OpenCV axes, metres; rotations axis-angle, radians."""

    poses: torch.Tensor  # (B, 72) local rotations, root (global orientation) first
    betas: torch.Tensor  # (B, 10)
    trans: torch.Tensor  # (B, 3) position of the body model's origin (the pelvis)
    joints: torch.Tensor  # (B, 24, 3)
    poses_std: torch.Tensor  # (B, 24) angular spread of the samples about the estimate
    joints_std: torch.Tensor  # (B, 24) positional spread of the samples' joints (root-relative)
    valid: torch.Tensor  # (B,) False where too few keypoints were seen to lift
    rotations: torch.Tensor | None = None  # (B, 24, 3, 3) the local rotations ``poses`` holds
    condition: torch.Tensor | None = None  # (B, C) the denoiser's condition of each person
    # whether world landmarks went into ``condition``
    condition_world: bool = False
    # (P, X) the clean predictions of the rows ``lift(riders=...)`` asked for, where the
    # lifter could denoise them in its own network call; None otherwise
    riders_x0: torch.Tensor | None = None

    #: The per-person SMPL arrays a motion file or a wire message carries.
    SMPL_FIELDS = ("poses", "betas", "trans", "joints", "poses_std", "joints_std")

    def smpl_arrays(self) -> dict[str, np.ndarray]:
        """The SMPL fields as float32 numpy arrays, one row per person."""
        return {k: getattr(self, k).numpy().astype(np.float32) for k in self.SMPL_FIELDS}


def coco17_to_blazepose33(keypoints: torch.Tensor) -> torch.Tensor:
    """Place COCO-17 keypoints (..., 17, 3) into the BlazePose-33 layout (others missing)."""
    out = keypoints.new_zeros(*keypoints.shape[:-2], 33, keypoints.shape[-1])
    out[..., list(COCO17_FROM_BLAZEPOSE33), :] = keypoints
    return out


def samples_per_call(num_samples: int, mirror_half: bool) -> int:
    """Samples per condition row in one sampler call: N, or N/2 each for the view and its
    mirror when ``mirror_half`` and N is even. A compiled sampler (TensorRT) is built for
    exactly this many."""
    return num_samples // 2 if mirror_half and num_samples % 2 == 0 else num_samples


def rotation_mean(R: torch.Tensor) -> torch.Tensor:
    """Chordal L2 mean of rotations (..., N, 3, 3) -> (..., 3, 3)."""
    U, _, Vh = torch.linalg.svd(R.mean(dim=-3))
    return nearest_rotation(U, Vh)[0]


def geodesic_angle(Ra: torch.Tensor, Rb: torch.Tensor) -> torch.Tensor:
    """Angle (radians) of the rotation taking ``Rb`` to ``Ra``."""
    cos = ((Ra.transpose(-1, -2) @ Rb).diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    return torch.arccos(cos.clamp(-1.0, 1.0))


class Lifter:
    """Keypoints -> SMPL for a batch of persons. ``num_steps`` K and ``num_samples`` N trade
    speed for accuracy and uncertainty; ``seed`` makes the sampling repeatable."""

    def __init__(self, denoiser: PoseDenoiser, body: BodyModel, *, num_steps: int = LIFT_STEPS["offline"], num_samples: int = LIFT_SAMPLES,
                 seed: int = 0, scheduler: DDIMScheduler | None = None, sampler=None,
                 engine_info: EngineInfo | None = None, mirror_half: bool = True, spread_scale: float | None = None,
                 antithetic: bool = True, spread_scale_2d: float | None = None):
        """``sampler``: an optional fused K-step sampler, ``(cond (B, C), noise (B, N, X)) -> (B, N, X)``
        (:mod:`engines.runtime.fused_sampler`), used instead of the step-by-step loop over
        ``denoiser``; it must have been built for ``num_steps`` and ``scheduler``.
        ``mirror_half``: draw half of the N samples from the mirrored view (N even).
        ``antithetic``: start the samples of each view in pairs of opposite noise
        (:func:`engines.diffusion.sampler.draw_noise`), which steadies their mean.
        ``spread_scale``: the factor by which the samples' spread is widened into the
        published ``poses_std`` and ``joints_std``; default the temperature fitted for this K
        on held-out frames (``spread_temperature`` in the weights' JSON; 1 without one).
        ``spread_scale_2d``: the same for rows a network that takes the world landmarks lifts
        without them (default the temperature fitted for that, else ``spread_scale``).
        :meth:`load` takes the int8 denoiser's own where the weights carry them
        (:func:`engines.diffusion.weights.spread_temperature`)."""
        if num_steps < 1 or num_samples < 1:
            raise ValueError("num_steps and num_samples must be at least 1")
        self.denoiser = denoiser.eval()
        # Half the samples come from the left-right mirrored view, mirrored back: the same
        # cost, and the model's left/right biases cancel in the mean (needs N even).
        self.samples_per_call = samples_per_call(num_samples, mirror_half)
        self.mirror_half = self.samples_per_call != num_samples
        self.body = body
        self.scheduler = scheduler or DDIMScheduler()
        self.num_steps = num_steps
        self.num_samples = num_samples
        self.seed = seed
        self.antithetic = antithetic
        self.generator = torch.Generator().manual_seed(seed)
        self.spread_scale, self.spread_scale_2d = spread_scales(denoiser, num_steps, None, spread_scale, spread_scale_2d)
        self.sampler = sampler
        built_for = getattr(getattr(sampler, "info", None), "details", {}).get("K")
        if built_for is not None and built_for != num_steps:
            raise ValueError(f"the sampler was built for K = {built_for} steps, the lifter asked for {num_steps}")
        self.engine_info = engine_info or getattr(sampler, "info", None) or EngineInfo(
            "sampler", "onnxruntime" if isinstance(denoiser, OrtDenoiser) else "torch", "cpu",
            details={"K": num_steps, "loop": "step-by-step"})

    @classmethod
    def load(cls, weights: str | Path | None = None, body: BodyModel | None = None, *,
             backend: str = "auto", device: str | None = None, threads: int = 1, precision: str | None = None,
             num_steps: int = LIFT_STEPS["offline"], num_samples: int = LIFT_SAMPLES, mirror_half: bool = True,
             seed: int = 0, spread_scale: float | None = None, scheduler: DDIMScheduler | None = None,
             antithetic: bool = True, spread_scale_2d: float | None = None) -> "Lifter":
        """The denoiser from ``weights`` (default: the bundled one) and the bundled body model,
        with the sampler built for ``num_steps`` K and ``num_samples`` N (the other arguments
        as for the constructor).

        ``backend`` (through :func:`engines.runtime.resolve_backend`): ``onnxruntime`` (the
        ``.onnx`` file beside the weights; the K steps fused into one ONNX Runtime call when
        the ``onnx`` package is installed, else step by step), ``torch`` (eager, step by step
        on cpu; a CUDA graph of the fused loop on cuda), ``torch-compile``, ``tensorrt``, or
        ``auto`` (TensorRT, then torch-compile on CUDA, else ONNX Runtime on CPU; torch when
        the ``.onnx`` file is missing). ``threads``: ONNX Runtime intra-op threads.
        ``precision``: ``int8`` runs the denoiser with int8 weights on ONNX Runtime (about 4
        times faster on a CPU, slightly less accurate: docs/performance.md); default fp32
        (fp16 on TensorRT).
        """
        model = load_denoiser(weights)
        onnx_path = Path(weights or DEFAULT_WEIGHTS).with_suffix(".onnx")
        engine_info = None
        choice = resolve_backend(backend, device)
        if choice.backend == "onnxruntime" and not onnx_path.is_file():
            if backend != "auto":
                raise LifterWeightsError(f"{onnx_path}: missing; export it with "
                                         "`python -m engines.diffusion.onnx_denoiser` (needs the export extra)")
            log.info("backend auto: %s missing, lifting with eager torch", onnx_path)
            choice = choice._replace(backend="torch", reason=f"{onnx_path.name} missing")
        scheduler = scheduler or DDIMScheduler()
        sampler = load_sampler(choice.backend, choice.device, model, weights=weights or DEFAULT_WEIGHTS,
                               num_steps=num_steps, num_samples=samples_per_call(num_samples, mirror_half),
                               threads=threads, scheduler=scheduler, precision=precision)
        denoiser = model
        if choice.backend == "onnxruntime" and sampler is None:
            # No fused graph (one step, or no `onnx` package): ONNX Runtime runs the network
            # once per step, with int8 weights where asked for and the `onnx` package can make them.
            path = onnx_path
            if check_int8(precision, choice.backend) and importlib.util.find_spec("onnx") is not None:
                path = int8_onnx(onnx_path)
            denoiser = OrtDenoiser(path, model.config, threads=threads)
            precision_used = "int8" if path != onnx_path else "fp32"
            engine_info = EngineInfo("sampler", "onnxruntime", choice.device, precision_used, threads,
                                     source=str(path), details={"K": num_steps, "loop": "step-by-step"})
        spread_scale, spread_scale_2d = spread_scales(model, num_steps, precision, spread_scale, spread_scale_2d)
        return cls(denoiser, body or BodyModel.load(), num_steps=num_steps, num_samples=num_samples, seed=seed,
                   scheduler=scheduler, sampler=sampler, mirror_half=mirror_half, spread_scale=spread_scale,
                   antithetic=antithetic, spread_scale_2d=spread_scale_2d, engine_info=engine_info)

    def fresh(self) -> "Lifter":
        """This lifter with its random draws started again from its seed (the networks are
        shared): lifting a new video with it gives what a newly loaded lifter gives."""
        clone = copy.copy(self)
        clone.generator = torch.Generator().manual_seed(self.seed)
        return clone

    def describe(self) -> str:
        """What runs the sampling (backend, device, fused or step by step)."""
        return self.engine_info.describe()

    @property
    def body_model_name(self) -> str:
        return self.body.name

    def _draw(self, cond: torch.Tensor, num_samples: int, riders=None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``num_samples`` samples per condition row, (B, C) -> (B, N, X), and the clean
        predictions of ``riders`` (as :meth:`lift` takes them, their conditions the rows of
        ``cond`` they name) where the network call can take them: step by step, not through
        a fused sampler (else None)."""
        if self.sampler is None:
            extra = None if riders is None or len(riders[0]) == 0 else (riders[1], riders[2], cond[riders[0]])
            out = sample(self.denoiser, self.scheduler, cond, num_steps=self.num_steps, num_samples=num_samples,
                         generator=self.generator, antithetic=self.antithetic, riders=extra)
            return out if extra is not None else (out, None)
        # The same noise draw as sample(), so a seed gives the same result on every path.
        noise = draw_noise(cond.shape[0], num_samples, self.denoiser.config.x_dim, generator=self.generator,
                           antithetic=self.antithetic, dtype=cond.dtype)
        return self.sampler(cond, noise), None

    @property
    def takes_riders(self) -> bool:
        """Whether :meth:`lift` denoises ``riders`` in its own network call (it samples step
        by step, not through a fused sampler)."""
        return self.sampler is None

    @property
    def uses_world_landmarks(self) -> bool:
        """Whether the network takes BlazePose's world landmarks as a condition."""
        return bool(getattr(self.denoiser.config, "world_landmarks", False))

    def condition(self, keypoints: torch.Tensor, world_landmarks: torch.Tensor | None = None) -> torch.Tensor:
        """The denoiser condition for (B, 33, 3) normalised keypoints (and, for a network
        trained with them, world landmarks (B, 33, 3) or None)."""
        return condition_features(keypoints, world_landmarks, world=self.uses_world_landmarks)

    @torch.no_grad()
    def lift(self, keypoints: torch.Tensor | np.ndarray,
             world_landmarks: torch.Tensor | np.ndarray | None = None,
             riders: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> LiftResult:
        """Lift (B, 33, 3) BlazePose or (B, 17, 3) COCO keypoints in normalised camera
        coordinates with confidences (0 = missing). ``world_landmarks`` (B, 33, 3), metres
        (BlazePose's, rows of zeros where none), go to a network trained with them and are
        ignored otherwise.

        ``riders``: ``(rows (P,), x_t (P, X), t (P,))``, other inputs of the same network
        under the condition of persons ``rows`` (the keypoint fit's prior call, which would
        otherwise read all the network's weights again for a row or two): where the lifter
        samples step by step, they are denoised in its last call and their clean predictions
        come back as ``riders_x0``."""
        kp = torch.as_tensor(keypoints, dtype=torch.float32)
        if kp.dim() != 3 or kp.shape[-1] != 3 or kp.shape[1] not in (17, 33):
            raise ValueError(f"keypoints must be (B, 33, 3) or (B, 17, 3), got {tuple(kp.shape)}")
        if kp.shape[1] == 17:
            kp = coco17_to_blazepose33(kp)
        kp = kp.nan_to_num(0.0, 0.0, 0.0)  # NaN and infinities to 0
        B, N = kp.shape[0], self.num_samples
        valid = liftable(kp)
        # Rows that cannot be lifted still go through (shapes stay fixed) on a dummy layout.
        safe = torch.where(valid[:, None, None], kp, _DUMMY_KEYPOINTS.expand(B, -1, -1))
        wl = None
        if world_landmarks is not None and self.uses_world_landmarks:
            wl = torch.as_tensor(world_landmarks, dtype=torch.float32).reshape(B, 33, 3)
        if self.mirror_half:
            both_wl = None if wl is None else torch.cat([wl, mirror_keypoints(wl)])
            cond = self.condition(torch.cat([safe, mirror_keypoints(safe)]), both_wl)
            x, riders_x0 = self._draw(cond, self.samples_per_call, riders)
            cond = cond[:B]
            R_samples = rotations_of(x)
            R_samples = torch.cat([R_samples[:B], mirror_rotations(R_samples[B:])], dim=1)
            x = torch.cat([x[:B], x[B:]], dim=1)  # betas are left-right symmetric: used as they are
        else:
            cond = self.condition(safe, wl)
            x, riders_x0 = self._draw(cond, N, riders)
            R_samples = rotations_of(x)
        poses, betas, trans, joints, poses_std, joints_std, R = self.summarise(R_samples, x[..., BETAS], safe)
        # The samples' spread is narrower than the error (few steps commit to a mode): widened
        # by the temperature fitted on held-out frames, it reads as a calibrated RMS error.
        # Rows lifted without the landmarks take theirs.
        scale = torch.full((B, 1), self.spread_scale)
        if self.uses_world_landmarks:
            scale = torch.where(world_landmarks_given(cond)[:, None], scale, torch.full_like(scale, self.spread_scale_2d))
        return LiftResult(poses=poses, betas=betas, trans=trans, joints=joints,
                          poses_std=poses_std * scale, joints_std=joints_std * scale,
                          valid=valid, rotations=R, condition=cond, condition_world=wl is not None,
                          riders_x0=riders_x0)

    def summarise(self, R_samples: torch.Tensor, betas_samples: torch.Tensor,
                  keypoints: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The estimate and raw spread of N samples per person: rotations (B, N, 24, 3, 3) and
        betas (B, N, 10), placed by ``keypoints`` (B, 33, 3). Returns axis-angle poses (B, 72),
        betas (B, 10), translation (B, 3), joints (B, 24, 3, camera frame), the samples' RMS
        angle (B, 24, rad) and joint spread (B, 24, m) about the estimate, and its rotations
        (B, 24, 3, 3). Tensors only, so that it can be compiled as one function."""
        B, N = betas_samples.shape[:2]
        R = rotation_mean(R_samples.transpose(1, 2)).contiguous()  # (B, 24, 3, 3)
        betas = betas_samples.mean(dim=1)
        # The estimate and (for the spread) every sample posed in one call: one body model
        # pass over B (N + 1) rows costs less than two.
        out = self.body(torch.cat([R, R_samples.reshape(B * N, NUM_JOINTS, 3, 3)]) if N > 1 else R,
                        torch.cat([betas, betas_samples.reshape(B * N, -1)]) if N > 1 else betas,
                        keypoints="blazepose33")
        weights = keypoints[..., 2] * (keypoints[..., 2] > 0.05)
        trans = solve_translation(out.keypoints["blazepose33"][:B], keypoints[..., :2], weights)
        joints = out.joints[:B] + trans[:, None]
        poses_std = geodesic_angle(R_samples, R[:, None]).pow(2).mean(dim=1).sqrt()
        if N > 1:
            sample_joints = out.joints[B:].view(B, N, NUM_JOINTS, 3)
            joints_std = (sample_joints - sample_joints.mean(1, keepdim=True)).norm(dim=-1).pow(2).mean(1).sqrt()
        else:
            joints_std = torch.zeros(B, NUM_JOINTS)
        return matrix_to_axis_angle(R).reshape(B, -1), betas, trans, joints, poses_std, joints_std, R


def spread_scales(model, num_steps: int, precision: str | None, spread_scale: float | None,
                  spread_scale_2d: float | None) -> tuple[float, float]:
    """The factors for rows lifted with and without the world landmarks: those given, else
    the temperatures ``model``'s weights carry for ``num_steps`` and ``precision``
    (:func:`engines.diffusion.weights.spread_temperature`). One factor given alone applies
    to both kinds of row."""
    if spread_scale_2d is None:
        spread_scale_2d = spread_scale if spread_scale is not None else \
            spread_temperature(model, num_steps, precision, landmarks=False)
    if spread_scale is None:
        spread_scale = spread_temperature(model, num_steps, precision)
    return float(spread_scale), float(spread_scale_2d)


_MIRROR_X = torch.diag(torch.tensor([-1.0, 1.0, 1.0]))


def mirror_keypoints(keypoints: torch.Tensor) -> torch.Tensor:
    """The left-right mirror image (x -> -x in camera axes, left and right points swapped) of
    BlazePose-33 keypoints (..., 33, 3) (normalised x, y, confidence) or 3D points such as
    world landmarks (x, y, z)."""
    out = keypoints[..., list(BLAZEPOSE33_FLIP), :].clone()
    out[..., 0] = -out[..., 0]
    return out


def mirror_rotations(R: torch.Tensor) -> torch.Tensor:
    """SMPL-24 rotations (..., 24, 3, 3) of a body seen in a mirror (camera x -> -x), mapped
    back to the body itself: left and right joints swap and each rotation is conjugated by
    the reflection."""
    return _MIRROR_X @ R[..., list(SMPL24_FLIP), :, :] @ _MIRROR_X


# A plausible standing layout for rows that are not liftable (their results are discarded).
_DUMMY_KEYPOINTS = torch.zeros(1, 33, 3)
_DUMMY_KEYPOINTS[0, :, 1] = torch.linspace(-0.2, 0.2, 33)
_DUMMY_KEYPOINTS[0, :, 0] = torch.linspace(-0.05, 0.05, 33)
_DUMMY_KEYPOINTS[0, :, 2] = 1.0
