"""The VBench video metrics (`t4a_jax.evaluation.video_metrics`): direct NumPy
restatements on hand-made videos, torch's own resampling and padding for the
preprocessing, and VBench's own functions where the `vbench` package is installed
(`pip install --no-deps vbench==0.1.5`: its dependencies pin numpy < 2, so CI installs
the code alone; the functions are read from its source files, since importing the
package needs decord and torchvision)."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import types

import numpy as np
import pytest

from t4a_jax.evaluation.video_metrics import (aesthetic, bicubic_resize, clip_pixels,
                                              dino_pixels, dynamic_pair_scores,
                                              dynamic_score, flow_top_mean,
                                              i2v_subject, is_dynamic, motion_smoothness,
                                              pad_to_multiple_of_8,
                                              temporal_flickering, vbench_frame_step)
from t4a_jax.models.clip import CLIP_MEAN, CLIP_STD
from t4a_jax.models.dino import IMAGENET_MEAN, IMAGENET_STD


def _video(seed: int, frames: int = 5, size: int = 12) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (frames, size, size, 3), np.uint8)


# ------------------------------------------------------------------ hand-made videos
def test_flickering_of_a_static_and_of_an_alternating_video():
    static = np.repeat(_video(0, 1), 6, axis=0)
    assert temporal_flickering(static) == 1.0
    alternating = np.zeros((4, 8, 8, 3), np.uint8)
    alternating[1::2] = 10                       # every pair differs by 10 everywhere
    assert temporal_flickering(alternating) == pytest.approx(245 / 255)
    video = _video(1)
    pairs = [np.mean(np.abs(video[i].astype(float) - video[i + 1])) for i in range(4)]
    assert temporal_flickering(video) == pytest.approx((255 - np.mean(pairs)) / 255)
    with pytest.raises(ValueError, match="expected \\[T>=2"):
        temporal_flickering(video[:1])


def test_i2v_subject_restated():
    rng = np.random.default_rng(2)
    condition, frames = rng.normal(size=8), rng.normal(size=(6, 8)) * 3
    unit = lambda v: v / np.linalg.norm(v)
    c = [max(0.0, unit(condition) @ unit(f)) for f in frames]
    s = [max(0.0, unit(frames[t - 1]) @ unit(frames[t])) for t in range(1, 6)]
    assert i2v_subject(condition, frames) == pytest.approx(
        0.4 * max(c) + 0.3 * np.mean(s) + 0.3 * min(s))
    c1, s1 = c[1:], s[1:]
    assert i2v_subject(condition, frames, skip_first=True) == pytest.approx(
        0.4 * max(c1) + 0.3 * np.mean(s1) + 0.3 * min(s1))
    assert i2v_subject(frames[0], np.repeat(frames[:1], 4, 0)) == pytest.approx(1.0)


def test_dynamic_degree_statistic_and_decision():
    shift = np.zeros((16, 16, 2))
    shift[..., 0] = 2.0                          # a uniform shift: every magnitude is 2
    assert flow_top_mean(shift) == pytest.approx(2.0)
    sparse = np.zeros((20, 20, 2))
    sparse.reshape(-1, 2)[:20, 1] = 10.0         # exactly the top 5 % (20 of 400) move
    sparse.reshape(-1, 2)[20:25, 1] = 3.0        # just below the cut: left out
    assert flow_top_mean(sparse) == pytest.approx(10.0)
    # 256 px, 16 frames: threshold 6 px, 4 pairs needed
    assert not is_dynamic([7, 7, 7, 1, 1], size=(256, 256), num_frames=16)
    assert is_dynamic([7, 1, 7, 7, 1, 7], size=(256, 256), num_frames=16)
    assert not is_dynamic([6.0] * 15, size=(256, 256), num_frames=16)     # strictly above
    assert is_dynamic([2.0] * 4, size=(64, 80), num_frames=16)            # threshold 1.5
    assert dynamic_score([1.0, 2.0, 6.0]) == pytest.approx(3.0)
    assert [vbench_frame_step(f) for f in (8, 24, 30, 4)] == [1, 3, 4, 1]


def test_aesthetic_is_the_linear_head_on_unit_embeddings_over_ten():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    embeds = rng.normal(size=(5, 16)).astype(np.float32)
    head = torch.nn.Linear(16, 1)
    with torch.no_grad():
        expected = head(torch.nn.functional.normalize(torch.from_numpy(embeds), dim=-1))
    assert aesthetic(embeds, head.weight.detach().numpy(), float(head.bias.detach())) == pytest.approx(
        float(expected.mean()) / 10, rel=1e-5)


# ------------------------------------------------------------------------ preprocessing
def test_bicubic_resize_and_padding_match_torch():
    torch = pytest.importorskip("torch")
    images = _video(4, frames=2, size=20).astype(np.float64)
    for shape in ((13, 29), (40, 20), (7, 7)):
        expected = torch.nn.functional.interpolate(
            torch.from_numpy(images).permute(0, 3, 1, 2), size=shape, mode="bicubic",
            align_corners=False, antialias=False).permute(0, 2, 3, 1).numpy()
        np.testing.assert_allclose(bicubic_resize(images, shape), expected, atol=1e-9)
    frames = _video(5, frames=2, size=8)[:, :5, :, :]                     # 5 x 8
    frames = np.concatenate([frames, frames[:, :, :3]], axis=2)           # 5 x 11
    padded = pad_to_multiple_of_8(frames)
    expected = torch.nn.functional.pad(torch.from_numpy(frames).permute(0, 3, 1, 2).double(),
                                       [2, 3, 1, 2], mode="replicate")
    np.testing.assert_array_equal(padded, expected.permute(0, 2, 3, 1).numpy())


def test_clip_and_dino_inputs():
    torch = pytest.importorskip("torch")
    images = _video(6, frames=2, size=256)
    resized = torch.nn.functional.interpolate(
        torch.from_numpy(images).permute(0, 3, 1, 2).double(), size=(224, 224),
        mode="bicubic", align_corners=False).clamp(0, 255).round()
    expected = ((resized.permute(0, 2, 3, 1).numpy() / 255.0 - np.array(CLIP_MEAN))
                / np.array(CLIP_STD))
    np.testing.assert_allclose(clip_pixels(images), expected, atol=1e-5)
    # 256 px frames (the paper's): DINO's resize is the identity, then the centre 224
    crop = images[:, 16:240, 16:240] / 255.0
    np.testing.assert_allclose(dino_pixels(images),
                               (crop - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD),
                               atol=1e-5)
    assert dino_pixels(_video(7, frames=1, size=32)).shape == (1, 224, 224, 3)


# ------------------------------------------------------------------ VBench's own code
def _vbench_source(relative: str) -> ast.Module:
    try:
        path = importlib.metadata.distribution("vbench").locate_file(relative)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("vbench is not installed (pip install --no-deps vbench==0.1.5): "
                    "the cross-check against VBench's own functions is skipped")
    return ast.parse(open(path, encoding="utf-8").read())


def _vbench_functions(relative: str, names: set[str], namespace: dict,
                      cls: str | None = None) -> dict:
    """The top-level functions (or methods of class `cls`) `names` of the VBench file
    `relative`, compiled from its source into `namespace`."""
    tree = _vbench_source(relative)
    body = tree.body if cls is None else next(
        n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls).body
    found = [n for n in body if isinstance(n, ast.FunctionDef) and n.name in names]
    assert {n.name for n in found} == names, f"{relative}: VBench's code changed"
    exec(compile(ast.Module(found, type_ignores=[]), relative, "exec"), namespace)
    return {name: namespace[name] for name in names}


def test_flickering_equals_vbenchs_mae_sequence():
    # cv2.absdiff of two float32 arrays is |a - b|: the one library call replaced
    cv2 = types.SimpleNamespace(absdiff=lambda a, b: np.abs(a - b))
    f = _vbench_functions("vbench/temporal_flickering.py", {"mae_seq", "calculate_mae"},
                          {"np": np, "cv2": cv2})
    for seed in range(3):
        video = _video(seed, frames=6)
        ours = temporal_flickering(video)
        theirs = (255.0 - np.mean(f["mae_seq"](list(video))).item()) / 255.0   # cal_score
        assert ours == pytest.approx(theirs, abs=1e-6)


def test_dynamic_degree_equals_vbenchs_methods():
    torch = pytest.importorskip("torch")
    methods = _vbench_functions("vbench/dynamic_degree.py",
                                {"get_score", "check_move", "set_params"}, {"np": np},
                                cls="DynamicDegree")
    rng = np.random.default_rng(8)
    for size, frames in (((64, 80), 16), ((256, 256), 8), ((40, 40), 3)):
        flows = [rng.gamma(1.0, 1.5, size=(*size, 2)) for _ in range(frames - 1)]
        model = types.SimpleNamespace()
        for name, fn in methods.items():
            setattr(model, name, types.MethodType(fn, model))
        model.set_params(frame=torch.zeros(1, 3, *size), count=frames)
        theirs_scores = [model.get_score(torch.zeros(1, 3, *size), torch.from_numpy(f).permute(2, 0, 1)[None])
                         for f in flows]
        ours_scores = [flow_top_mean(f) for f in flows]
        np.testing.assert_allclose(ours_scores, theirs_scores, rtol=1e-6)
        assert is_dynamic(ours_scores, size=size, num_frames=frames) == model.check_move(
            theirs_scores)


def test_i2v_subject_equals_vbenchs_function(tmp_path):
    """VBench's `i2v_subject` loop with its image reading and transforms replaced by
    identity stand-ins (they need torchvision) and a 'DINO' that returns given features:
    the scoring is VBench's code."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(9)
    features = {"cond": rng.normal(size=(1, 8)), "frames": rng.normal(size=(5, 8))}
    model = lambda image: torch.from_numpy(image.numpy().reshape(1, -1)).float()
    f = _vbench_functions(
        "vbench2_beta_i2v/i2v_subject.py", {"i2v_subject"},
        {"np": np, "torch": torch, "F": torch.nn.functional, "tqdm": lambda x: x,
         "Image": types.SimpleNamespace(open=lambda path: features["cond"][0]),
         "load_video": lambda path: features["frames"],
         "dino_transform_Image_internet": lambda: (lambda x: torch.from_numpy(x)),
         "dino_transform_internet": lambda: (lambda x: torch.from_numpy(x))})
    theirs, _ = f["i2v_subject"](model, [("cond.png", "video.mp4")], "cpu")
    assert i2v_subject(features["cond"][0], features["frames"]) == pytest.approx(theirs,
                                                                                 rel=1e-5)


