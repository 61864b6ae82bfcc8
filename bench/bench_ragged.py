#!/usr/bin/env python3
"""DETR-style 3D set criterion (StreamPETR / PETR heads) against the usual
per-sample implementation, one run, forward + backward, one thread each.

Reference: per decoder layer and per sample, mmdet's FocalLossCost + L1 cost
in torch, scipy.optimize.linear_sum_assignment, then the sigmoid focal loss
and the code-weighted L1 loss in torch (as in StreamPETR's loss_single via
HungarianAssigner3D), summed with autograd; torch.set_num_threads(1).
drivekit: drivekit.ragged.detr3d_set_loss (one C call, gradients included)
on 1 and 2 threads. Also matching alone: scipy per sample against
drivekit.ragged.linear_sum_assignment on the same cost matrices.

Sizes: L=6 layers, Q=900 queries, C=10 classes, D=10 box codes, B=8 and 16
samples with 0-80 ground-truth boxes each. Ratios > 1 mean drivekit is faster.
"""
import time

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment as scipy_lsa

import drivekit
from drivekit import ragged

torch.set_num_threads(1)

L, Q, C, D = 6, 900, 10, 10
CLS_W, REG_W, ALPHA, GAMMA = 2.0, 0.25, 0.25, 2.0
CODE_W = [1.0] * 8 + [0.2, 0.2]


def best(fn, reps=7):
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts)


def make_inputs(B, seed):
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    cls = torch.randn(L, B, Q, C, generator=g)
    box = torch.randn(L, B, Q, D, generator=g)
    ns = rng.integers(0, 81, B)
    labels = [torch.from_numpy(rng.integers(0, C, n)) for n in ns]
    boxes = [torch.randn(int(n), D, generator=g) for n in ns]
    return cls, box, labels, boxes


def focal_cost(x, lab):
    p = x.sigmoid()
    neg = -(1 - p + 1e-12).log() * (1 - ALPHA) * p.pow(GAMMA)
    pos = -(p + 1e-12).log() * ALPHA * (1 - p).pow(GAMMA)
    return pos[:, lab] - neg[:, lab]


def reference_loss(cls, box, labels, boxes, matches=None):
    """Per-sample torch + scipy: cost, assignment, focal + L1 losses."""
    cw = torch.tensor(CODE_W)
    npos = max(1, sum(min(Q, len(lab)) for lab in labels))
    total_c, total_b = 0, 0
    for l in range(cls.shape[0]):
        lc, lb = 0, 0
        for b in range(cls.shape[1]):
            x, bp, lab, gt = cls[l, b], box[l, b], labels[b], boxes[b]
            with torch.no_grad():
                cost = CLS_W * focal_cost(x, lab) + REG_W * torch.cdist(bp[:, :8], gt[:, :8], p=1)
            r, c = scipy_lsa(cost.numpy())
            if matches is not None:
                matches.append(cost.numpy())
            r, c = torch.from_numpy(r), torch.from_numpy(c)
            tgt = torch.zeros(Q, C)
            tgt[r, lab[c]] = 1
            p = x.sigmoid()
            pt = (1 - p) * tgt + p * (1 - tgt)
            w = (ALPHA * tgt + (1 - ALPHA) * (1 - tgt)) * pt.pow(GAMMA)
            lc = lc + (torch.nn.functional.binary_cross_entropy_with_logits(
                x, tgt, reduction="none") * w).sum()
            lb = lb + ((bp[r] - gt[c]).abs() * cw).sum()
        total_c = total_c + CLS_W * lc / npos
        total_b = total_b + REG_W * lb / npos
    return total_c, total_b


def run_reference(cls, box, labels, boxes):
    x = cls.clone().requires_grad_()
    b = box.clone().requires_grad_()
    lc, lb = reference_loss(x, b, labels, boxes)
    (lc + lb).backward()
    return lc, lb, x.grad, b.grad


def run_drivekit(cls, box, labels, boxes, threads):
    x = cls.clone().requires_grad_()
    b = box.clone().requires_grad_()
    lc, lb = ragged.detr3d_set_loss(x, b, labels, boxes, cls_weight=CLS_W, reg_weight=REG_W,
                                    alpha=ALPHA, gamma=GAMMA, code_weights=CODE_W,
                                    threads=threads)
    (lc + lb).backward()
    return lc, lb, x.grad, b.grad


def row(name, t_dk, t_peer, peer):
    print(f"{name:44s} drivekit {t_dk * 1e3:8.2f} ms   {peer} {t_peer * 1e3:8.2f} ms   "
          f"ratio {t_peer / t_dk:6.2f}x")


def main():
    pool2 = drivekit.Pool(2)
    print(f"L={L} Q={Q} C={C} D={D}, 0-80 boxes per sample; forward + backward; "
          f"torch {torch.__version__}, 1 torch thread")
    for B in (8, 16):
        cls, box, labels, boxes = make_inputs(B, seed=B)
        ref = run_reference(cls, box, labels, boxes)
        got = run_drivekit(cls, box, labels, boxes, None)
        for a, r, what in zip(got, ref, ("loss_cls", "loss_bbox", "grad cls", "grad box")):
            if not torch.allclose(a, r, rtol=1e-4, atol=1e-6):   # only an exactly tied matching
                print(f"warning: B={B}: {what} differs from the reference "
                      f"(max abs diff {float((a - r).abs().max()):.3g})")
        n_boxes = sum(len(t) for t in labels)
        t_ref = best(lambda: run_reference(cls, box, labels, boxes), reps=3)
        t_1 = best(lambda: run_drivekit(cls, box, labels, boxes, None))
        t_2 = best(lambda: run_drivekit(cls, box, labels, boxes, pool2))
        row(f"set loss B={B} ({n_boxes} boxes), 1 thread", t_1, t_ref, "torch+scipy")
        row(f"set loss B={B}, 2 threads", t_2, t_ref, "torch+scipy")

        costs = []
        with torch.no_grad():
            reference_loss(cls, box, labels, boxes, matches=costs)
        tensors = [torch.from_numpy(c) for c in costs]
        ours = ragged.linear_sum_assignment(tensors)
        for c, (r, k) in zip(costs, ours):
            rr, kk = scipy_lsa(c)
            want, have = float(c[rr, kk].astype(np.float64).sum()), float(c[r, k].astype(np.float64).sum())
            if abs(want - have) > 1e-9 * max(1.0, abs(want)):
                raise SystemExit(f"B={B}: assignment cost {have} != scipy's {want}")
        t_sp = best(lambda: [scipy_lsa(c) for c in costs])
        t_m1 = best(lambda: ragged.linear_sum_assignment(tensors))
        t_m2 = best(lambda: ragged.linear_sum_assignment(tensors, threads=pool2))
        row(f"matching only, {len(costs)} matrices {Q}xn, 1 thread", t_m1, t_sp, "scipy")
        row(f"matching only, {len(costs)} matrices, 2 threads", t_m2, t_sp, "scipy")


if __name__ == "__main__":
    main()
