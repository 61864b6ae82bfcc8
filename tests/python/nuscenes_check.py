"""An independent checker of a nuScenes-layout dataset (as `drivekit world
generate` writes it), in plain Python + numpy, with OpenCV for JPEG decoding
and PyAV for MP4 frames. It knows nothing of drivekit's internals: everything
is recomputed from the tables and files, the way a nuScenes user would.

    stats = check_dataset("out/nuscenes")          # raises AssertionError

Checks:
  * the 13 tables exist, tokens are unique and well formed, every *_token
    (and prev/next, first/last, log_tokens, attribute_tokens) resolves to a row
    of the right table;
  * prev/next chains (samples per scene, sample_data per scene and channel,
    annotations per instance) are consistent, complete and ordered by time;
  * every file exists; JPEG sizes equal the table's width/height; .pcd.bin
    sizes are multiples of 20 bytes (x, y, z, intensity, ring float32);
  * every sample has exactly one key frame of each of the six cameras and
    LIDAR_TOP;
  * num_lidar_pts equals the number of key-frame lidar points (lidar -> ego ->
    world through calibrated_sensor and ego_pose) inside the annotation box,
    with a 1 cm tolerance at the box faces;
  * annotations with visibility >= 2 project (centre or a corner) into at
    least one key-frame camera through calibrated_sensor, ego_pose and
    camera_intrinsic;
  * each video/<scene>/<CHANNEL>.mp4 has one frame per sample_data row of
    that channel and scene, and frame i looks like the i-th JPEG.
"""
import json
import os
import re
import struct
from collections import defaultdict

import numpy as np

TABLES = ["attribute", "calibrated_sensor", "category", "ego_pose", "instance", "log", "map",
          "sample", "sample_annotation", "sample_data", "scene", "sensor", "visibility"]
CAMERAS = ["CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT",
           "CAM_FRONT_LEFT"]
KEY_CHANNELS = set(CAMERAS) | {"LIDAR_TOP"}
TOKEN_RE = re.compile(r"^[0-9a-f]{32}$")

# field -> table it points at (lists included)
REFS = {
    "calibrated_sensor": {"sensor_token": "sensor"},
    "instance": {"category_token": "category", "first_annotation_token": "sample_annotation",
                 "last_annotation_token": "sample_annotation"},
    "map": {"log_tokens": "log"},
    "sample": {"scene_token": "scene", "prev": "sample", "next": "sample"},
    "sample_annotation": {"sample_token": "sample", "instance_token": "instance",
                          "visibility_token": "visibility", "attribute_tokens": "attribute",
                          "prev": "sample_annotation", "next": "sample_annotation"},
    "sample_data": {"sample_token": "sample", "ego_pose_token": "ego_pose",
                    "calibrated_sensor_token": "calibrated_sensor", "prev": "sample_data",
                    "next": "sample_data"},
    "scene": {"log_token": "log", "first_sample_token": "sample", "last_sample_token": "sample"},
}

FIELDS = {
    "attribute": ["token", "name", "description"],
    "calibrated_sensor": ["token", "sensor_token", "translation", "rotation", "camera_intrinsic"],
    "category": ["token", "name", "description"],
    "ego_pose": ["token", "timestamp", "rotation", "translation"],
    "instance": ["token", "category_token", "nbr_annotations", "first_annotation_token",
                 "last_annotation_token"],
    "log": ["token", "logfile", "vehicle", "date_captured", "location"],
    "map": ["token", "log_tokens", "category", "filename"],
    "sample": ["token", "timestamp", "prev", "next", "scene_token"],
    "sample_annotation": ["token", "sample_token", "instance_token", "visibility_token",
                          "attribute_tokens", "translation", "size", "rotation", "prev", "next",
                          "num_lidar_pts", "num_radar_pts"],
    "sample_data": ["token", "sample_token", "ego_pose_token", "calibrated_sensor_token",
                    "timestamp", "fileformat", "is_key_frame", "height", "width", "filename",
                    "prev", "next"],
    "scene": ["token", "log_token", "nbr_samples", "first_sample_token", "last_sample_token",
              "name", "description"],
    "sensor": ["token", "channel", "modality"],
    "visibility": ["token", "level", "description"],
}