def test_dynamic_degree_through_raft_equals_vbenchs_infer():
    """VBench's `DynamicDegree.infer` (its source; frames handed in instead of read from
    an mp4) and ours on the same RAFT (VBench's own RAFT code, random weights, through
    `tools.raft.RAFTFlow`): the same per-pair scores and the same decision, on frames
    that need padding (66 x 76)."""
    torch = pytest.importorskip("torch")
    _vbench_source("vbench/dynamic_degree.py")             # skips without vbench
    from tools.raft import RAFTFlow, _vbench_raft_core

    padder = importlib.import_module(_vbench_raft_core().__package__ + ".utils_core.utils")
    flow = RAFTFlow(None, "cpu")
    video = np.stack([np.roll(_video(10, frames=1, size=76)[0][:66], 2 * t, axis=1)
                      for t in range(4)])
    frames = [torch.from_numpy(f).permute(2, 0, 1).float()[None] for f in video]
    methods = _vbench_functions("vbench/dynamic_degree.py",
                                {"infer", "get_score", "check_move", "set_params"},
                                {"np": np, "torch": torch, "os": __import__("os"),
                                 "InputPadder": padder.InputPadder}, cls="DynamicDegree")
    vbench = types.SimpleNamespace(model=flow.model, get_frames=lambda path: frames)
    for name, fn in methods.items():
        setattr(vbench, name, types.MethodType(fn, vbench))
    seen = []
    get_score = vbench.get_score
    vbench.get_score = lambda img, flo: seen.append(get_score(img, flo)) or seen[-1]
    moved = vbench.infer("video.mp4")
    ours = dynamic_pair_scores(flow, video)
    np.testing.assert_allclose(ours, seen, rtol=1e-4)
    assert is_dynamic(ours, size=(66, 76), num_frames=4) == moved


