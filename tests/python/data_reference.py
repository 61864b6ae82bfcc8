"""A plain Python StreamPETR-style data pipeline, independent of drivekit.

Used by the data tests (as an independent geometry reference) and by
bench/bench_data.py (as the peer drivekit is measured against). It follows
mmdetection3d / StreamPETR: infos built once from the nuScenes tables
(create_data style: sensor2lidar per camera, boxes in the lidar frame as
x, y, z, l, w, h, yaw with velocities), then per sample:
LoadMultiViewImageFromFiles (cv2.imread, BGR), ObjectRangeFilter,
ObjectNameFilter, ResizeCropFlipRotImage (PIL resize / crop / transpose /
rotate, the ida matrix into the intrinsics), GlobalRotScaleTransImage
(numpy), NormalizeMultiviewImage (float32 (x - mean) / std) and
PadMultiViewImage (size divisor 32), then CHW stacking.
"""
import json
import os

import cv2
import numpy as np
from PIL import Image

CAMS = ["CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT",
        "CAM_BACK_RIGHT"]
CLASSES = ["car", "truck", "construction_vehicle", "bus", "trailer", "barrier", "motorcycle",
           "bicycle", "pedestrian", "traffic_cone"]
NAME_MAPPING = {
    "movable_object.barrier": "barrier", "vehicle.bicycle": "bicycle",
    "vehicle.bus.bendy": "bus", "vehicle.bus.rigid": "bus", "vehicle.car": "car",
    "vehicle.construction": "construction_vehicle", "vehicle.motorcycle": "motorcycle",
    "human.pedestrian.adult": "pedestrian", "human.pedestrian.child": "pedestrian",
    "human.pedestrian.construction_worker": "pedestrian",
    "human.pedestrian.police_officer": "pedestrian",
    "movable_object.trafficcone": "traffic_cone", "vehicle.trailer": "trailer",
    "vehicle.truck": "truck",
}
PC_RANGE = [-51.2, -51.2, -5.0, 51.2, 51.2, 3.0]
MEAN = np.array([103.530, 116.280, 123.675], np.float32)
STD = np.array([57.375, 57.120, 58.395], np.float32)


def quat_to_rot(q):
    w, x, y, z = (float(v) for v in q)
    n = np.sqrt(w * w + x * x + y * y + z * z)
    w, x, y, z = w / n, x / n, y / n, z / n
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def _pose(row):
    T = np.eye(4)
    T[:3, :3] = quat_to_rot(row["rotation"])
    T[:3, 3] = row["translation"]
    return T


def build_infos(root, version=None):
    """mmdetection3d-style infos, in drivekit's sample order (scene by scene
    along the next chains)."""
    if version is None:
        version = [d for d in os.listdir(root) if d.startswith("v1.0-")][0]
    tab = {}
    for t in ("scene", "sample", "sample_data", "calibrated_sensor", "sensor", "ego_pose",
              "sample_annotation", "instance", "category"):
        with open(os.path.join(root, version, t + ".json")) as f:
            tab[t] = json.load(f)
    by = {t: {r["token"]: r for r in rows} for t, rows in tab.items()}
    channel = {}
    for cs in tab["calibrated_sensor"]:
        channel[cs["token"]] = by["sensor"][cs["sensor_token"]]["channel"]
    key_sd = {}
    for sd in tab["sample_data"]:
        if sd["is_key_frame"]:
            key_sd[(sd["sample_token"], channel[sd["calibrated_sensor_token"]])] = sd
    anns = {}
    for a in tab["sample_annotation"]:
        anns.setdefault(a["sample_token"], []).append(a)
    infos = []
    for scene in tab["scene"]:
        tok = scene["first_sample_token"]
        while tok:
            s = by["sample"][tok]
            lsd = key_sd[(tok, "LIDAR_TOP")]
            l2e = _pose(by["calibrated_sensor"][lsd["calibrated_sensor_token"]])
            e2g = _pose(by["ego_pose"][lsd["ego_pose_token"]])
            l2g = e2g @ l2e
            info = {"token": tok, "timestamp": s["timestamp"] * 1e-6, "cams": {},
                    "lidar2ego": l2e, "ego2global": e2g}
            for cam in CAMS:
                sd = key_sd[(tok, cam)]
                cs = by["calibrated_sensor"][sd["calibrated_sensor_token"]]
                c2g = _pose(by["ego_pose"][sd["ego_pose_token"]]) @ _pose(cs)
                s2l = np.linalg.inv(l2g) @ c2g
                info["cams"][cam] = {
                    "data_path": os.path.join(root, sd["filename"]),
                    "cam_intrinsic": np.array(cs["camera_intrinsic"], float),
                    "sensor2lidar_rotation": s2l[:3, :3],
                    "sensor2lidar_translation": s2l[:3, 3],
                    "timestamp": sd["timestamp"] * 1e-6,
                }
            g2l = np.linalg.inv(l2g)
            boxes, names, vels = [], [], []
            for a in anns.get(tok, []):
                c = g2l[:3, :3] @ np.array(a["translation"]) + g2l[:3, 3]
                R = g2l[:3, :3] @ quat_to_rot(a["rotation"])
                yaw = np.arctan2(R[1, 0], R[0, 0])
                w, l, h = a["size"]
                boxes.append([c[0], c[1], c[2], l, w, h, yaw])
                cat = by["category"][by["instance"][a["instance_token"]]["category_token"]]["name"]
                names.append(NAME_MAPPING.get(cat, "ignore"))
                vels.append(_velocity(a, by, g2l))
            info["gt_boxes"] = np.array(boxes, float).reshape(-1, 7)
            info["gt_names"] = np.array(names)
            info["gt_velocity"] = np.array(vels, float).reshape(-1, 2)
            infos.append(info)
            tok = s["next"]
    return infos


