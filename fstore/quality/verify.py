"""Is image B an edited copy of image A? Geometric verification of local features.

ORB keypoints (OpenCV) are matched with Lowe's ratio test, a similarity transform (rotation,
scale, shift) is fitted by RANSAC, and B, warped onto A, must then agree with A pixel by pixel
(normalised cross-correlation over the overlap, which ignores brightness and contrast). Two
photos of one room from different places can share many keypoints, but no single similarity
maps one onto the other, so their warped pixels disagree; a re-encoded, resized, cropped,
brightened or slightly rotated copy agrees. A pair that is already aligned (no geometric
edit) is accepted by the pixel check alone, before any keypoint is computed.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Side of the grey picture compared, in pixels (15-Scene's pictures are 200 px).
SIDE = 256
#: Pixel agreement (normalised cross-correlation) for a copy.
MIN_NCC = 0.90
#: RANSAC inliers for a geometric fit, and the largest rotation and scale change accepted.
MIN_INLIERS = 12
MAX_ANGLE_DEG = 20.0
MAX_SCALE = 1.5


@dataclass(frozen=True)
class Verdict:
    """``copy``: B is an edited copy of A; ``ncc`` the pixel agreement after alignment;
    ``inliers`` the RANSAC inliers (0 where pixels agreed without keypoints)."""

    copy: bool
    ncc: float
    inliers: int


def _band(cv2, grey: np.ndarray) -> np.ndarray:
    """Mid frequencies only: smooth skies and walls of different photos correlate in plain
    pixels; their texture does not, while an edited copy keeps it."""
    return cv2.GaussianBlur(grey, (0, 0), 2.0) - cv2.GaussianBlur(grey, (0, 0), 6.0)


def _ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    if mask is not None:
        a, b = a[mask], b[mask]
    a, b = a - a.mean(), b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else 0.0


class Verifier:
    """Verifies pairs of images, keeping each image's grey picture, its band-pass picture and
    its keypoints once. Calls may come from several threads (OpenCV releases the GIL): each
    thread has its own ORB detector and matcher; the per-image results are shared."""

    def __init__(self) -> None:
        import cv2

        self._cv2 = cv2
        self._local = threading.local()
        self._grey: dict[Path, np.ndarray] = {}
        self._band: dict[Path, np.ndarray] = {}
        self._kp: dict[Path, tuple] = {}

    def _tools(self) -> tuple:
        """This thread's ORB detector and matcher (OpenCV's objects are not shared)."""
        if not hasattr(self._local, "orb"):
            cv2 = self._cv2
            self._local.orb = cv2.ORB_create(nfeatures=500)
            self._local.matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
        return self._local.orb, self._local.matcher

    def verify_pairs(
        self, pairs: Iterable[tuple[Path, Path]], workers: int = 0, progress: bool = False
    ) -> list[Verdict]:
        """The verdict of each pair, checked by ``workers`` threads (0: one per core);
        ``progress``: a bar on stderr."""
        from tqdm import tqdm

        pairs = list(pairs)
        workers = workers or os.cpu_count() or 1
        bar = dict(total=len(pairs), unit="pair", desc="checking", disable=not progress)
        if workers == 1 or len(pairs) < 2:
            return [self(a, b) for a, b in tqdm(pairs, **bar)]
        with ThreadPoolExecutor(workers) as pool:
            return list(tqdm(pool.map(lambda p: self(*p), pairs, chunksize=16), **bar))

    def grey(self, path: Path) -> np.ndarray:
        if path not in self._grey:
            cv2 = self._cv2
            img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            if img is None:
                raise OSError(f"{path} does not decode")
            self._grey[path] = cv2.resize(img, (SIDE, SIDE), interpolation=cv2.INTER_AREA)
        return self._grey[path]

    def band(self, path: Path) -> np.ndarray:
        if path not in self._band:
            self._band[path] = _band(self._cv2, self.grey(path).astype(np.float32))
        return self._band[path]

    def keypoints(self, path: Path) -> tuple:
        if path not in self._kp:
            kp, desc = self._tools()[0].detectAndCompute(self.grey(path), None)
            self._kp[path] = (np.float32([k.pt for k in kp]), desc)
        return self._kp[path]

    def __call__(self, a: Path, b: Path) -> Verdict:
        cv2 = self._cv2
        band_a = self.band(a)
        direct = _ncc(band_a, self.band(b))
        if direct >= MIN_NCC:
            return Verdict(True, direct, 0)
        transform, inliers = self._fit(a, b)
        if transform is None:
            return Verdict(False, direct, inliers)
        gb = self.grey(b).astype(np.float32)
        warped = cv2.warpAffine(gb, transform, (SIDE, SIDE), flags=cv2.INTER_LINEAR)
        inside = cv2.warpAffine(np.ones_like(gb), transform, (SIDE, SIDE)) > 0.99
        # away from the overlap's border (and from black corners a rotation left in B)
        inside = cv2.erode(inside.astype(np.uint8), np.ones((15, 15), np.uint8)) > 0
        inside &= cv2.erode((warped > 0).astype(np.uint8), np.ones((15, 15), np.uint8)) > 0
        # the overlap must cover most of A: a copy is not a small part of another picture
        ncc = _ncc(band_a, _band(cv2, warped), inside) if inside.mean() > 0.5 else 0.0
        return Verdict(ncc >= MIN_NCC, max(ncc, direct), inliers)

    def _fit(self, a: Path, b: Path) -> tuple[np.ndarray | None, int]:
        """The similarity mapping B onto A, and its RANSAC inliers; None if none is plausible."""
        (pa, da), (pb, db) = self.keypoints(a), self.keypoints(b)
        if da is None or db is None or len(da) < 2 or len(db) < 2:
            return None, 0
        pairs = self._tools()[1].knnMatch(db, da, k=2)
        good = [m for m, *n in pairs if n and m.distance < 0.8 * n[0].distance]
        if len(good) < MIN_INLIERS:
            return None, len(good)
        src = pb[[m.queryIdx for m in good]]
        dst = pa[[m.trainIdx for m in good]]
        M, mask = self._cv2.estimateAffinePartial2D(
            src, dst, method=self._cv2.RANSAC, ransacReprojThreshold=3.0
        )
        inliers = int(mask.sum()) if mask is not None else 0
        if M is None or inliers < MIN_INLIERS:
            return None, inliers
        scale = float(np.hypot(M[0, 0], M[1, 0]))
        angle = float(np.degrees(np.arctan2(M[1, 0], M[0, 0])))
        if abs(angle) > MAX_ANGLE_DEG or not 1 / MAX_SCALE <= scale <= MAX_SCALE:
            return None, inliers
        return M, inliers
