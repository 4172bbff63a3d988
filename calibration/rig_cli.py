"""``smplstream calibrate-rig``: intrinsics and relative poses of several synchronised cameras
from videos (or image folders) of one board they see together."""

from __future__ import annotations

import argparse
import sys

import cv2

from calibration.board import BoardError
from calibration.calibrate import CalibrationError
from calibration.cli import add_board_arguments, board_from_args
from calibration.fileio import FileFormatError
from calibration.rig_calibration import calibrate_rig, save_multi_camera_rig


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="smplstream calibrate-rig",
        description="Calibrate several synchronised cameras (frame i of every source is the same instant) from "
        "videos or image folders of one checkerboard or ChArUco board, and write a rig file: each camera's "
        "intrinsics and its pose in the first camera's frame (metres).")
    p.add_argument("sources", nargs="+", metavar="VIDEO_OR_FOLDER", help="one per camera, in the rig's order")
    add_board_arguments(p)
    p.add_argument("--max-frames", type=int, default=300, help="frames looked at per source, sampled evenly (default 300)")
    p.add_argument("--out", required=True, metavar="RIG.yaml", help="rig file to write (.yaml, .yml or .json)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command; 0 on success, 2 on bad input or a rig that cannot be solved."""
    args = build_parser().parse_args(argv)
    cv2.setNumThreads(2)
    try:
        board = board_from_args(args)
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
