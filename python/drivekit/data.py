"""Multi-camera training data: nuScenes samples through drivekit's C pipeline.

:class:`Loader` runs a sampler, the nuScenes sample source and a pipeline of
steps (image decode with DCT-domain downscaling or video frames, one fused
pass per image for warp + photometric + normalise + pad + layout, 3-D
augmentation and box filters) on a thread pool with batches prefetched, and
hands each batch over as arrays that view one buffer (no copies)::

    from drivekit.data import Loader
    loader = Loader.from_nuscenes("out/demo/nuscenes", preset="streampetr",
                                  batch_size=2, threads=2, seed=0)
    for batch in loader:          # one epoch
        img = batch["img"]        # torch.float32 (B, 6, 3, 256, 704)
        l2i = batch["lidar2img"]  # (B, 6, 4, 4)
        boxes = batch["gt_bboxes_3d"]   # list of B tensors (N_i, 9)

Batch keys: every field of the pipeline's output format by its path with
array indices removed ("cams.image"), plus these StreamPETR-style names:
``img`` (cams.image), ``lidar2img``, ``intrinsics``, ``cam2ego``,
``cam_ego2global`` (cams.ego2global), ``img_timestamp`` (cams.timestamp),
``ego_pose`` (ego2global at the lidar time), and ``sample_idx`` (dataset
indices). Fields with a per-sample length (boxes, labels, points) are lists
of per-sample arrays; strings are lists of ``str`` (lists of lists under
arrays).

Randomness comes from (seed, epoch, sample index, step), so a batch is the
same for any thread count. ``on_error="raise"`` stops at a bad sample with
an error naming its token and file; ``"skip"`` leaves it out and counts it
in :meth:`Loader.stats`.
"""
import json

import numpy as np

from . import _drivekit

_ALIASES = {
    "cams.image": "img",
    "cams.lidar2img": "lidar2img",
    "cams.intrinsic": "intrinsics",
    "cams.cam2ego": "cam2ego",
    "cams.ego2global": "cam_ego2global",
    "cams.timestamp": "img_timestamp",
    "ego2global": "ego_pose",
}


def _to(arr, torch_out):
    if torch_out:
        import torch
        return torch.from_dlpack(arr)
    return np.from_dlpack(arr)


class Loader:
    """Iterable of batches (dicts). Build with :meth:`from_nuscenes`."""

    def __init__(self, handle, torch_out, sampler):
        self._h = handle
        self._torch = torch_out
        self._sampler = sampler
        self._epoch = 0

    @classmethod
    def from_nuscenes(cls, root, preset="streampetr", *, batch_size=1, threads=1, seed=0,
                      rank=0, world_size=1, source="jpeg", steps=None, sampler="shuffled",
                      shuffle=True, drop_last=False, prefetch=2, on_error="raise",
                      points=False, version=None, output="torch"):
        """A loader over the nuScenes dataset at ``root`` (v1.0 tables).

        ``preset``: "streampetr" (training augmentation at 256x704),
        "streampetr_test", "decode", or None (only ``steps``). ``steps``: a
        list of step dicts appended after the preset, e.g.
        ``[{"step": "photometric"}]`` (see dk_pipeline_add_json).
        ``source``: "jpeg" (the key-frame JPEGs) or "video" (frames of the
        per-camera videos). ``sampler``: "shuffled" (DistributedSampler-like,
        by ``rank``/``world_size``) or "sequence" (each batch slot walks
        scenes in order, as StreamPETR trains; never ends). ``output``:
        "torch" or "numpy".
        """
        if output not in ("torch", "numpy"):
            raise ValueError(f"output must be 'torch' or 'numpy', not {output!r}")
        steps_json = json.dumps(list(steps)) if steps else None
        h = _drivekit.loader_create(str(root), version=version, preset=preset,
                                    steps_json=steps_json, source=source,
                                    batch_size=int(batch_size), threads=int(threads),
                                    seed=int(seed), rank=int(rank), world_size=int(world_size),
                                    sampler=sampler, shuffle=bool(shuffle),
                                    drop_last=bool(drop_last), prefetch=int(prefetch),
                                    on_error=on_error, points=bool(points))
        return cls(h, output == "torch", sampler)

    def __len__(self):
        n = self._h.info()["batches_per_epoch"]
        if n < 0:
            raise TypeError("a sequence loader has no length (it never ends)")
        return n

    @property
    def format(self):
        """The pipeline's output format, as indented text."""
        return self._h.info()["format"]

    def set_epoch(self, epoch):
        """Restart at ``epoch`` (like DistributedSampler.set_epoch)."""
        self._h.set_epoch(int(epoch))
        self._epoch = int(epoch)

    def stats(self):
        """Counters and times: batches, samples, skipped, read/pipeline/
        collate/wait seconds, per-step (name, seconds, calls) and the fused
        image passes."""
        return self._h.stats()

    def next_batch(self):
        """The next batch, or None at the end of an epoch."""
        r = self._h.next()
        if r is None:
            self._epoch += 1
            return None
        return self._convert(*r)

    def __iter__(self):
        while True:
            b = self.next_batch()
            if b is None:
                return
            yield b

    def _convert(self, indices, epoch, fields):
        out = {"sample_idx": _to(indices, self._torch), "epoch": epoch}
        for name, ragged, is_string, data, sizes in fields:
            if not ragged:
                value = _to(data, self._torch)
            else:
                sz = np.from_dlpack(sizes)
                flat = sz.reshape(-1)
                cuts = np.cumsum(flat)[:-1]
                if is_string:
                    arr = np.from_dlpack(data)
                    parts = [bytes(p).decode("utf-8", "replace") for p in np.split(arr, cuts)]
                elif self._torch:
                    parts = list(_to(data, True).split([int(v) for v in flat]))
                else:
                    parts = np.split(np.from_dlpack(data), cuts)
                if sz.ndim == 2:
                    w = sz.shape[1]
                    parts = [parts[i * w:(i + 1) * w] for i in range(sz.shape[0])]
                value = parts
            out[name] = value
            if name in _ALIASES:
                out[_ALIASES[name]] = value
        return out