def quat_to_rot(q):
    w, x, y, z = (float(v) for v in q)
    n = np.sqrt(w * w + x * x + y * y + z * z)
    assert abs(n - 1) < 1e-6, f"quaternion {q} is not unit"
    w, x, y, z = w / n, x / n, y / n, z / n
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def jpeg_size(path):
    """(width, height) from the first SOF marker of a baseline/progressive JPEG."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:2] == b"\xff\xd8", f"{path}: not a JPEG"
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h
        i += 2 + length
    raise AssertionError(f"{path}: no SOF marker")


def load_tables(root, version="v1.0-mini"):
    tables = {}
    for t in TABLES:
        path = os.path.join(root, version, t + ".json")
        assert os.path.isfile(path), f"missing table {path}"
        with open(path) as f:
            rows = json.load(f)
        assert isinstance(rows, list), f"{t}.json is not a JSON array"
        tables[t] = rows
    return tables


def box_corners(ann):
    """The 8 corners (8, 3) and centre of an annotation box, world frame."""
    w, l, h = ann["size"]
    R = quat_to_rot(ann["rotation"])
    c = np.array(ann["translation"], float)
    xs = np.array([1, 1, -1, -1, 1, 1, -1, -1]) * l / 2
    ys = np.array([1, -1, -1, 1, 1, -1, -1, 1]) * w / 2
    zs = np.array([-1, -1, -1, -1, 1, 1, 1, 1]) * h / 2
    return (R @ np.stack([xs, ys, zs])).T + c, c


def points_in_box(pw, ann, margin):
    """Number of world points within the box grown by margin (metres)."""
    w, l, h = ann["size"]
    R = quat_to_rot(ann["rotation"])
    local = (pw - np.array(ann["translation"], float)) @ R
    inside = ((np.abs(local[:, 0]) <= l / 2 + margin) & (np.abs(local[:, 1]) <= w / 2 + margin)
              & (np.abs(local[:, 2]) <= h / 2 + margin))
    return int(inside.sum())


def sensor_to_world(sd, by):
    """(R, t) of the sample_data's sensor frame to world."""
    cs = by["calibrated_sensor"][sd["calibrated_sensor_token"]]
    ep = by["ego_pose"][sd["ego_pose_token"]]
    Rs, ts = quat_to_rot(cs["rotation"]), np.array(cs["translation"], float)
    Re, te = quat_to_rot(ep["rotation"]), np.array(ep["translation"], float)
    return Re @ Rs, Re @ ts + te


def project(points_world, sd, by):
    """Pixel coordinates (nuScenes convention: centres on integers) and depth."""
    cs = by["calibrated_sensor"][sd["calibrated_sensor_token"]]
    R, t = sensor_to_world(sd, by)
    pc = (points_world - t) @ R           # world -> camera: R^T (p - t)
    K = np.array(cs["camera_intrinsic"], float)
    z = pc[:, 2]
    uv = (pc @ K.T)[:, :2] / np.where(np.abs(z) < 1e-9, 1e-9, z)[:, None]
    return uv, z


def _check_chain(rows_by_token, start, end, members, what, time_of):
    """Follows next from `start`; checks prev links, order, coverage, end."""
    seen = []
    tok, prev = start, ""
    while tok:
        assert tok in members, f"{what}: chain reaches {tok} outside the group"
        row = rows_by_token[tok]
        assert row["prev"] == prev, f"{what}: {tok}.prev = {row['prev']!r}, expected {prev!r}"
        if seen:
            assert time_of(row) > time_of(rows_by_token[seen[-1]]), f"{what}: not ordered by time at {tok}"
        seen.append(tok)
        assert len(seen) <= len(members), f"{what}: cycle"
        prev, tok = tok, row["next"]
    assert set(seen) == set(members), f"{what}: chain covers {len(seen)} of {len(members)} rows"
    if end is not None:
        assert seen[-1] == end, f"{what}: chain ends at {seen[-1]}, expected {end}"
    return seen