def test_raft_names_a_missing_checkpoint_and_unpadded_frames(tmp_path):
    pytest.importorskip("torch")
    _vbench_source("vbench/dynamic_degree.py")
    from tools.raft import RAFTFlow

    with pytest.raises(ValueError, match="absent.pth: no such RAFT checkpoint"):
        RAFTFlow(str(tmp_path / "absent.pth"), "cpu")
    with pytest.raises(ValueError, match="multiples of 8, got 66 x 72"):
        RAFTFlow(None, "cpu")(np.zeros((66, 72, 3), np.uint8), np.zeros((66, 72, 3), np.uint8))


# ------------------------------------------------------------------ motion smoothness
class _Average:
    """A stand-in interpolator: the mean of the two frames, rounded."""

    name = "average"

    def __call__(self, a, b):
        return np.round((a.astype(np.float64) + b) / 2).astype(np.uint8)


def test_motion_smoothness_restated_and_exact_on_a_linear_fade():
    fade = np.stack([np.full((8, 8, 3), 10 * t, np.uint8) for t in range(7)])
    assert motion_smoothness(_Average(), fade) == 1.0      # midpoints are the odd frames
    video = _video(4, frames=7)
    mids = [_Average()(video[2 * i], video[2 * i + 2]) for i in range(3)]
    errors = [np.mean(np.abs(video[2 * i + 1].astype(float) - mids[i])) for i in range(3)]
    assert motion_smoothness(_Average(), video) == pytest.approx((255 - np.mean(errors)) / 255)
    with pytest.raises(ValueError, match="T>=3"):
        motion_smoothness(_Average(), video[:2])


