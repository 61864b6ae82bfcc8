#!/usr/bin/env python3
"""Core I/O against peers on the same inputs, one run, one thread each:
JPEG decode (full size and DCT-domain 1/2 and 1/4) against OpenCV's imdecode
(IMREAD_REDUCED_COLOR_* is libjpeg's DCT scaling too), PNG decode against
OpenCV, JPEG encode against OpenCV, and uniform random floats against numpy's
Generator. Ratios > 1 mean drivekit is faster."""
import time

import cv2
import numpy as np

import drivekit

cv2.setNumThreads(1)


def best(fn, reps=15):
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts)


def row(name, t_dk, t_peer, peer):
    print(f"{name:34s} drivekit {t_dk * 1e3:8.2f} ms   {peer} {t_peer * 1e3:8.2f} ms   ratio {t_peer / t_dk:5.2f}x")


def main():
    rng = np.random.default_rng(0)
    h, w = 900, 1600
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * 255 // w), (yy * 255 // h), ((xx + yy) % 256)], -1).astype(np.uint8)
    img = np.clip(img.astype(np.int16) + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)
    jpg = bytes(drivekit.image.encode_jpeg(img, quality=90))
    png = bytes(drivekit.image.encode_png(img))
    jarr = np.frombuffer(jpg, np.uint8)
    parr = np.frombuffer(png, np.uint8)
    print(f"input: {w}x{h} RGB, JPEG q90 {len(jpg) / 1e3:.0f} kB, PNG {len(png) / 1e3:.0f} kB")

    row("JPEG decode 1/1", best(lambda: drivekit.image.decode_jpeg(jpg)),
        best(lambda: cv2.imdecode(jarr, cv2.IMREAD_COLOR)), "cv2")
    row("JPEG decode 1/2 (DCT scaled)", best(lambda: drivekit.image.decode_jpeg(jpg, scale=(1, 2))),
        best(lambda: cv2.imdecode(jarr, cv2.IMREAD_REDUCED_COLOR_2)), "cv2")
    row("JPEG decode 1/4 (DCT scaled)", best(lambda: drivekit.image.decode_jpeg(jpg, scale=(1, 4))),
        best(lambda: cv2.imdecode(jarr, cv2.IMREAD_REDUCED_COLOR_4)), "cv2")
    row("JPEG encode q90", best(lambda: drivekit.image.encode_jpeg(img, quality=90)),
        best(lambda: cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])), "cv2")
    row("PNG decode", best(lambda: drivekit.image.decode_png(png), 5),
        best(lambda: cv2.imdecode(parr, cv2.IMREAD_COLOR), 5), "cv2")
    n = 10_000_000
    gen = np.random.default_rng(1)
    row("uniform float32 x 1e7", best(lambda: drivekit.rng.uniform(1, 0, n), 5),
        best(lambda: gen.random(n, dtype=np.float32), 5), "numpy")
    t1 = best(lambda: drivekit.rng.uniform(1, 0, n, threads=1), 5)
    pool = drivekit.Pool(2)
    t2 = best(lambda: drivekit.rng.uniform(1, 0, n, threads=pool), 5)
    print(f"{'uniform float32 x 1e7, 2 threads':34s} speed-up over 1 thread {t1 / t2:5.2f}x")


if __name__ == "__main__":
    main()
