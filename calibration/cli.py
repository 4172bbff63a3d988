"""``run_stream.py calibrate``: camera calibration from a folder of images or a video."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2

from calibration.board import ARUCO_DICTIONARIES, DEFAULT_ARUCO_DICT, BoardError, BoardSpec
from calibration.calibrate import CalibrationError, calibrate_source, draw_coverage
from calibration.camera_file import save_camera
from calibration.fileio import FileFormatError


def add_board_arguments(p: argparse.ArgumentParser) -> None:
    """The board and lens options shared by ``calibrate`` and ``calibrate-rig``."""
    p.add_argument("--board", required=True, metavar="COLSxROWS",
                   help="inner corners as OpenCV counts them, e.g. 9x6 for a board of 10x7 squares")
    p.add_argument("--square", required=True, type=float, metavar="MM", help="side of one square, millimetres")
    p.add_argument("--model", choices=("pinhole", "fisheye"), default="pinhole",
                   help="pinhole with radial-tangential distortion (default; lenses up to ~100 deg), "
                   "or fisheye (Kannala-Brandt; action cameras, head-mounted wide lenses)")
    p.add_argument("--charuco", action="store_true",
                   help="the board is a ChArUco board (may be partly visible, or seen from behind)")
    p.add_argument("--marker", type=float, metavar="MM", help="ChArUco marker side, millimetres")
    p.add_argument("--dict", default=DEFAULT_ARUCO_DICT, metavar="NAME",
                   help=f"ChArUco ArUco dictionary (default {DEFAULT_ARUCO_DICT})")


def board_from_args(args: argparse.Namespace) -> BoardSpec:
    """The board of :func:`add_board_arguments`' options; BoardError says what is wrong."""
    if args.charuco and args.marker is None:
        raise BoardError("--charuco needs --marker MM (the side of one ArUco marker)")
    if not args.charuco and args.marker is not None:
        raise BoardError("--marker is only for ChArUco boards; add --charuco")
    if args.dict not in ARUCO_DICTIONARIES:
        raise BoardError(f"--dict: unknown ArUco dictionary {args.dict!r}; e.g. DICT_4X4_50, DICT_5X5_100, DICT_6X6_250")
    return BoardSpec.parse(args.board, args.square, args.charuco, args.marker, args.dict)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run_stream.py calibrate",
        description="Calibrate a camera from a folder of images or a video of a checkerboard or ChArUco board, "
        "and write a camera file (YAML readable by cv2.FileStorage, or JSON).",
    )
    p.add_argument("source", help="folder of images, or a video file")
    add_board_arguments(p)
    p.add_argument("--out", required=True, metavar="CAM.yaml", help="camera file to write (.yaml, .yml or .json)")
    p.add_argument("--coverage", metavar="PNG", help="write a picture of the corners of all used views")
    p.add_argument("--max-views", type=int, default=40, help="views used for calibration, chosen for coverage (default 40)")
    p.add_argument("--max-frames", type=int, default=300,
                   help="frames looked at; a video is sampled evenly (default 300)")
    p.add_argument("--report", action="store_true",
                   help="print one line per frame: board found (by which detector try) and used, or why not "
                   "(always printed for 50 frames or fewer)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the calibration command; returns the process exit status (0 ok, 2 bad input/failure)."""
    args = build_parser().parse_args(argv)
    cv2.setNumThreads(2)
    try:
        board = board_from_args(args)
        if args.max_views < 5:
            raise BoardError("--max-views: must be at least 5")
        if Path(args.out).suffix.lower() not in (".yaml", ".yml", ".json"):
            raise FileFormatError(f"--out {args.out}: the camera file must end in .yaml, .yml or .json")
        if args.coverage and Path(args.coverage).suffix.lower() not in (".png", ".jpg", ".jpeg"):
            raise FileFormatError(f"--coverage {args.coverage}: the picture must end in .png or .jpg")
        if args.max_frames < 5:
            raise BoardError("--max-frames: must be at least 5")
        result = calibrate_source(args.source, board, args.model, args.max_views, args.max_frames)
    except (BoardError, CalibrationError, FileFormatError) as e:
        print(f"calibrate: error: {e}", file=sys.stderr)
        return 2
    if args.report or result.frames_read <= 50:
        print("\n".join(result.report()))
    print(result.summary())
    print("per-view RMS (px): " + ", ".join(f"{v.name} {e:.3f}" for v, e in zip(result.views, result.per_view_errors)))
    save_camera(result.camera, args.out, result.metadata())
    print(f"camera file: {args.out}")
    if args.coverage:
        draw_coverage(result, args.coverage)
        print(f"coverage picture: {args.coverage}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