def test_motion_smoothness_through_amt_equals_vbenchs_motion_score():
    """VBench's `MotionSmoothness.motion_score` (its source, frames handed in instead of
    read by cv2) and ours through `tools.amt.AMTInterpolator` on the same AMT-S (VBench's
    code, random weights tamed to stay finite), on frames that need padding (130 x 136)."""
    torch = pytest.importorskip("torch")
    _vbench_source("vbench/motion_smoothness.py")              # skips without vbench
    from tools.amt import AMTInterpolator
    from torch_utils import randomize_

    interpolate = AMTInterpolator(None, "cpu")
    randomize_(interpolate.model, std=0.02, seed=1)
    amt_utils = importlib.import_module("vbench.third_party.amt.utils.utils")
    cv2 = types.SimpleNamespace(absdiff=lambda a, b: np.abs(a.astype(int) - b).astype(np.uint8))
    methods = _vbench_functions(
        "vbench/motion_smoothness.py", {"motion_score", "vfi_score", "get_diff",
                                        "initialization"},
        {"np": np, "torch": torch, "cv2": cv2, "img2tensor": amt_utils.img2tensor,
         "tensor2img": amt_utils.tensor2img, "InputPadder": amt_utils.InputPadder,
         "check_dim_and_resize": amt_utils.check_dim_and_resize,
         "FrameProcess": lambda: None}, cls="MotionSmoothness")    # its fp is set below
    extract = _vbench_functions("vbench/motion_smoothness.py", {"extract_frame"}, {},
                                cls="FrameProcess")["extract_frame"]
    base = np.random.default_rng(5).integers(0, 256, (130, 140, 3), np.uint8)
    video = np.stack([base[:, t:t + 136] for t in range(5)])
    vbench = types.SimpleNamespace(model=interpolate.model, niters=1, device="cpu")
    for name, fn in methods.items():
        setattr(vbench, name, types.MethodType(fn, vbench))
    vbench.initialization()
    vbench.fp = types.SimpleNamespace(get_frames=lambda path: list(video))
    vbench.fp.extract_frame = types.MethodType(extract, vbench.fp)
    theirs = vbench.motion_score("video.mp4")
    assert motion_smoothness(interpolate, video) == pytest.approx(theirs, abs=1e-9)


def test_amt_names_a_missing_checkpoint_and_too_small_frames(tmp_path):
    pytest.importorskip("torch")
    _vbench_source("vbench/motion_smoothness.py")
    from tools.amt import AMTInterpolator

    with pytest.raises(ValueError, match="absent.pth: no such AMT-S checkpoint"):
        AMTInterpolator(str(tmp_path / "absent.pth"), "cpu")
    small = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="at least 128 px"):
        AMTInterpolator(None, "cpu")(small, small)
