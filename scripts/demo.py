#!/usr/bin/env python3
"""`make demo`: generate a short drive as a nuScenes-layout dataset, draw the
3-D annotation boxes of one key frame into its six camera images and save the
result as one contact sheet, then run one epoch of the StreamPETR training
pipeline over the dataset (drivekit.data.Loader) and report its throughput.

    /usr/bin/python3 scripts/demo.py --build build --out out/demo
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

try:
    import cv2
except ImportError:  # pragma: no cover - Debian's python3-opencv is expected
    sys.exit("demo: needs OpenCV for Python (apt-get install python3-opencv)")

LAYOUT = [["CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT"],
          ["CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT"]]

# BGR colours by category prefix
COLOURS = [("vehicle.car", (60, 180, 255)), ("vehicle.bus", (0, 120, 255)),
           ("vehicle.truck", (0, 90, 230)), ("vehicle.trailer", (40, 60, 200)),
           ("vehicle.construction", (0, 200, 200)), ("vehicle.motorcycle", (200, 80, 255)),
           ("vehicle.bicycle", (255, 60, 200)), ("human", (255, 160, 40)),
           ("movable_object", (80, 220, 80)), ("", (255, 255, 255))]

EDGES = [(0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4),
         (0, 4), (1, 5), (2, 6), (3, 7)]


def quat_to_rot(q):
    w, x, y, z = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def load(root, version, table):
    with open(os.path.join(root, version, table + ".json")) as f:
        return json.load(f)


def corners(ann):
    w, l, h = ann["size"]
    xs = np.array([1, 1, -1, -1, 1, 1, -1, -1]) * l / 2
    ys = np.array([1, -1, -1, 1, 1, -1, -1, 1]) * w / 2
    zs = np.array([-1, -1, -1, -1, 1, 1, 1, 1]) * h / 2
    return (quat_to_rot(ann["rotation"]) @ np.stack([xs, ys, zs])).T + np.array(ann["translation"])


def draw_boxes(img, sd, anns, by_token, cat_of):
    """Projects each annotation box into the image; edges clipped at z = 0.1 m."""
    cs = by_token["calibrated_sensor"][sd["calibrated_sensor_token"]]
    ep = by_token["ego_pose"][sd["ego_pose_token"]]
    Rs, ts = quat_to_rot(cs["rotation"]), np.array(cs["translation"])
    Re, te = quat_to_rot(ep["rotation"]), np.array(ep["translation"])
    K = np.array(cs["camera_intrinsic"])
    drawn = 0
    for a in anns:
        pw = corners(a)
        pc = ((pw - te) @ Re - ts) @ Rs          # world -> ego -> camera
        if (pc[:, 2] < 0.1).all():
            continue
        name = cat_of[a["instance_token"]]
        colour = next(c for prefix, c in COLOURS if name.startswith(prefix))
        hit = False
        for i, j in EDGES:
            p, q = pc[i].copy(), pc[j].copy()
            if p[2] < 0.1 and q[2] < 0.1:
                continue
            if p[2] < 0.1:
                p = q + (p - q) * (q[2] - 0.1) / (q[2] - p[2])
            elif q[2] < 0.1:
                q = p + (q - p) * (p[2] - 0.1) / (p[2] - q[2])
            u0 = K @ p
            u1 = K @ q
            a0 = (u0[:2] / u0[2])
            a1 = (u1[:2] / u1[2])
            if np.abs(np.concatenate([a0, a1])).max() > 1e5:
                continue
            # cv2 pixel centres are integers, as in the nuScenes intrinsic: draw with subpixel shift
            ok, c0, c1 = cv2.clipLine((0, 0, img.shape[1], img.shape[0]),
                                      tuple(int(v) for v in np.round(a0)),
                                      tuple(int(v) for v in np.round(a1)))
            if ok:
                cv2.line(img, c0, c1, colour, max(1, img.shape[1] // 800), cv2.LINE_AA)
                hit = True
        drawn += hit
    return drawn


def contact_sheet(root, version, tile_w=800):
    samples = load(root, version, "sample")
    sample_data = load(root, version, "sample_data")
    anns = load(root, version, "sample_annotation")
    by_token = {t: {r["token"]: r for r in load(root, version, t)}
                for t in ("calibrated_sensor", "ego_pose", "sensor", "instance", "category")}
    cat_of = {i["token"]: by_token["category"][i["category_token"]]["name"]
              for i in by_token["instance"].values()}
    anns_of = {}
    for a in anns:
        anns_of.setdefault(a["sample_token"], []).append(a)
    # the key frame with most annotations seen in some camera
    sample = max(samples, key=lambda s: (sum(int(a["visibility_token"]) >= 2
                                             for a in anns_of.get(s["token"], [])), -s["timestamp"]))
    keys = {}
    for sd in sample_data:
        if sd["is_key_frame"] and sd["sample_token"] == sample["token"]:
            cs = by_token["calibrated_sensor"][sd["calibrated_sensor_token"]]
            keys[by_token["sensor"][cs["sensor_token"]]["channel"]] = sd
    rows, n_boxes = [], 0
    for names in LAYOUT:
        tiles = []
        for name in names:
            sd = keys[name]
            img = cv2.imread(os.path.join(root, sd["filename"]), cv2.IMREAD_COLOR)
            n_boxes += draw_boxes(img, sd, anns_of.get(sample["token"], []), by_token, cat_of)
            h = int(round(img.shape[0] * tile_w / img.shape[1]))
            img = cv2.resize(img, (tile_w, h), interpolation=cv2.INTER_AREA)
            cv2.putText(img, name, (10, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 0), 4, cv2.LINE_AA)
            cv2.putText(img, name, (10, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2, cv2.LINE_AA)
            tiles.append(img)
        rows.append(np.concatenate(tiles, axis=1))
    return np.concatenate(rows, axis=0), sample, len(anns_of.get(sample["token"], [])), n_boxes


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build", help="build folder holding bin/drivekit (default build)")
    ap.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    ap.add_argument("--seconds", type=float, default=4.0, help="drive length (default 4)")
    ap.add_argument("--seed", type=int, default=1, help="scenario seed (default 1)")
    args = ap.parse_args()

    drivekit = os.path.join(args.build, "bin", "drivekit")
    if not os.access(drivekit, os.X_OK):
        sys.exit(f"demo: {drivekit} not found; build first (make build)")
    data = os.path.join(args.out, "nuscenes")
    os.makedirs(args.out, exist_ok=True)
    cmd = [drivekit, "world", "generate", "--out", data, "--seconds", str(args.seconds),
           "--seed", str(args.seed), "--save-scenario"]
    print("demo: " + " ".join(cmd), flush=True)
    t0 = time.time()
    p = subprocess.run(cmd)
    if p.returncode != 0:
        sys.exit(f"demo: drivekit world generate failed (exit {p.returncode})")
    wall = time.time() - t0

    version = "v1.0-mini"
    sheet, sample, n_ann, n_boxes = contact_sheet(data, version)
    sheet_path = os.path.join(args.out, "contact_sheet.png")
    if not cv2.imwrite(sheet_path, sheet):
        sys.exit(f"demo: cannot write {sheet_path}")

    n_samples = len(load(data, version, "sample"))
    n_sd = len(load(data, version, "sample_data"))
    n_anns = len(load(data, version, "sample_annotation"))
    scene = load(data, version, "scene")[0]["name"]
    print()
    print(f"dataset        {data}  ({version}: {n_samples} samples, {n_sd} sample_data, "
          f"{n_anns} annotations; {args.seconds:g} s of drive in {wall:.1f} s)")
    print(f"videos         {os.path.join(data, 'video', scene)}/<CAMERA>.mp4")
    print(f"scenario       {os.path.join(data, 'scenarios', scene + '.json')}")
    print(f"contact sheet  {sheet_path}  (key frame {sample['timestamp']}, {n_ann} annotations, "
          f"{n_boxes} boxes drawn across 6 cameras)")

    # The training pipeline on the same data (the package next to the build).
    sys.path.insert(0, os.path.join(args.build, "python"))
    from drivekit.data import Loader
    loader = Loader.from_nuscenes(data, preset="streampetr", batch_size=2, threads=2, seed=0,
                                  output="numpy")
    t0 = time.time()
    n = 0
    for batch in loader:
        n += len(batch["sample_idx"])
    dt = time.time() - t0
    print(f"training data  one epoch of the streampetr pipeline: {n} samples in {dt:.2f} s "
          f"({n / dt:.1f} samples/s, 2 threads); img {tuple(batch['img'].shape)} "
          f"{batch['img'].dtype}, lidar2img {tuple(batch['lidar2img'].shape)}")


if __name__ == "__main__":
    main()
