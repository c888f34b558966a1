"""The mouth-region stream alone: the packaged face detector on a real photographed face, tracked; its bad input."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.demo.sample_corpus.face import Face, portrait
from stages.base import Reject
from stages.lip import LipConfig, MouthStage
from stages.mouth import crop, face_boxes, mouth_boxes

H, W, FPS = 120, 160, 25.0
FACE = Face(skin=(0, 0, 0), background=(0, 0, 0))


def canvas(n: int) -> np.ndarray:
    """[n, H, W] grey frames of a plain background with a little texture."""
    rng = np.random.default_rng(0)
    return np.clip(150 + rng.normal(0, 4, (n, H, W)), 0, 255).astype(np.uint8)


def paste(frames: np.ndarray, i: int, cx: float, cy: float, s: float) -> tuple[int, int, int, int]:
    """The packaged portrait (grey) at scale s centred at (cx, cy) in frame i, clipped at the borders; its box."""
    head = portrait(s, (1.0, 1.0, 1.0), False).astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    h, w = head.shape
    x0, y0 = int(round(cx - w / 2)), int(round(cy - h / 2))
    ys, xs = slice(max(y0, 0), min(y0 + h, H)), slice(max(x0, 0), min(x0 + w, W))
    if ys.start < ys.stop and xs.start < xs.stop:
        frames[i, ys, xs] = head[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0].astype(np.uint8)
    return x0, y0, w, h


def stage(**config) -> MouthStage:
    s = MouthStage(config=LipConfig(**config))
    s.setup()
    return s


def run(grey: np.ndarray, task: str = "visual_tts", **config) -> dict:
    row = {"clip_id": "c", "task": task, "lip_frames": grey, "reject_reason": None}
    [row] = stage(**config)([row])
    return row


def test_a_face_gives_mouth_crops_and_validity():
    frames = canvas(50)
    for i in range(50):
        paste(frames, i, 80 + 3 * np.sin(i / 8), 58, 1.0)
    row = run(frames)
    assert row["reject_reason"] is None
    assert row["lip"].shape == (50, 88, 88) and row["lip"].dtype == np.uint8
    assert row["lip_valid"].tolist() == [1] * 50 and row["face_share"] == 1.0
    assert "lip_frames" not in row                       # the frames do not travel further


def test_no_face_is_a_reject_for_visual_tts_with_the_share_and_masked_for_joint():
    row = run(canvas(40))
    assert (row["reject_stage"], row["reject_reason"]) == ("lip", "no_face")
    assert row["reject_detail"] == "a face was found in 0% of 40 frames (min_face_share 50%)"
    joint = run(canvas(40), task="joint")
    assert joint["reject_reason"] is None and joint["lip_valid"].sum() == 0 and joint["lip"].max() == 0
    v2s = run(canvas(40), task="v2s")
    assert v2s["reject_reason"] is None and v2s["lip"] is None     # v2s rows carry no lip stream


def test_of_several_faces_the_largest_is_tracked():
    frames = canvas(50)
    big = [paste(frames, i, 50 + 0.4 * i, 60, 1.0) for i in range(50)]   # drifts right
    for i in range(50):
        paste(frames, i, 135, 60, 0.6)                                  # a smaller face, still
    faces, valid = face_boxes(frames, FPS, detect_fps=5.0, smooth_s=0.6)
    assert valid.mean() > 0.9
    centres = faces[:, 0] + faces[:, 2] / 2
    truth = np.array([x + w / 2 for x, _, w, _ in big])
    assert np.abs(centres - truth)[valid == 1].max() < 8                  # pixels: on the big face throughout


def test_a_face_leaving_the_frame_loses_validity_there():
    frames = canvas(75)
    for i in range(75):
        paste(frames, i, 80 + max(0, i - 25) * 5.0, 58, 1.0)            # still for 1 s, then walks out right
    row = run(frames)
    valid = row["lip_valid"]
    assert valid[:25].all() and not valid[-20:].any()
    assert row["face_share"] == pytest.approx(valid.mean(), abs=1e-4) and 0.3 < valid.mean() < 0.7
    assert row["lip"][-20:].max() == 0                                  # masked rows are zero crops
    assert row["reject_reason"] is None or row["reject_reason"] == "no_face"
    strict = run(frames, min_face_share=0.9)
    assert strict["reject_reason"] == "no_face" and "of 75 frames (min_face_share 90%)" in strict["reject_detail"]


def test_a_mouth_crop_at_the_image_border_keeps_its_size_and_replicates_the_edge():
    frames = canvas(30)
    for i in range(30):
        paste(frames, i, 80, 98, 1.0)                                  # chin below the frame's bottom edge
    row = run(frames)
    assert row["reject_reason"] is None and row["lip_valid"].all()
    boxes = mouth_boxes(np.array([[20.0, 60.0, 60.0, 60.0]]))
    assert boxes[0, 1] + boxes[0, 3] > H - 10
    grey = canvas(1)[0]
    out = crop(grey, (100.0, 100.0, 40.0, 40.0), 88)                    # box running 20 px past both edges
    assert out.shape == (88, 88)
    # the part outside the image repeats the last row and column instead of turning black
    assert abs(float(out[-1, -1]) - float(grey[-1, -1])) <= 2 and out.min() > 100


def test_fixed_roi_reads_the_configured_box_on_every_frame():
    frames = canvas(20)
    frames[:, 60:90, 60:100] = 20                                       # a dark block where the box says
    row = run(frames, roi="fixed", box=[0.375, 0.5, 0.25, 0.25])
    assert row["lip_valid"].all() and row["lip"].mean() < 30
    with pytest.raises(ValueError, match="lip.box"):
        LipConfig(roi="fixed")
    with pytest.raises(ValueError, match="lip.roi"):
        LipConfig(roi="landmarks")


def test_no_frames_for_a_visual_tts_row_is_no_face():
    with pytest.raises(Reject, match="no frames"):
        stage().process({"task": "visual_tts", "lip_frames": None})
