#!/usr/bin/env python3
"""Runs every bench/bench_*.py (drivekit and its peers on the same inputs, one
run) and prints their tables. Usage: run.py [--build DIR] [NAME ...]"""
import argparse
import os
import subprocess
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))
repo = os.path.dirname(here)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--build", default="build", help="build directory (default: build)")
    ap.add_argument("names", nargs="*", help="only these benchmarks (e.g. core world)")
    args = ap.parse_args()
    build = os.path.abspath(os.path.join(repo, args.build))
    env = dict(os.environ, PYTHONPATH=os.path.join(build, "python"), DK_BUILD_DIR=build)
    scripts = sorted(f for f in os.listdir(here) if f.startswith("bench_") and f.endswith(".py"))
    if args.names:
        scripts = [s for s in scripts if s[len("bench_"):-3] in args.names]
    failed = 0
    for s in scripts:
        print(f"== {s}", flush=True)
        t0 = time.time()
        rc = subprocess.call([sys.executable, os.path.join(here, s)], env=env)
        print(f"== {s}: {'ok' if rc == 0 else 'FAILED'} in {time.time() - t0:.1f}s\n", flush=True)
        failed += rc != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
