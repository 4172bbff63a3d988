"""Synthetic calibration images: a board seen by a known camera, rendered exactly through its lens.

Each output pixel is supersampled: the rays of a finer pixel grid are traced through the
camera model (:meth:`Camera.unproject`), intersected with the board plane and looked up in the
board's picture, then averaged down (``cv2.INTER_AREA``) and given sensor noise. Used by the
tests and by ``python -m calibration.synthetic``, which prints how well calibration recovers
known intrinsics.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import cv2
import numpy as np

from calibration.board import BoardSpec
from calibration.camera import Camera


@dataclass
class BoardRenderer:
    """Renders ``board`` as seen by ``camera``; rays are computed once per renderer."""

    camera: Camera
    board: BoardSpec
    supersample: int = 2
    px_per_square: int = 80
    background: int = 150

    def __post_init__(self) -> None:
        s = self.supersample
        w, h = self.camera.width * s, self.camera.height * s
        u, v = np.meshgrid((np.arange(w) + 0.5) / s - 0.5, (np.arange(h) + 0.5) / s - 0.5)
        self._rays = self.camera.unproject(np.stack([u, v], axis=-1)).astype(np.float64)
        self._texture, self._origin = self.board.image(self.px_per_square)

    def render(self, rvec: np.ndarray, tvec: np.ndarray, noise_sigma: float = 2.0,
               blur_sigma: float = 0.0, rng: np.random.Generator | None = None) -> np.ndarray:
        """Gray uint8 image of the board at pose ``(rvec, tvec)`` (board -> camera, OpenCV)."""
        R, _ = cv2.Rodrigues(np.asarray(rvec, dtype=np.float64))
        t = np.asarray(tvec, dtype=np.float64).reshape(3)
        n = R[:, 2]  # board normal in the camera frame
        d = self._rays
        with np.errstate(invalid="ignore", divide="ignore"):
            lam = (n @ t) / (d @ n)
            hit = d * lam[..., None] - t  # point on the plane relative to the board origin
            xy = hit @ R[:, :2]  # board coordinates (metres)
        valid = np.isfinite(lam) & (lam > 0)
        scale = self.px_per_square / self.board.square
        mapx = np.where(valid, self._origin[0] + xy[..., 0] * scale, -1e4).astype(np.float32)
        mapy = np.where(valid, self._origin[1] + xy[..., 1] * scale, -1e4).astype(np.float32)
        big = cv2.remap(self._texture, mapx, mapy, cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=self.background)
        img = cv2.resize(big, self.camera.size, interpolation=cv2.INTER_AREA).astype(np.float32)
        img = 30 + img * (200 / 255)  # not pure black/white, like paper under room light
        if blur_sigma > 0:
            img = cv2.GaussianBlur(img, (0, 0), blur_sigma)
        if noise_sigma > 0:
            rng = rng or np.random.default_rng()
            img = img + rng.normal(0.0, noise_sigma, img.shape)
        return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def board_poses(camera: Camera, board: BoardSpec, n: int, rng: np.random.Generator,
                spacing: tuple[float, float] = (0.035, 0.06), max_tilt_deg: float = 40.0,
                spread: float = 0.8, min_inside: float = 1.0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` varied board poses whose whole board projects inside the image, large enough to detect.

    Board centres are aimed at random image positions (within ``spread`` of the half-size
    from the centre), tilted up to ``max_tilt_deg`` about random axes, at the distance where
    the median spacing of corners in the image is a random fraction ``spacing`` of the image
    width (so a fisheye's compressed periphery gets closer boards, as a person would hold them).
    ``min_inside`` < 1 allows boards partly outside the image (for ChArUco): at least that
    fraction of the corners is inside, and at most ``1 - min_inside / 2`` of them.
    """
    obj = board.object_points().astype(np.float64)
    centre = obj.mean(axis=0)
    grid = np.arange(board.num_corners).reshape(board.rows, board.cols)
    pairs = np.concatenate([np.stack([grid[:, :-1].ravel(), grid[:, 1:].ravel()], 1),
                            np.stack([grid[:-1].ravel(), grid[1:].ravel()], 1)])
    poses: list[tuple[np.ndarray, np.ndarray]] = []
    tries = 0
    while len(poses) < n:
        tries += 1
        if tries > 200 * n:
            raise RuntimeError("board_poses: cannot place the board inside the image; use a smaller board")
        target = np.array([camera.cx, camera.cy]) + rng.uniform(-spread, spread, 2) * np.array(camera.size) / 2
        ray = camera.unproject(target)
        if not np.isfinite(ray).all() or ray[2] < 0.2:
            continue
        axis = rng.normal(size=3)
        axis[2] *= 0.3  # mostly tilt, a little in-plane rotation
        axis /= np.linalg.norm(axis)
        rvec = axis * np.radians(rng.uniform(5.0, max_tilt_deg))
        R, _ = cv2.Rodrigues(rvec)
        want = rng.uniform(*spacing) * camera.width
        depth = camera.fx * board.square / want
        for _ in range(4):  # apparent size ~ 1 / depth: a few fixed-point steps
            t = ray / ray[2] * depth - R @ centre
            pts = obj @ R.T + t
            px = camera.project(pts)
            d = np.linalg.norm(px[pairs[:, 0]] - px[pairs[:, 1]], axis=1)
            if not np.isfinite(d).all():
                break
            depth *= float(np.median(d)) / want
        if (pts[:, 2] < 0.05).any() or not np.isfinite(px).all() or d.min() < 0.3 * want:
            continue
        margin = 0.04 * min(camera.size)
        inside = ((px >= margin) & (px <= np.array(camera.size) - 1 - margin)).all(axis=1).mean()
        if inside < min_inside or (min_inside < 1.0 and inside > 1.0 - min_inside / 2):
            continue
        poses.append((rvec, t))
    return poses