def check_dataset(root, version="v1.0-mini", check_video=True, video_mad=12.0,
                  lidar_tol=0.01, max_video_frames=None):
    t = load_tables(root, version)
    by = {}
    for name, rows in t.items():
        idx = {}
        for r in rows:
            missing = [f for f in FIELDS[name] if f not in r]
            assert not missing, f"{name}: row {r.get('token')} lacks {missing}"
            tok = r["token"]
            if name == "visibility":
                assert tok in ("1", "2", "3", "4"), f"visibility token {tok!r}"
            else:
                assert TOKEN_RE.match(tok), f"{name}: bad token {tok!r}"
            assert tok not in idx, f"{name}: duplicate token {tok}"
            idx[tok] = r
        by[name] = idx
    assert len(t["visibility"]) == 4
    assert {v["level"] for v in t["visibility"]} == {"v0-40", "v40-60", "v60-80", "v80-100"}

    # every reference resolves
    for name, refs in REFS.items():
        for r in t[name]:
            for field, target in refs.items():
                vals = r[field] if isinstance(r[field], list) else [r[field]]
                for v in vals:
                    if field in ("prev", "next") and v == "":
                        continue
                    assert v in by[target], f"{name} {r['token']}: {field} {v!r} not in {target}"

    # calibrated sensors: cameras have a 3x3 intrinsic, lidars []
    for cs in t["calibrated_sensor"]:
        sensor = by["sensor"][cs["sensor_token"]]
        if sensor["modality"] == "camera":
            K = np.array(cs["camera_intrinsic"], float)
            assert K.shape == (3, 3) and K[2, 2] == 1 and K[0, 1] == 0, f"bad intrinsic {K}"
        else:
            assert cs["camera_intrinsic"] == [], "lidar with camera_intrinsic"
        quat_to_rot(cs["rotation"])

    def channel_of(sd):
        return by["sensor"][by["calibrated_sensor"][sd["calibrated_sensor_token"]]["sensor_token"]]["channel"]

    # samples per scene
    samples_of_scene = defaultdict(list)
    for s in t["sample"]:
        samples_of_scene[s["scene_token"]].append(s["token"])
    scene_of_sample = {}
    for sc in t["scene"]:
        members = samples_of_scene[sc["token"]]
        assert len(members) == sc["nbr_samples"], f"scene {sc['name']}: nbr_samples"
        _check_chain(by["sample"], sc["first_sample_token"], sc["last_sample_token"], members,
                     f"scene {sc['name']} samples", lambda r: r["timestamp"])
        for s in members:
            scene_of_sample[s] = sc["token"]

    # sample_data: chains per (scene, channel), files, sizes, key frames
    groups = defaultdict(list)
    key_of_sample = defaultdict(dict)
    n_points = {}
    for sd in t["sample_data"]:
        ch = channel_of(sd)
        groups[(scene_of_sample[sd["sample_token"]], ch)].append(sd["token"])
        assert sd["ego_pose_token"] in by["ego_pose"]
        assert by["ego_pose"][sd["ego_pose_token"]]["timestamp"] == sd["timestamp"]
        path = os.path.join(root, sd["filename"])
        assert os.path.isfile(path), f"missing file {path}"
        prefix = "samples/" if sd["is_key_frame"] else "sweeps/"
        assert sd["filename"].startswith(prefix + ch + "/"), f"{sd['filename']}: wrong folder"
        if sd["fileformat"] == "jpg":
            w, h = jpeg_size(path)
            assert (w, h) == (sd["width"], sd["height"]), f"{path}: {w}x{h} vs table {sd['width']}x{sd['height']}"
        else:
            assert sd["fileformat"] == "pcd", sd["fileformat"]
            size = os.path.getsize(path)
            assert size % 20 == 0, f"{path}: {size} bytes is not a multiple of 20"
            n_points[sd["token"]] = size // 20
        if sd["is_key_frame"]:
            assert ch not in key_of_sample[sd["sample_token"]], f"two {ch} key frames in a sample"
            key_of_sample[sd["sample_token"]][ch] = sd
            assert sd["timestamp"] == by["sample"][sd["sample_token"]]["timestamp"] or ch != "LIDAR_TOP"
    for (scene, ch), members in groups.items():
        starts = [m for m in members if by["sample_data"][m]["prev"] == ""]
        assert len(starts) == 1, f"{ch}: {len(starts)} chain starts"
        _check_chain(by["sample_data"], starts[0], None, members, f"sample_data {ch}",
                     lambda r: r["timestamp"])
    for s in t["sample"]:
        chans = set(key_of_sample[s["token"]])
        assert KEY_CHANNELS <= chans, f"sample {s['token']}: key frames {sorted(chans)}"
        # a sweep points at the next sample: key frame times bracket it
    for sd in t["sample_data"]:
        if not sd["is_key_frame"]:
            s = by["sample"][sd["sample_token"]]
            assert sd["timestamp"] <= s["timestamp"] or s["next"] == "", "sweep after its sample"
            if s["prev"]:
                assert sd["timestamp"] > by["sample"][s["prev"]]["timestamp"], "sweep before previous sample"

    # annotations per instance
    anns_of_instance = defaultdict(list)
    for a in t["sample_annotation"]:
        anns_of_instance[a["instance_token"]].append(a["token"])
        assert len(a["size"]) == 3 and min(a["size"]) > 0
        assert a["num_radar_pts"] == 0
    for inst in t["instance"]:
        members = anns_of_instance[inst["token"]]
        assert len(members) == inst["nbr_annotations"], "nbr_annotations"
        _check_chain(by["sample_annotation"], inst["first_annotation_token"],
                     inst["last_annotation_token"], members, f"instance {inst['token']}",
                     lambda r: by["sample"][r["sample_token"]]["timestamp"])
    assert sum(len(v) for v in anns_of_instance.values()) == len(t["sample_annotation"])

    # num_lidar_pts from the key-frame sweep
    anns_of_sample = defaultdict(list)
    for a in t["sample_annotation"]:
        anns_of_sample[a["sample_token"]].append(a)
    n_visible_checked = 0
    for s in t["sample"]:
        lid = key_of_sample[s["token"]]["LIDAR_TOP"]
        pts = np.fromfile(os.path.join(root, lid["filename"]), dtype="<f4").reshape(-1, 5)
        R, tr = sensor_to_world(lid, by)
        pw = pts[:, :3].astype(np.float64) @ R.T + tr
        for a in anns_of_sample[s["token"]]:
            lo = points_in_box(pw, a, -lidar_tol)
            hi = points_in_box(pw, a, lidar_tol)
            assert lo <= a["num_lidar_pts"] <= hi, (
                f"annotation {a['token']}: num_lidar_pts {a['num_lidar_pts']} but "
                f"{lo}..{hi} points inside the box")
            if int(a["visibility_token"]) >= 2:
                corners, centre = box_corners(a)
                pts3 = np.vstack([corners, centre])
                ok = False
                for cam in CAMERAS:
                    sd = key_of_sample[s["token"]][cam]
                    uv, z = project(pts3, sd, by)
                    inside = ((z > 0.1) & (uv[:, 0] >= -0.5) & (uv[:, 0] < sd["width"] - 0.5)
                              & (uv[:, 1] >= -0.5) & (uv[:, 1] < sd["height"] - 0.5))
                    ok |= bool(inside.any())
                assert ok, f"annotation {a['token']} (visibility {a['visibility_token']}) projects into no camera"
                n_visible_checked += 1

    # maps exist
    for m in t["map"]:
        assert os.path.isfile(os.path.join(root, m["filename"])), m["filename"]

    # videos
    n_video_frames = 0
    if check_video:
        import av
        import cv2
        for sc in t["scene"]:
            for cam in CAMERAS:
                members = groups.get((sc["token"], cam), [])
                rows = sorted((by["sample_data"][m] for m in members), key=lambda r: r["timestamp"])
                path = os.path.join(root, "video", sc["name"], cam + ".mp4")
                assert os.path.isfile(path), f"missing {path}"
                frames = 0
                with av.open(path) as container:
                    for i, frame in enumerate(container.decode(video=0)):
                        frames += 1
                        if i >= len(rows) or (max_video_frames and i >= max_video_frames):
                            continue
                        img = frame.to_ndarray(format="rgb24").astype(np.int16)
                        jpg = cv2.imread(os.path.join(root, rows[i]["filename"]), cv2.IMREAD_COLOR)
                        jpg = jpg[:, :, ::-1].astype(np.int16)
                        h, w = img.shape[:2]
                        mad = float(np.abs(img - jpg[:h, :w]).mean())
                        assert mad < video_mad, f"{path}: frame {i} differs from {rows[i]['filename']} (MAD {mad:.1f})"
                assert frames == len(rows), f"{path}: {frames} frames, {len(rows)} sample_data rows"
                n_video_frames += frames

    return {
        "scenes": len(t["scene"]),
        "samples": len(t["sample"]),
        "sample_data": len(t["sample_data"]),
        "annotations": len(t["sample_annotation"]),
        "instances": len(t["instance"]),
        "visible_checked": n_visible_checked,
        "lidar_points": int(sum(n_points.values())),
        "video_frames": n_video_frames,
        "tables": t,
    }


if __name__ == "__main__":
    import sys
    stats = check_dataset(sys.argv[1], *(sys.argv[2:3]))
    stats.pop("tables")
    print(stats)
