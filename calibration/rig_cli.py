"""``smplstream calibrate-rig``: intrinsics and relative poses of several synchronised cameras
from videos (or image folders) of one board they see together."""

from __future__ import annotations

import argparse
import sys

import cv2

from calibration.board import ARUCO_DICTIONARIES, DEFAULT_ARUCO_DICT, BoardError, BoardSpec
from calibration.calibrate import CalibrationError
from calibration.fileio import FileFormatError
from calibration.rig_calibration import calibrate_rig, save_multi_camera_rig


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="smplstream calibrate-rig",
        description="Calibrate several synchronised cameras (frame i of every source is the same instant) from "
        "videos or image folders of one checkerboard or ChArUco board, and write a rig file: each camera's "
        "intrinsics and its pose in the first camera's frame (metres).")
    p.add_argument("sources", nargs="+", metavar="VIDEO_OR_FOLDER", help="one per camera, in the rig's order")
    p.add_argument("--board", required=True, metavar="COLSxROWS", help="inner corners, e.g. 9x6")
    p.add_argument("--square", required=True, type=float, metavar="MM", help="side of one square, millimetres")
    p.add_argument("--charuco", action="store_true", help="a ChArUco board (may be partly visible, from either side)")
    p.add_argument("--marker", type=float, metavar="MM", help="ChArUco marker side, millimetres")
    p.add_argument("--dict", default=DEFAULT_ARUCO_DICT, metavar="NAME", help=f"ArUco dictionary (default {DEFAULT_ARUCO_DICT})")
    p.add_argument("--model", choices=("pinhole", "fisheye"), default="pinhole")
    p.add_argument("--max-frames", type=int, default=300, help="frames looked at per source, sampled evenly (default 300)")
    p.add_argument("--out", required=True, metavar="RIG.yaml", help="rig file to write (.yaml, .yml or .json)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command; 0 on success, 2 on bad input or a rig that cannot be solved."""
    args = build_parser().parse_args(argv)
    cv2.setNumThreads(2)
    try:
        if args.charuco and args.marker is None:
            raise BoardError("--charuco needs --marker MM (the side of one ArUco marker)")
        if args.dict not in ARUCO_DICTIONARIES:
            raise BoardError(f"--dict: unknown ArUco dictionary {args.dict!r}")
        board = BoardSpec.parse(args.board, args.square, args.charuco, args.marker, args.dict)
        result = calibrate_rig(args.sources, board, model=args.model, max_frames=args.max_frames)
        save_multi_camera_rig(result, args.out)
    except (BoardError, CalibrationError, FileFormatError) as e:
        print(f"calibrate-rig: error: {e}", file=sys.stderr)
        return 2
    print(result.summary())
    print(f"rig file: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
