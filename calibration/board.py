"""Calibration boards: plain checkerboards and ChArUco boards, their 3D points and detection.

Board sizes count *inner* corners as OpenCV does: a board of 10 x 7 squares is ``9x6``.
Board coordinates: metres, in the board plane (z = 0), x along a row of corners, y along a
column. For a checkerboard the origin is the first inner corner; for ChArUco it is the board's
outer corner (OpenCV's convention), which does not matter for intrinsics.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: ArUco dictionaries by name (``DICT_5X5_100`` and so on).
ARUCO_DICTIONARIES: dict[str, int] = {
    name: getattr(cv2.aruco, name) for name in dir(cv2.aruco) if name.startswith("DICT_")
}
DEFAULT_ARUCO_DICT = "DICT_5X5_100"


class BoardError(ValueError):
    """An invalid board description."""


@dataclass(frozen=True, eq=False)
class Detection:
    """Corners of one board found in one image.

    ``image_points`` (N, 2) float32 pixels, ``object_points`` (N, 3) float32 metres, ``ids``
    (N,) int corner ids (row-major index of the inner corner) so partial views can be compared.
    """

    image_points: np.ndarray
    object_points: np.ndarray
    ids: np.ndarray
    how: str = ""  # which try of the detection cascade found it (for the report)


@dataclass(frozen=True)
class BoardSpec:
    """A checkerboard (``charuco=False``) or ChArUco board.

    Attributes:
        cols, rows: inner corners per row and per column (OpenCV's ``patternSize``).
        square: side of a square, metres.
        charuco: ChArUco board (squares + ArUco markers); tolerates a partly visible board.
        marker: ChArUco marker side, metres (required for ChArUco, smaller than ``square``).
        dictionary: ArUco dictionary name for ChArUco, e.g. ``DICT_5X5_100``.
    """

    cols: int
    rows: int
    square: float
    charuco: bool = False
    marker: float | None = None
    dictionary: str = DEFAULT_ARUCO_DICT

    def __post_init__(self) -> None:
        if self.cols < 2 or self.rows < 2:
            raise BoardError(f"board: needs at least 2x2 inner corners, got {self.cols}x{self.rows}")
        if not self.square > 0:
            raise BoardError(f"board: square size must be positive, got {self.square}")
        if self.charuco:
            if self.marker is None or not 0 < self.marker < self.square:
                raise BoardError(
                    f"board: ChArUco marker size must be positive and smaller than the square "
                    f"({self.square * 1000:g} mm), got {None if self.marker is None else self.marker * 1000:g} mm"
                )
            if self.dictionary not in ARUCO_DICTIONARIES:
                raise BoardError(
                    f"board: unknown ArUco dictionary {self.dictionary!r}; e.g. DICT_4X4_50, DICT_5X5_100, DICT_6X6_250"
                )
            n_markers = ((self.cols + 1) * (self.rows + 1)) // 2
            dict_size = int(self.dictionary.rsplit("_", 1)[-1]) if self.dictionary[-1].isdigit() else None
            if dict_size is not None and dict_size < n_markers and "APRILTAG" not in self.dictionary:
                raise BoardError(f"board: {self.dictionary} has {dict_size} markers, the board needs {n_markers}")

    @staticmethod
    def parse(size: str, square_mm: float, charuco: bool = False, marker_mm: float | None = None,
              dictionary: str = DEFAULT_ARUCO_DICT) -> BoardSpec:
        """From the command-line form: ``"9x6"`` inner corners, sizes in millimetres."""
        try:
            cols_s, rows_s = size.lower().split("x")
            cols, rows = int(cols_s), int(rows_s)
        except ValueError:
            raise BoardError(f"--board: expected COLSxROWS inner corners like 9x6, got {size!r}") from None
        return BoardSpec(cols, rows, square_mm / 1000.0, charuco,
                         None if marker_mm is None else marker_mm / 1000.0, dictionary)

    @property
    def num_corners(self) -> int:
        return self.cols * self.rows

    def describe(self) -> str:
        kind = f"ChArUco {self.dictionary}, marker {self.marker * 1000:g} mm, " if self.charuco else "checkerboard "
        return f"{kind}{self.cols}x{self.rows} inner corners, square {self.square * 1000:g} mm"

    def object_points(self) -> np.ndarray:
        """All inner corners ``(cols*rows, 3)`` float32, in the order of :attr:`Detection.ids`."""
        if self.charuco:
            return np.asarray(self.charuco_board().getChessboardCorners(), dtype=np.float32).reshape(-1, 3)
        i = np.arange(self.num_corners)
        return np.stack(
            [(i % self.cols) * self.square, (i // self.cols) * self.square, np.zeros(i.size)], axis=1
        ).astype(np.float32)

    def charuco_board(self) -> cv2.aruco.CharucoBoard:
        dictionary = cv2.aruco.getPredefinedDictionary(ARUCO_DICTIONARIES[self.dictionary])
        return cv2.aruco.CharucoBoard((self.cols + 1, self.rows + 1), self.square, self.marker, dictionary)

    def image(self, px_per_square: int = 100, margin_squares: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
        """A printable picture of the board and the pixel position of board point (0, 0).

        Returns ``(gray uint8 image, origin (2,))``: board coordinate ``X`` (metres) is at pixel
        ``origin + X / square * px_per_square``.
        """
        margin = int(round(margin_squares * px_per_square))
        w = (self.cols + 1) * px_per_square + 2 * margin
        h = (self.rows + 1) * px_per_square + 2 * margin
        if self.charuco:
            img = self.charuco_board().generateImage((w, h), marginSize=margin, borderBits=1)
            origin = np.array([margin, margin], dtype=np.float64) - 0.5
        else:
            img = np.full((h, w), 255, np.uint8)
            for j in range(self.rows + 1):
                for i in range(self.cols + 1):
                    if (i + j) % 2 == 0:
                        x0, y0 = margin + i * px_per_square, margin + j * px_per_square
                        img[y0:y0 + px_per_square, x0:x0 + px_per_square] = 0
            origin = np.array([margin + px_per_square, margin + px_per_square], dtype=np.float64) - 0.5
        return img, origin

    # -- detection ------------------------------------------------------------------------------
    def detect(self, gray: np.ndarray, max_side: int = 1280, tries: str = "all") -> Detection | None:
        """Find the board's corners in a grayscale image (subpixel); None when not found.

        A checkerboard is searched by a cascade, cheapest first: OpenCV's SB detector at
        ``max_side`` pixels at most, the classic detector at 800 pixels with its fast check,
        then both at full resolution, the classic one without the fast check: the reduced-size
        tries miss small or low-contrast boards that the full-size ones find
        (``docs/calibration.md``). ``tries``: ``"fast"`` (the reduced-size ones), ``"full"``
        (the full-size ones) or ``"all"``. A ChArUco board is tried with white markers on
        black too (an inverted print) and in the mirrored image (a board seen from behind,
        printed on a transparent sheet), all of that being fast. ``Detection.how`` says which try found it.
        """
        if gray.ndim != 2:
            raise ValueError("detect: expects a single-channel image")
        if tries not in ("fast", "full", "all"):
            raise ValueError(f"detect: tries must be fast, full or all, not {tries!r}")
        if self.charuco:
            return None if tries == "full" else self._detect_charuco(gray)
        return self._detect_checkerboard(gray, max_side, tries)

    def detection_tries(self, size: tuple[int, int], max_side: int = 1280) -> str:
        """What :meth:`detect` tries on an image of ``size`` (width, height), as words."""
        if self.charuco:
            return "ChArUco markers as printed, inverted, and mirrored (seen from behind)"
        side = max(size)
        tries = [f"SB at {min(side, max_side)} px", f"classic at {min(side, 800)} px"]
        if side > 800:
            tries.append(f"{'SB and classic' if side > max_side else 'classic'} at full size ({side} px)")
        return ", ".join(tries)

    def _detect_checkerboard(self, gray: np.ndarray, max_side: int, tries: str) -> Detection | None:
        pattern = (self.cols, self.rows)
        side = max(gray.shape)
        fast = [("SB", max_side), ("classic", 800)]
        # Full size after the cheap tries: up to a second an image (docs/calibration.md).
        full = ([("SB", side)] if side > max_side else []) + ([("classic", side)] if side > 800 else [])
        corners, how, scale = None, "", 1.0
        for detector, limit in {"fast": fast, "full": full, "all": fast + full}[tries]:
            scale = min(1.0, limit / side)
            small = gray if scale == 1.0 else cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            if detector == "SB":
                ok, corners = cv2.findChessboardCornersSB(small, pattern, flags=cv2.CALIB_CB_NORMALIZE_IMAGE)
            else:
                # The fast check rejects images without a board quickly, and some with one:
                # only the reduced-size try takes it.
                check = cv2.CALIB_CB_FAST_CHECK if limit < side else 0
                ok, corners = cv2.findChessboardCorners(
                    small, pattern, flags=cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE | check)
            if ok and corners is not None:
                how = f"{detector} detector at {'full size' if scale == 1.0 else f'{round(side * scale)} px'}"
                break
        else:
            return None
        corners = corners.reshape(-1, 1, 2).astype(np.float32)
        if scale != 1.0:
            corners = (corners + 0.5) / scale - 0.5
        # cornerSubPix even after the SB detector: on synthetic boards it halves the corner
        # error (0.14 -> 0.08 px mean), and it refines corners found at reduced size
        # window: a fraction of the smallest corner spacing, so it never spans two corners
        grid = corners.reshape(self.rows, self.cols, 2)
        spacing = min(
            np.linalg.norm(np.diff(grid, axis=1), axis=2).min(),
            np.linalg.norm(np.diff(grid, axis=0), axis=2).min(),
        )
        win = int(np.clip(spacing * 0.4, 2, 11))
        crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 40, 1e-3)
        corners = cv2.cornerSubPix(gray, corners, (win, win), (-1, -1), crit)
        ids = np.arange(self.num_corners)
        return Detection(corners.reshape(-1, 2), self.object_points(), ids, how)

    def _detect_charuco(self, gray: np.ndarray) -> Detection | None:
        board = self.charuco_board()
        detector = cv2.aruco.CharucoDetector(board)
        width = gray.shape[1]
        for inverted, mirrored in ((False, False), (True, False), (False, True), (True, True)):
            image = 255 - gray if inverted else gray
            image = cv2.flip(image, 1) if mirrored else image
            corners, ids, _marker_corners, _marker_ids = detector.detectBoard(image)
            if ids is not None and len(ids) >= 6 and not board.checkCharucoCornersCollinear(
                    ids.reshape(-1, 1).astype(np.int32)):
                break
        else:
            return None
        how = "ChArUco" + (", inverted (white markers)" if inverted else "") + (", from behind" if mirrored else "")
        ids = ids.reshape(-1).astype(np.int64)
        obj = self.object_points()[ids]
        if mirrored:
            # A board seen from behind (printed on a transparent sheet: cameras on both sides)
            # shows its markers mirrored; found in the flipped image, each corner is put back
            # where it is in the image as given, and it is the same physical corner.
            corners = corners.reshape(-1, 2).copy()
            corners[:, 0] = width - 1 - corners[:, 0]
        corners = corners.reshape(-1, 1, 2).astype(np.float32)
        # ChArUco corners come from marker homographies; a small cornerSubPix window (clear of
        # the markers) refines them on the saddle points: synthetic RMS 0.19 -> 0.15 px, while a
        # checkerboard-sized window, reaching the markers, made it worse (0.5 px)
        pts = corners.reshape(-1, 2)
        d = np.linalg.norm(pts[:, None] - pts[None], axis=2)
        d[np.arange(len(pts)), np.arange(len(pts))] = np.inf
        win = int(np.clip(d.min() * 0.12, 2, 11))
        crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 40, 1e-3)
        corners = cv2.cornerSubPix(gray, corners, (win, win), (-1, -1), crit)
        return Detection(corners.reshape(-1, 2), obj, ids, how)