def synthetic_views(camera: Camera, board: BoardSpec, n: int, seed: int = 0, noise_sigma: float = 2.0,
                    **pose_kw) -> list[np.ndarray]:
    """``n`` rendered images of ``board`` seen by ``camera`` from varied poses."""
    rng = np.random.default_rng(seed)
    renderer = BoardRenderer(camera, board)
    return [renderer.render(r, t, noise_sigma, rng=rng) for r, t in board_poses(camera, board, n, rng, **pose_kw)]


# Reference cameras of the self-check and the tests.
def reference_pinhole() -> Camera:
    """640x480, 68 x 51 deg, barrel distortion of a typical wide webcam (k1 = -0.28), off-centre principal point."""
    K = np.array([[530.0, 0.0, 331.5], [0.0, 532.0, 236.0], [0.0, 0.0, 1.0]])
    return Camera("pinhole", 640, 480, K, [-0.28, 0.11, 0.0008, -0.0005, -0.02])


def reference_fisheye() -> Camera:
    """640x480 fisheye, 157 x 117 deg, like an action or head-mounted camera."""
    K = np.array([[230.0, 0.0, 324.0], [0.0, 231.0, 237.5], [0.0, 0.0, 1.0]])
    return Camera("fisheye", 640, 480, K, [0.02, -0.01, 0.004, -0.001])


def reference_strong_fisheye() -> Camera:
    """640x480 fisheye, 176 x 133 deg; the image corners are over 90 deg off-axis (behind the camera plane)."""
    K = np.array([[200.0, 0.0, 322.0], [0.0, 200.5, 241.0], [0.0, 0.0, 1.0]])
    return Camera("fisheye", 640, 480, K, [0.03, -0.006, 0.0005, -0.00002])


def main(argv: list[str] | None = None) -> int:
    """Render synthetic boards for the reference cameras, calibrate, print the recovered accuracy."""
    from calibration.calibrate import calibrate_images, draw_coverage

    p = argparse.ArgumentParser(prog="python -m calibration.synthetic", description=main.__doc__)
    p.add_argument("--views", type=int, default=20, help="rendered board views per camera (default 20)")
    p.add_argument("--noise", type=float, default=2.0, help="sensor noise sigma, gray levels (default 2)")
    p.add_argument("--seeds", type=int, default=3, help="repeat with this many random seeds (default 3)")
    p.add_argument("--charuco", action="store_true", help="also run a ChArUco board")
    p.add_argument("--coverage-dir", help="write coverage pictures here")
    args = p.parse_args(argv)
    cv2.setNumThreads(2)
    boards = [BoardSpec(9, 6, 0.03)]
    if args.charuco:
        boards.append(BoardSpec(9, 6, 0.03, charuco=True, marker=0.022, dictionary="DICT_5X5_100"))
    print(f"{'model':8} {'board':12} {'seed':>4} {'views':>5} {'fx err %':>9} {'fy err %':>9} "
          f"{'cx err px':>9} {'cy err px':>9} {'RMS px':>7} {'time s':>6}")
    for true in (reference_pinhole(), reference_fisheye()):
        for board in boards:
            for seed in range(args.seeds):
                t0 = time.perf_counter()
                images = synthetic_views(true, board, args.views, seed=seed, noise_sigma=args.noise)
                res = calibrate_images([(f"view{i:02d}", im) for i, im in enumerate(images)], board, true.model)
                dt = time.perf_counter() - t0
                c = res.camera
                print(f"{true.model:8} {'charuco' if board.charuco else 'checker':12} {seed:4d} {len(res.views):5d} "
                      f"{100 * (c.fx / true.fx - 1):+9.3f} {100 * (c.fy / true.fy - 1):+9.3f} "
                      f"{c.cx - true.cx:+9.3f} {c.cy - true.cy:+9.3f} {res.rms:7.3f} {dt:6.1f}")
                if args.coverage_dir and seed == 0:
                    import os
                    os.makedirs(args.coverage_dir, exist_ok=True)
                    name = f"{args.coverage_dir}/coverage_{true.model}_{'charuco' if board.charuco else 'checker'}.png"
                    draw_coverage(res, name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
