"""The defaults of a run that depend on its mode, written once: the run plan
(``engines.run_plan``), ``lift`` and the ``evaluate-*`` commands all take them from here.

Live mode trades a little of what offline runs keep for speed (docs/performance.md has the
measured costs): 1 denoising step in the lift instead of 4, the network's own prediction
from each sample's noise (half the sampler's time of 2 steps, and on the live fit the same
accuracy as 2 steps within half a millimetre either way: docs/performance.md, "Fourteenth
session"; its spread is widened by the temperature fitted for K = 1), and a
causal fit (no look-ahead).
"""

LIFT_STEPS = {"live": 1, "offline": 4}  # K, DDIM steps of the lift
LIFT_SAMPLES = 8  # N, samples per person (half of them from the mirrored view)
REFINE_LAG = {"live": 0, "offline": 5}  # frames of look-ahead of the keypoint fit
#: How far the keypoint fit trusts the world landmarks' shape (``FitSettings.world_weight``;
#: ``run --world-weight``): why 0.3, in engines.refinement.fitting and docs/refinement.md.
WORLD_WEIGHT = 0.3
#: Live: a frame older than this (seconds from its capture) when its fit would start is not
#: fitted (the lift's bodies go out): about three frames at 30 fps, past the latency target.
LIVE_FIT_DEADLINE_S = 0.1
#: Live: how much lower the background detector's thread is scheduled than the frame's path
#: (a nice increment, Linux). Its 11 ms calls then take a core only when the landmarks, the
#: lift and the fit leave one (measured: docs/performance.md, "The detector yields").
BACKGROUND_DETECTOR_NICE = 10
#: Live, with detector tiles (``--detector-tile-size``): a look at every tile is spread over
#: this many of the background detector's regular calls (every 10th frame), each the whole
#: frame and a quarter of the tiles, so a tiled look costs the two cores a quarter as much
#: and a small newcomer is found within 40 frames (measured: docs/performance.md, "Fifteenth
#: session").
BACKGROUND_DETECTOR_SWEEP_CALLS = 4
#: Live: how much lower the keypoints stage's threads (the landmark network's, and the
#: detector's below them) are scheduled than the lift and the fit. With the cores contended
#: a frame already past its keypoints is finished before the next frame's landmarks take
#: them, so several people's frames do not wait behind each other (measured:
#: docs/performance.md, "Later stages first").
KEYPOINTS_NICE = 10
#: Live, a video file played like a camera (``--mode live`` on a file): how much lower its
#: decoding thread and the decoder's own threads are scheduled than the lift and the fit (5
#: below the keypoints). Decoding the next frame (VP9 of the bundled clip: about 8 ms of CPU)
#: then waits for the frame in flight, as a camera's hardware would not take the cores at
#: all; the frames are stamped with their due time, so a late decode counts as latency
#: (measured: docs/performance.md, "Fifteenth session").
PACED_DECODER_NICE = 15
