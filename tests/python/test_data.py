"""drivekit.data: the nuScenes loader, its presets and custom step lists,
checked against an independent Python pipeline (data_reference.py), OpenCV
and the image content itself."""
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

import drivekit
from drivekit.data import Loader

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import data_reference as ref  # noqa: E402

BUILD = os.environ.get("DK_BUILD_DIR") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "build")
CLI = os.path.join(BUILD, "bin", "drivekit")
MEAN = np.array([103.530, 116.280, 123.675], np.float32)
STD = np.array([57.375, 57.120, 58.395], np.float32)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Two short scenes at 800x450 with videos."""
    assert os.path.exists(CLI), f"the drivekit command is not built at {CLI}"
    root = str(tmp_path_factory.mktemp("nusc"))
    subprocess.run([CLI, "world", "generate", "--out", root, "--seed", "3", "--scenes", "2",
                    "--seconds", "1.6", "--width", "800", "--height", "450", "--threads", "2"],
                   check=True, capture_output=True)
    return root


@pytest.fixture(scope="module")
def infos(dataset):
    return ref.build_infos(dataset)


def test_decode_preset_matches_opencv_and_tables(dataset, infos):
    loader = Loader.from_nuscenes(dataset, preset="decode", batch_size=2, shuffle=False,
                                  output="numpy")
    assert len(loader) == (len(infos) + 1) // 2
    seen = 0
    for batch in loader:
        img = batch["img"]
        assert img.dtype == np.uint8 and img.shape[1:] == (6, 450, 800, 3)
        for b, idx in enumerate(batch["sample_idx"]):
            info = infos[int(idx)]
            assert batch["token"][b] == info["token"]
            for c, cam in enumerate(ref.CAMS):
                rgb = cv2.imread(info["cams"][cam]["data_path"])[:, :, ::-1]
                assert np.abs(img[b, c].astype(int) - rgb).max() <= 1
                np.testing.assert_allclose(batch["lidar2img"][b, c],
                                           ref.lidar2img(info["cams"][cam]), rtol=1e-4, atol=1e-2)
                assert batch["cams.filename"][b][c] == info["cams"][cam]["data_path"]
            boxes = batch["gt_bboxes_3d"][b]
            assert boxes.shape == (len(info["gt_boxes"]), 9)
            np.testing.assert_allclose(boxes[:, :6], info["gt_boxes"][:, :6], atol=2e-3)
            dyaw = np.angle(np.exp(1j * (boxes[:, 6] - info["gt_boxes"][:, 6])))
            assert np.abs(dyaw).max() < 1e-3
            np.testing.assert_allclose(boxes[:, 7:9], info["gt_velocity"], atol=2e-3)
            seen += 1
    assert seen == len(infos)


def test_video_source_matches_jpeg(dataset):
    a = Loader.from_nuscenes(dataset, preset="decode", batch_size=3, shuffle=False,
                             output="numpy")
    v = Loader.from_nuscenes(dataset, preset="decode", batch_size=3, shuffle=False,
                             source="video", output="numpy")
    for ba, bv in zip(a, v):
        np.testing.assert_array_equal(ba["sample_idx"], bv["sample_idx"])
        diff = np.abs(ba["img"].astype(int) - bv["img"].astype(int)).mean()
        assert diff < 4.0   # JPEG vs H.264 coding noise of the same picture


def _sample_image(img_chw_bgr_norm, uv):
    """RGB 0..255 of a normalised BGR CHW image at pixel centres uv (N, 2)."""
    x = img_chw_bgr_norm.transpose(1, 2, 0) * STD + MEAN
    x = x[:, :, ::-1]
    u = np.clip(np.round(uv[:, 0]).astype(int), 0, x.shape[1] - 1)
    v = np.clip(np.round(uv[:, 1]).astype(int), 0, x.shape[0] - 1)
    return x[v, u]


def test_streampetr_geometry_is_consistent_with_content(dataset):
    """Box points projected with the augmented lidar2img land on the same
    image content as before augmentation."""
    base = Loader.from_nuscenes(dataset, preset="decode", batch_size=1, shuffle=False,
                                output="numpy")
    aug = Loader.from_nuscenes(dataset, preset="streampetr", batch_size=1, shuffle=False,
                               seed=5, output="numpy")
    hits, misses = [], []
    rng = np.random.default_rng(0)
    for b0, b1 in zip(base, aug):
        assert b1["img"].shape == (1, 6, 3, 256, 704) and b1["img"].dtype == np.float32
        assert b1["lidar2img"].shape == (1, 6, 4, 4)
        # Box centres before (decode only keeps every box) and after the
        # filters + global transform: match boxes by their label and size ratio.
        boxes0, boxes1 = b0["gt_bboxes_3d"][0], b1["gt_bboxes_3d"][0]
        if len(boxes1) == 0:
            continue
        # Scale of the global transform: sizes are scaled uniformly.
        for c in range(6):
            P0, P1 = b0["lidar2img"][0, c], b1["lidar2img"][0, c]
            for k in range(len(boxes1)):
                # The box before: same l/w/h up to the common scale, nearest.
                r = boxes1[k, 3:6] / np.maximum(boxes0[:, 3:6], 1e-6)
                j = int(np.argmin(np.abs(r - r.mean(1, keepdims=True)).sum(1) +
                                  np.abs(np.linalg.norm(boxes0[:, :2], axis=1) * r[:, 0] -
                                         np.linalg.norm(boxes1[k, :2]))))
                p0 = P0 @ np.append(boxes0[j, :3], 1.0)
                p1 = P1 @ np.append(boxes1[k, :3], 1.0)
                if p0[2] < 2 or p1[2] < 2:
                    continue
                uv0 = p0[:2] / p0[2]
                uv1 = p1[:2] / p1[2]
                if not (2 <= uv1[0] < 702 and 2 <= uv1[1] < 254 and 2 <= uv0[0] < 798
                        and 2 <= uv0[1] < 448):
                    continue
                a = b0["img"][0, c].astype(np.float32)
                col0 = a[int(round(uv0[1])), int(round(uv0[0]))]
                col1 = _sample_image(b1["img"][0, c], uv1[None])[0]
                hits.append(np.abs(col0 - col1).mean())
                rnd = rng.uniform([0, 0], [704, 256])
                misses.append(np.abs(col0 - _sample_image(b1["img"][0, c], rnd[None])[0]).mean())
    assert len(hits) >= 10, "too few visible boxes to check"
    assert np.median(hits) < 12.0
    assert np.median(hits) < 0.5 * np.median(misses)


GEOMETRY_CASES = {
    "scale": [{"op": "scale", "lo": 0.6, "hi": 0.9}],
    "rotate": [{"op": "rotate", "lo": -20, "hi": 20}],
    "flip": [{"op": "flip", "prob": 1.0}],
    "shear": [{"op": "shear", "lo": [-10, -5], "hi": [10, 5]}],
    "translate": [{"op": "translate", "lo": [-40, -30], "hi": [40, 30]}],
    "resize_crop": [{"op": "resize_crop", "lo": [0.45, 0.0], "hi": [0.6, 0.0]}],
    "chain": [{"op": "scale", "lo": 0.7, "hi": 0.9}, {"op": "rotate", "lo": -10, "hi": 10},
              {"op": "flip", "prob": 0.5}, {"op": "translate", "lo": [-20, -20], "hi": [20, 20]}],
}


@pytest.mark.parametrize("case", sorted(GEOMETRY_CASES) + ["global_3d", "chain_3d"])
def test_every_geometric_step_keeps_content(dataset, case):
    """For each geometric step alone and in chains, on the sample drive: a box
    centre projected with the OUTPUT lidar2img lands on the image content
    that the INPUT lidar2img put under it."""
    ops = GEOMETRY_CASES.get(case, GEOMETRY_CASES["chain"])
    size = [704, 256] if case == "resize_crop" else [640, 360]
    steps = [{"step": "image_decode", "source": "file"}]
    if case != "global_3d":
        steps.append({"step": "affine", "size": size, "ops": ops})
    if case in ("global_3d", "chain_3d"):
        steps.append({"step": "global_transform_3d", "rot_range": [-0.4, 0.4],
                      "scale_range": [0.9, 1.1], "flip_h_prob": 0.5, "flip_v_prob": 0.5})
    base = Loader.from_nuscenes(dataset, preset="decode", shuffle=False, output="numpy")
    aug = Loader.from_nuscenes(dataset, preset=None, steps=steps, shuffle=False, seed=3,
                               output="numpy")
    hits, misses = [], []
    rng = np.random.default_rng(1)
    for b0, b1 in zip(base, aug):
        boxes0, boxes1 = b0["gt_bboxes_3d"][0], b1["gt_bboxes_3d"][0]
        assert len(boxes0) == len(boxes1)
        img1_all = b1["img"][0]
        for c in range(6):
            P0, P1 = b0["lidar2img"][0, c], b1["lidar2img"][0, c]
            img0, img1 = b0["img"][0, c].astype(np.float32), img1_all[c].astype(np.float32)
            H1, W1 = img1.shape[:2]
            for k in range(len(boxes1)):
                p0 = P0 @ np.append(boxes0[k, :3], 1.0)
                p1 = P1 @ np.append(boxes1[k, :3], 1.0)
                if p0[2] < 2 or p1[2] < 2:
                    continue
                u0, v0 = p0[:2] / p0[2]
                u1, v1 = p1[:2] / p1[2]
                if not (2 <= u1 < W1 - 2 and 2 <= v1 < H1 - 2 and 2 <= u0 < 798 and 2 <= v0 < 448):
                    continue
                col0 = img0[int(round(v0)), int(round(u0))]
                hits.append(np.abs(col0 - img1[int(round(v1)), int(round(u1))]).mean())
                ru, rv = rng.integers(0, W1), rng.integers(0, H1)
                misses.append(np.abs(col0 - img1[rv, ru]).mean())
    assert len(hits) >= 10, "too few visible boxes to check"
    assert np.median(hits) < 12.0, np.median(hits)
    assert np.median(hits) < 0.5 * np.median(misses)


def test_numerics_against_cv2_warp_affine(dataset, infos):
    """A fixed affine that needs no DCT-scaled decode (scale 0.95, a 3 degree
    rotation, a shift) matches cv2.warpAffine with the same matrix within one
    intensity level."""
    steps = [{"step": "image_decode", "source": "file"},
             {"step": "affine", "size": [800, 450],
              
              "ops": [{"op": "scale", "lo": 0.95, "hi": 0.95}, {"op": "rotate", "lo": 3, "hi": 3},
                      {"op": "translate", "lo": [12.5, -7.25]}]}]
    loader = Loader.from_nuscenes(dataset, preset=None, steps=steps, batch_size=1,
                                  shuffle=False, output="numpy")
    batch = next(iter(loader))
    info = infos[int(batch["sample_idx"][0])]
    for c, cam in enumerate(ref.CAMS[:2]):
        src = cv2.imread(info["cams"][cam]["data_path"])[:, :, ::-1]
        K0 = info["cams"][cam]["cam_intrinsic"]
        K1 = batch["intrinsics"][0, c].astype(np.float64)
        M = (K1 @ np.linalg.inv(K0))[:2]
        want = cv2.warpAffine(np.ascontiguousarray(src), M, (800, 450), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        got = batch["img"][0, c]
        # Compare where the source position lies a pixel inside the source
        # (border blending with the fill is not the point here).
        ys, xs = np.mgrid[0:450, 0:800]
        Minv = np.linalg.inv(np.vstack([M, [0, 0, 1]]))
        sx = Minv[0, 0] * xs + Minv[0, 1] * ys + Minv[0, 2]
        sy = Minv[1, 0] * xs + Minv[1, 1] * ys + Minv[1, 2]
        inside = (sx >= 1) & (sx <= src.shape[1] - 2) & (sy >= 1) & (sy <= src.shape[0] - 2)
        assert inside.mean() > 0.5
        # Exact bilinear in float64 (OpenCV quantises source positions to
        # 1/32 pixel, which costs it up to a few levels at sharp edges).
        x0, y0 = np.floor(sx).astype(int), np.floor(sy).astype(int)
        fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]
        x0c, y0c = np.clip(x0, 0, src.shape[1] - 2), np.clip(y0, 0, src.shape[0] - 2)
        s64 = src.astype(np.float64)
        exact = ((1 - fy) * ((1 - fx) * s64[y0c, x0c] + fx * s64[y0c, x0c + 1])
                 + fy * ((1 - fx) * s64[y0c + 1, x0c] + fx * s64[y0c + 1, x0c + 1]))
        d_exact = np.abs(got[inside].astype(np.float64) - exact[inside])
        assert d_exact.max() <= 1.0, f"{cam}: max diff to exact bilinear {d_exact.max()}"
        d = np.abs(got[inside].astype(int) - want[inside].astype(int))
        assert (d <= 1).mean() > 0.995, f"{cam}: {(d > 1).mean():.5f} of pixels differ by > 1"
        assert d.max() <= 4, f"{cam}: max diff to cv2.warpAffine {d.max()}"


def test_threads_and_seed_determinism(dataset):
    def first_two(threads, seed):
        loader = Loader.from_nuscenes(dataset, batch_size=2, threads=threads, seed=seed,
                                      output="numpy")
        it = iter(loader)
        return [next(it) for _ in range(2)]

    a, b, c = first_two(1, 7), first_two(2, 7), first_two(2, 8)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["sample_idx"], y["sample_idx"])
        np.testing.assert_array_equal(x["img"], y["img"])
        np.testing.assert_array_equal(x["lidar2img"], y["lidar2img"])
    assert not np.array_equal(a[0]["img"], c[0]["img"])


def test_torch_output_and_epochs(dataset):
    loader = Loader.from_nuscenes(dataset, batch_size=2, threads=2, seed=1, world_size=2,
                                  rank=1)
    n = len(loader)
    got = [b for b in loader]
    assert len(got) == n
    b = got[0]
    assert isinstance(b["img"], torch.Tensor) and b["img"].dtype == torch.float32
    assert b["img"].shape[1:] == (6, 3, 256, 704)
    assert isinstance(b["gt_bboxes_3d"], list) and all(isinstance(t, torch.Tensor)
                                                        for t in b["gt_bboxes_3d"])
    assert b["timestamp"].dtype == torch.float64
    assert b["ego_pose"].shape[1:] == (4, 4)
    # The next epoch has another order; set_epoch(0) replays the first.
    again = [b for b in loader]
    assert len(again) == n
    loader.set_epoch(0)
    replay = [b for b in loader]
    for x, y in zip(got, replay):
        assert torch.equal(x["sample_idx"], y["sample_idx"])
    stats = loader.stats()
    assert stats["samples"] > 0 and stats["image_fused"][1] > 0
    assert any(name == "affine" for name, _, _ in stats["steps"])


def test_sequence_sampler_walks_scenes(dataset, infos):
    loader = Loader.from_nuscenes(dataset, preset="decode", batch_size=2, sampler="sequence",
                                  output="numpy")
    prev = None
    for _ in range(8):
        b = loader.next_batch()
        idx = b["sample_idx"]
        ts = b["timestamp"]
        if prev is not None:
            for k in range(2):
                # A slot either starts a scene or continues its scene.
                if b["index_in_scene"][k] != 0:
                    assert b["scene_token"][k] == prev[1][k]
                    assert idx[k] == prev[0][k] + 1 and ts[k] > prev[2][k]
        prev = (idx, b["scene_token"], ts)
        assert b["scene_token"][0] != b["scene_token"][1]


def test_bad_samples_raise_or_skip(dataset, tmp_path):
    root = str(tmp_path / "broken")
    shutil.copytree(dataset, root)
    infos = ref.build_infos(root)
    victim = infos[1]["cams"]["CAM_BACK"]["data_path"]
    with open(victim, "r+b") as f:
        f.truncate(200)
    with pytest.raises(drivekit.DecodeError) as e:
        for _ in Loader.from_nuscenes(root, batch_size=1, shuffle=False, output="numpy"):
            pass
    assert infos[1]["token"] in str(e.value) and "CAM_BACK" in str(e.value)
    loader = Loader.from_nuscenes(root, batch_size=1, shuffle=False, on_error="skip",
                                  output="numpy")
    got = [int(b["sample_idx"][0]) for b in loader]
    assert 1 not in got and len(got) == len(infos) - 1
    s = loader.stats()
    assert s["skipped"] == 1 and infos[1]["token"] in s["last_skipped"]
    os.remove(victim)
    with pytest.raises(drivekit.NotFoundError):
        for _ in Loader.from_nuscenes(root, batch_size=1, shuffle=False, output="numpy"):
            pass


def test_bad_arguments(dataset, tmp_path):
    with pytest.raises(drivekit.NotFoundError):
        Loader.from_nuscenes(str(tmp_path / "missing"))
    with pytest.raises(drivekit.InvalidArgumentError):
        Loader.from_nuscenes(dataset, preset="nope")
    with pytest.raises(drivekit.InvalidArgumentError):
        Loader.from_nuscenes(dataset, source="mp3")
    with pytest.raises(drivekit.DecodeError) as e:
        Loader.from_nuscenes(dataset, preset=None, steps=[{"step": "normalize", "mean": [1, 2]}])
    assert "mean" in str(e.value)
    with pytest.raises(drivekit.DecodeError) as e:
        Loader.from_nuscenes(dataset, preset=None, steps=[{"step": "affine", "sizes": [1, 2]}])
    assert "sizes" in str(e.value)
    with pytest.raises(drivekit.DecodeError):
        Loader.from_nuscenes(dataset, preset=None, steps=[{"step": "blur"}])
    with pytest.raises(drivekit.InvalidArgumentError):
        Loader.from_nuscenes(dataset, rank=2, world_size=2)
    with pytest.raises(ValueError):
        Loader.from_nuscenes(dataset, output="jax")


def test_cli_data_info_and_bench(dataset):
    r = subprocess.run([CLI, "data", "info", dataset], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "2 scenes" in r.stdout and "cams[6]" in r.stdout
    r = subprocess.run([CLI, "data", "bench", dataset, "--batches", "2", "--batch", "2",
                        "--threads", "2"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "samples/s" in r.stdout and "image_fused" in r.stdout and "affine" in r.stdout
    r = subprocess.run([CLI, "data", "bench", dataset, "--source", "mp3"], capture_output=True,
                       text=True)
    assert r.returncode == 2
    r = subprocess.run([CLI, "data", "info", "/nonexistent"], capture_output=True, text=True)
    assert r.returncode == 1 and "/nonexistent" in r.stderr
