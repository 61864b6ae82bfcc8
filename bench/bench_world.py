#!/usr/bin/env python3
"""Throughput of `drivekit world generate`: seconds of drive rendered and
written (six 1600x900 cameras at 12 Hz, a 32-beam lidar at 20 Hz, JPEG,
.pcd.bin, tables, optionally one H.264 MP4 per camera) per second of wall time.

    /usr/bin/python3 bench/bench_world.py --build build [--seconds 3] [--threads 1,2]
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time


def run_once(drivekit, out, seconds, threads, video, width, height, seed):
    cmd = [drivekit, "world", "generate", "--out", out, "--seconds", str(seconds),
           "--threads", str(threads), "--width", str(width), "--height", str(height),
           "--seed", str(seed)]
    if not video:
        cmd.append("--no-video")
    t0 = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{p.stderr}")
    frames = 0
    for line in p.stdout.splitlines():
        if " frames, " in line:
            frames = int(line.split(" frames, ")[0].split()[-1])
    return wall, frames


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build", help="build folder (default build)")
    ap.add_argument("--seconds", type=float, default=3.0, help="drive length (default 3)")
    ap.add_argument("--threads", default="1,2", help="thread counts (default 1,2)")
    ap.add_argument("--width", type=int, default=1600)
    ap.add_argument("--height", type=int, default=900)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    drivekit = os.path.join(args.build, "bin", "drivekit")
    if not os.access(drivekit, os.X_OK):
        sys.exit(f"bench_world: {drivekit} not found; build first")
    threads = [int(t) for t in args.threads.split(",") if t]

    print(f"drivekit world generate: {args.seconds:g} s of drive at {args.width}x{args.height}, "
          f"6 cameras @ 12 Hz + LIDAR_TOP @ 20 Hz")
    print(f"{'threads':>7} {'video':>5} {'frames':>7} {'wall s':>8} {'frames/s':>9} {'drive s / wall s':>17}")
    tmp = tempfile.mkdtemp(prefix="dk_bench_world_")
    try:
        for t in threads:
            for video in (False, True):
                out = os.path.join(tmp, f"t{t}_v{int(video)}")
                wall, frames = run_once(drivekit, out, args.seconds, t, video, args.width,
                                        args.height, args.seed)
                print(f"{t:>7} {'yes' if video else 'no':>5} {frames:>7} {wall:>8.2f} "
                      f"{frames / wall:>9.1f} {args.seconds / wall:>17.3f}", flush=True)
                shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