def _velocity(a, by, g2l, max_dt=1.5):
    prev = by["sample_annotation"].get(a["prev"]) if a["prev"] else None
    nxt = by["sample_annotation"].get(a["next"]) if a["next"] else None
    if prev is None and nxt is None:
        return [0.0, 0.0]
    first = prev or a
    last = nxt or a
    dt = (by["sample"][last["sample_token"]]["timestamp"]
          - by["sample"][first["sample_token"]]["timestamp"]) * 1e-6
    if prev is not None and nxt is not None:
        max_dt *= 2
    if dt <= 0 or dt > max_dt:
        return [0.0, 0.0]
    v = (np.array(last["translation"]) - np.array(first["translation"])) / dt
    return list((g2l[:3, :3] @ v)[:2])


def lidar2img(cam):
    """StreamPETR's lidar2img of a camera info: viewpad @ lidar2cam."""
    r = np.linalg.inv(cam["sensor2lidar_rotation"])
    t = cam["sensor2lidar_translation"] @ r.T
    rt = np.eye(4)
    rt[:3, :3] = r.T
    rt[3, :3] = -t
    viewpad = np.eye(4)
    viewpad[:3, :3] = cam["cam_intrinsic"]
    return viewpad @ rt.T


class StreamPETRReference:
    """The reference training pipeline; `rng` is a numpy Generator."""

    def __init__(self, final_dim=(256, 704), resize_lim=(0.38, 0.55), bot_pct_lim=(0.0, 0.0),
                 rand_flip=True, rot_range=(-0.3925, 0.3925), scale_range=(0.95, 1.05)):
        self.final_dim = final_dim
        self.resize_lim = resize_lim
        self.bot_pct_lim = bot_pct_lim
        self.rand_flip = rand_flip
        self.rot_range = rot_range
        self.scale_range = scale_range

    def __call__(self, info, rng):
        imgs = [cv2.imread(info["cams"][c]["data_path"]) for c in CAMS]   # BGR
        l2i = np.stack([lidar2img(info["cams"][c]) for c in CAMS])
        intr = []
        boxes, names = info["gt_boxes"].copy(), info["gt_names"]
        vel = info["gt_velocity"].copy()
        # ObjectRangeFilter (BEV) + ObjectNameFilter.
        keep = ((boxes[:, 0] > PC_RANGE[0]) & (boxes[:, 1] > PC_RANGE[1])
                & (boxes[:, 0] < PC_RANGE[3]) & (boxes[:, 1] < PC_RANGE[4]))
        keep &= np.isin(names, CLASSES)
        boxes, names, vel = boxes[keep], names[keep], vel[keep]
        labels = np.array([CLASSES.index(n) for n in names], np.int64)
        # ResizeCropFlipRotImage.
        fH, fW = self.final_dim
        out_imgs = []
        # One draw for all cameras (_sample_augmentation before the camera loop).
        H, W = imgs[0].shape[:2]
        resize = rng.uniform(*self.resize_lim)
        newW, newH = int(W * resize), int(H * resize)
        crop_h = int((1 - rng.uniform(*self.bot_pct_lim)) * newH) - fH
        crop_w = int(rng.uniform(0, max(0, newW - fW)))
        crop = (crop_w, crop_h, crop_w + fW, crop_h + fH)
        flip = bool(self.rand_flip and rng.choice([0, 1]))
        for i, img in enumerate(imgs):
            pil = Image.fromarray(np.uint8(img))
            pil = pil.resize((newW, newH))
            pil = pil.crop(crop)
            if flip:
                pil = pil.transpose(method=Image.FLIP_LEFT_RIGHT)
            pil = pil.rotate(0)
            ida = np.eye(3)
            ida[:2, :2] *= resize
            ida[:2, 2] -= np.array(crop[:2])
            if flip:
                A = np.array([[-1.0, 0.0], [0.0, 1.0]])
                ida[:2, :2] = A @ ida[:2, :2]
                ida[:2, 2] = A @ ida[:2, 2] + np.array([crop[2] - crop[0], 0])
            K = np.eye(4)
            K[:3, :3] = ida @ info["cams"][CAMS[i]]["cam_intrinsic"]
            intr.append(K)
            l2i[i] = np.eye(4)
            l2i[i][:3, :3] = ida
            l2i[i] = l2i[i] @ lidar2img(info["cams"][CAMS[i]])
            out_imgs.append(np.array(pil))
        # GlobalRotScaleTransImage (reverse_angle: the boxes turn by -angle).
        ang = rng.uniform(*self.rot_range)
        c, s = np.cos(-ang), np.sin(-ang)
        rot = np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
        boxes[:, :3] = boxes[:, :3] @ rot[:3, :3].T
        boxes[:, 6] += -ang
        vel = vel @ rot[:2, :2].T
        l2i = l2i @ np.linalg.inv(rot)
        scale = rng.uniform(*self.scale_range)
        boxes[:, :6] *= scale
        vel *= scale
        S = np.diag([scale, scale, scale, 1.0])
        l2i = l2i @ np.linalg.inv(S)
        # NormalizeMultiviewImage + PadMultiViewImage(size_divisor=32) + CHW.
        norm = []
        for img in out_imgs:
            x = (img.astype(np.float32) - MEAN) / STD
            ph = -x.shape[0] % 32
            pw = -x.shape[1] % 32
            if ph or pw:
                x = np.pad(x, ((0, ph), (0, pw), (0, 0)))
            norm.append(np.ascontiguousarray(x.transpose(2, 0, 1)))
        return {"img": np.stack(norm), "lidar2img": l2i.astype(np.float32),
                "gt_bboxes_3d": np.concatenate([boxes, vel], 1).astype(np.float32),
                "gt_labels_3d": labels}
