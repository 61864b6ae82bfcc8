#!/usr/bin/env python3
"""drivekit.data's StreamPETR training pipeline against a plain Python
pipeline in the mmdetection3d / StreamPETR style, on the same samples, one run.

Dataset (made here with `drivekit world generate`, or reused with --keep):
the sample drive at 1600x900, six cameras, key frames at 2 Hz, with the
per-camera videos.

Rows (samples/s; per sample = six 1600x900 camera images -> six 256x704
float32 CHW images normalised like StreamPETR's R50 config, lidar2img and
boxes updated):
  1. Python reference (tests/python/data_reference.py): cv2.imread, PIL
     resize / crop / flip, numpy normalise and pad, numpy box and matrix
     updates; one process, one thread (a DataLoader worker's work);
  2. drivekit Loader.from_nuscenes(preset="streampetr") with 1 and 2
     threads (its own pool; batches prefetched);
  3. the same with source="video" (frames of the H.264 videos instead of
     the JPEGs);
  4. bare decode of the six JPEGs at full size (drivekit.image.read, one
     thread): what a pipeline that decodes everything at full resolution
     pays before any augmentation.
Every row is the best of three timed runs (the same for every peer), except
the video rows, timed once over the rest of the first epoch: later passes
over this small dataset would hit the videos' decoded-frame caches. Ratios
> 1 mean drivekit is faster. Targets: >= 8x the Python reference at one
thread; near-linear scaling to 2 threads.

    PYTHONPATH=build/python /usr/bin/python3 bench/bench_data.py [--samples N]
        [--batch B] [--seconds S] [--keep DIR]
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(here), "tests", "python"))

import data_reference as ref  # noqa: E402
import drivekit  # noqa: E402
from drivekit import image as dkimage  # noqa: E402
from drivekit.data import Loader  # noqa: E402

TARGET_VS_PYTHON = 8.0


def cli():
    build = os.environ.get("DK_BUILD_DIR") or os.path.join(os.path.dirname(here), "build")
    return os.path.join(build, "bin", "drivekit")


def make_dataset(folder, seconds):
    if os.path.isdir(os.path.join(folder, "v1.0-mini")):
        return
    t0 = time.time()
    subprocess.run([cli(), "world", "generate", "--out", folder, "--seconds", str(seconds),
                    "--seed", "2"], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    print(f"dataset: generated {seconds} s of drive in {time.time() - t0:.1f} s")


REPEATS = 3   # every row: the best of this many timed runs (the machine is shared)


def run_loader(root, n_samples, batch, threads, source):
    loader = Loader.from_nuscenes(root, preset="streampetr", batch_size=batch, threads=threads,
                                  seed=0, source=source, output="numpy")
    it = iter(loader)

    def next_batch():
        nonlocal it
        b = next(it, None)
        if b is None:
            it = iter(loader)
            b = next(it)
        return b

    next_batch()   # warm-up: opens files and videos, faults memory in
    if source == "video":
        # Cold only: the rest of the first epoch. Later passes over this small
        # dataset would be served from the videos' decoded-frame caches.
        done = 0
        t0 = time.perf_counter()
        for b in it:
            done += len(b["sample_idx"])
        return done / (time.perf_counter() - t0), loader.stats()
    best = 0.0
    for _ in range(REPEATS):
        done = 0
        t0 = time.perf_counter()
        while done < n_samples:
            b = next_batch()
            done += len(b["sample_idx"])
            assert b["img"].shape[1:] == (6, 3, 256, 704)
        best = max(best, done / (time.perf_counter() - t0))
    return best, loader.stats()


def run_reference(infos, n_samples):
    pipe = ref.StreamPETRReference()
    rng = np.random.default_rng(0)
    pipe(infos[0], rng)    # warm-up
    best = 0.0
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        for i in range(n_samples):
            out = pipe(infos[i % len(infos)], rng)
            assert out["img"].shape == (6, 3, 256, 704)
        best = max(best, n_samples / (time.perf_counter() - t0))
    return best


def run_bare_decode(infos, n_samples):
    best = 0.0
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        for i in range(n_samples):
            for cam in ref.CAMS:
                dkimage.read(infos[i % len(infos)]["cams"][cam]["data_path"])
        best = max(best, n_samples / (time.perf_counter() - t0))
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=24, help="timed samples per row")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=6, help="drive length to generate")
    ap.add_argument("--keep", help="dataset folder to create or reuse")
    args = ap.parse_args()
    folder = args.keep or tempfile.mkdtemp(prefix="dk_bench_data_")
    try:
        make_dataset(folder, args.seconds)
        infos = ref.build_infos(folder)
        n = args.samples
        print(f"drivekit {drivekit.__version__}: {len(infos)} samples of 6 x 1600x900 JPEGs; "
              f"{n} timed samples per row, batch {args.batch}\n")
        rows = []
        py = run_reference(infos, max(4, n // 3))
        rows.append(("Python reference (cv2 + PIL + numpy), 1 thread", py, None))
        dk1, st1 = run_loader(folder, n, args.batch, 1, "jpeg")
        rows.append(("drivekit streampetr, jpeg, 1 thread", dk1, st1))
        dk2, _ = run_loader(folder, n, args.batch, 2, "jpeg")
        rows.append(("drivekit streampetr, jpeg, 2 threads", dk2, None))
        v1, _ = run_loader(folder, n, args.batch, 1, "video")
        rows.append(("drivekit streampetr, video, 1 thread", v1, None))
        v2, _ = run_loader(folder, n, args.batch, 2, "video")
        rows.append(("drivekit streampetr, video, 2 threads", v2, None))
        bare = run_bare_decode(infos, max(4, n // 2))
        rows.append(("bare full-size decode of the 6 JPEGs, 1 thread", bare, None))
        print(f"{'row':52s} {'samples/s':>10}")
        for name, v, _ in rows:
            print(f"{name:52s} {v:10.2f}")
        print("\nper-step time, drivekit jpeg 1 thread (ms per sample):")
        for name, sec, calls in st1["steps"]:
            print(f"  {name:26s} {1e3 * sec / max(calls, 1):8.3f}")
        fs, fc = st1["image_fused"]
        print(f"  {'image_fused (6 images)':26s} {1e3 * fs / max(fc, 1):8.3f}")
        print()
        summary = [
            ("drivekit 1 thread vs Python reference", dk1 / py, TARGET_VS_PYTHON),
            ("drivekit 2 threads vs 1 thread (scaling)", dk2 / dk1, None),
            ("drivekit 1 thread vs bare full-size JPEG decode", dk1 / bare, None),
            ("drivekit video vs jpeg source, 1 thread", v1 / dk1, None),
            ("drivekit video vs jpeg source, 2 threads", v2 / dk2, None),
        ]
        print(f"{'ratio':52s} {'value':>7} {'target':>7}")
        for name, val, target in summary:
            tgt = f">= {target:g}" if target else ""
            flag = "" if not target else ("  ok" if val >= target else "  BELOW TARGET")
            print(f"{name:52s} {val:7.2f} {tgt:>7}{flag}")
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
