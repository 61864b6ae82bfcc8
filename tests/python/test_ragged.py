"""Tests of drivekit.ragged: every op against a per-sample torch reference on
1000 random trials (forward and gradients; empty and size-1 samples
included), assignment costs equal to scipy's, the fused DETR set loss against
a per-sample torch + scipy implementation, bad input.

Run: PYTHONPATH=build/python /usr/bin/python3 -m pytest -q tests/python/test_ragged.py
"""
import numpy as np
import pytest

import torch  # noqa: E402  (Debian python3-torch, installed by scripts/setup)
import scipy.optimize as scipy_optimize  # noqa: E402

import drivekit  # noqa: E402
from drivekit import ragged as R  # noqa: E402

torch.set_num_threads(1)
TRIALS = 1000


def sizes_for(rng, S, maxn):
    """Random sizes with empty and size-1 samples over-represented."""
    out = []
    for _ in range(S):
        u = rng.random()
        out.append(0 if u < 0.2 else 1 if u < 0.4 else int(rng.integers(0, maxn + 1)))
    return out


def ragged_from(parts, dim=0):
    return R.combine_data(parts, non_uniform_dim=dim)


def randn(rng, *shape, dtype=torch.float64):
    return torch.from_numpy(rng.standard_normal(shape)).to(dtype)


def grads(out, inputs, gout):
    ins = [t for t in inputs if t.requires_grad]
    return torch.autograd.grad(out, ins, gout, allow_unused=True)


def close(a, b, tol=1e-12):
    if a is None or b is None:
        return (a is None or not a.abs().any()) and (b is None or not b.abs().any())
    return a.shape == b.shape and torch.allclose(a, b, rtol=tol, atol=tol)


# --------------------------------------------------------------------------
# RaggedBatch, combine / split, packed form


def test_raggedbatch_basics():
    t = torch.arange(24.0).reshape(3, 4, 2)
    rb = R.RaggedBatch(t, sample_sizes=torch.tensor([2, 0, 4]))
    assert rb.num_batch_dims == 1 and rb.non_uniform_dim == 1 and rb.max_sample_size == 4
    assert rb.mask.tolist() == [[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]]
    assert rb.total_num_entries == 6 and rb.total_num_samples_in_batch == 3
    rb2 = R.RaggedBatch(t, mask=rb.mask)
    assert rb2.sample_sizes.tolist() == [2, 0, 4]
    parts = rb.split()
    assert [p.shape[0] for p in parts] == [2, 0, 4] and torch.equal(parts[2], t[2])
    filled = rb.with_padded_set_to(-1.0)
    assert filled.tensor[0, 2:].eq(-1).all() and filled.tensor[1].eq(-1).all()
    assert torch.equal(filled.tensor[2], t[2])
    over = R.RaggedBatch.FromOversizeTensor(torch.zeros(2, 7), sample_sizes=torch.tensor([1, 3]))
    assert over.max_sample_size == 3
    full = R.RaggedBatch.FromFullTensor(torch.zeros(2, 5, 3))
    assert full.sample_sizes.tolist() == [5, 5]
    rb4 = R.RaggedBatch(torch.zeros(2, 3, 5), sample_sizes=torch.tensor([[1, 2, 0], [5, 5, 3]]))
    assert rb4.num_batch_dims == 2 and rb4.non_uniform_dim == 2
    flat = rb4.flatten_batch_dims()
    assert flat.sample_sizes.tolist() == [1, 2, 0, 5, 5, 3] and flat.non_uniform_dim == 1
    nested = rb4.split()
    assert len(nested) == 2 and len(nested[1]) == 3 and nested[1][2].shape == (3,)
    tr = R.RaggedBatch(torch.zeros(2, 3, 4), sample_sizes=torch.tensor([1, 3]), non_uniform_dim=2)
    assert tr.get_non_uniform_dimension_transposed_to(1).non_uniform_dim == 1
    assert "sample_sizes=[2, 0, 4]" in repr(rb)


def test_raggedbatch_bad_sizes():
    t = torch.zeros(2, 3)
    with pytest.raises(drivekit.RangeError, match="sample 1 has size 4"):
        R.RaggedBatch(t, sample_sizes=torch.tensor([1, 4]))
    with pytest.raises(drivekit.RangeError):
        R.RaggedBatch(t, sample_sizes=torch.tensor([-1, 0]))
    with pytest.raises(drivekit.InvalidArgumentError, match="batch shape"):
        R.RaggedBatch(t, sample_sizes=torch.tensor([1, 1, 1]))
    bad_mask = torch.tensor([[True, False, True], [False, False, False]])
    with pytest.raises(drivekit.DecodeError, match="sample 0"):
        R.RaggedBatch(t, mask=bad_mask)


def test_combine_split_packed_random():
    rng = np.random.default_rng(1)
    for trial in range(TRIALS):
        S = int(rng.integers(1, 5))
        sizes = sizes_for(rng, S, 5)
        feat = tuple(int(x) for x in rng.integers(1, 4, int(rng.integers(0, 3))))
        parts = [randn(rng, n, *feat).requires_grad_() for n in sizes]
        rb = R.combine_data(parts, filler_value=7.0)
        assert rb.sample_sizes.tolist() == sizes
        for p, q in zip(parts, rb.split()):
            assert torch.equal(p, q)
        m = rb.max_sample_size
        for s, n in enumerate(sizes):
            assert rb.tensor[s, n:].eq(7.0).all()
        values, offsets = rb.to_packed()
        assert torch.equal(values, torch.cat(parts)) if sum(sizes) else values.shape[0] == 0
        assert offsets.tolist() == [0] + list(np.cumsum(sizes))
        back = R.RaggedBatch.from_packed(values, offsets, max_size=m, filler_value=0.0)
        assert back.sample_sizes.tolist() == sizes
        for p, q in zip(parts, back.split()):
            assert torch.equal(p, q)
        # gradients: combine -> packed -> padded -> sum with random weights
        w = randn(rng, *back.tensor.shape)
        got = grads((back.tensor * w).sum(), parts, None)
        want = [w[s, :n] for s, n in enumerate(sizes)]
        for g, r in zip(got, want):
            assert close(g, r)
        # fillers set through autograd: gradient only to the valid entries
        x = rb.tensor.detach().clone().requires_grad_()
        filled = rb.create_with_sample_sizes_like_self(x).with_padded_set_to(-3.0)
        for s, n in enumerate(sizes):
            assert filled.tensor[s, n:].eq(-3.0).all() and torch.equal(filled.tensor[s, :n], x[s, :n])
        (g,) = grads(filled.tensor, [x], w)
        assert close(g, w * rb.mask.reshape(rb.mask.shape + (1,) * (w.dim() - 2)))


def test_combine_nested_and_mismatch():
    a = [[torch.zeros(1, 2), torch.zeros(3, 2)], [torch.zeros(0, 2), torch.zeros(2, 2)]]
    rb = R.combine_data(a, flatten_batch_dims=False)
    assert rb.batch_shape == (2, 2) and rb.sample_sizes.tolist() == [[1, 3], [0, 2]]
    with pytest.raises(drivekit.InvalidArgumentError, match="part 1"):
        R.combine_data([torch.zeros(1, 2), torch.zeros(1, 3)])


# --------------------------------------------------------------------------
# Indexing ops


def random_indices(rng, S, limits, K, unique=False):
    """A RaggedBatch of indices per sample below limits[s]."""
    parts = []
    for s in range(S):
        lim = limits[s]
        n = int(rng.integers(0, K + 1)) if lim > 0 else 0
        if unique:
            n = min(n, lim)
            parts.append(torch.from_numpy(rng.permutation(lim)[:n].astype(np.int64)))
        else:
            parts.append(torch.from_numpy(rng.integers(0, max(lim, 1), n).astype(np.int64)))
    rb = R.combine_data(parts)
    if rb.max_sample_size < K:   # exercise padding beyond the largest sample
        t = torch.zeros(S, K, dtype=torch.int64)
        t[:, :rb.max_sample_size] = rb.tensor
        rb = R.RaggedBatch(t, sample_sizes=rb.sample_sizes)
    return rb, parts


def test_indexing_access_random():
    rng = np.random.default_rng(2)
    for trial in range(TRIALS):
        S, M, K = int(rng.integers(1, 5)), int(rng.integers(0, 6)), int(rng.integers(0, 6))
        F = int(rng.integers(1, 3))
        sizes = sizes_for(rng, S, M)
        parts = [randn(rng, n, F) for n in sizes]
        data = R.combine_data(parts)
        if data.max_sample_size < M:
            t = torch.zeros(S, M, F, dtype=torch.float64)
            t[:, :data.max_sample_size] = data.tensor
            data = R.RaggedBatch(t, sample_sizes=data.sample_sizes)
        x = data.tensor.clone().requires_grad_()
        data = data.create_with_sample_sizes_like_self(x)
        idx, ip = random_indices(rng, S, sizes, K)
        out = R.batched_indexing_access(data, idx, filler_value=-2.0)
        assert out.sample_sizes.tolist() == idx.sample_sizes.tolist()
        for s in range(S):
            n = len(ip[s])
            assert torch.equal(out.tensor[s, :n], x[s][ip[s]])
            assert out.tensor[s, n:].eq(-2.0).all()
        gout = randn(rng, *out.tensor.shape)
        (g,) = grads(out.tensor, [x], gout)
        ref = torch.zeros_like(x)
        for s in range(S):
            ref[s].index_add_(0, ip[s], gout[s, :len(ip[s])])
        assert close(g, ref)


def test_indexing_access_other_dim_and_dtypes():
    rng = np.random.default_rng(3)
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int32,
                  torch.int64, torch.uint8):
        data = (randn(rng, 2, 3, 5, 2) * 10).to(dtype)
        idx = R.combine_data([torch.tensor([4, 0, 4]), torch.tensor([1])])
        out = R.batched_indexing_access(data, idx, filler_value=3, dim_to_index_in=2)
        assert out.non_uniform_dim == 2 and out.tensor.dtype == dtype
        assert torch.equal(out.tensor[0], data[0][:, [4, 0, 4]])
        assert torch.equal(out.tensor[1, :, :1], data[1][:, [1]])
        assert out.tensor[1, :, 1:].eq(3).all()
    x = randn(rng, 2, 3, 5, 2, dtype=torch.float16).requires_grad_()
    out = R.batched_indexing_access(x, idx, dim_to_index_in=2)
    out.tensor.float().sum().backward()
    assert x.grad.dtype == torch.float16 and float(x.grad[0, :, 4].sum()) == 12.0


def test_inverse_access_and_write_random():
    rng = np.random.default_rng(4)
    for trial in range(TRIALS):
        S, M, K = int(rng.integers(1, 5)), int(rng.integers(0, 6)), int(rng.integers(0, 6))
        F = int(rng.integers(1, 3))
        idx, ip = random_indices(rng, S, [M] * S, K, unique=True)
        src = randn(rng, S, idx.max_sample_size, F).requires_grad_()
        # inverse access: a new tensor with M targets
        inv = R.batched_inverse_indexing_access(src, idx, M, filler_value=0.5)
        ref = torch.full((S, M, F), 0.5, dtype=torch.float64)
        for s in range(S):
            ref[s, ip[s]] = src[s, :len(ip[s])]
        assert torch.equal(inv, ref)
        gout = randn(rng, S, M, F)
        (g,) = grads(inv, [src], gout)
        gref = torch.zeros_like(src)
        for s in range(S):
            gref[s, :len(ip[s])] = gout[s, ip[s]]
        assert close(g, gref)
        # write into an existing tensor
        into = randn(rng, S, M, F).requires_grad_()
        out = R.batched_indexing_write(src, idx, into)
        ref = into.detach().clone()
        for s in range(S):
            ref[s, ip[s]] = src.detach()[s, :len(ip[s])]
        assert torch.equal(out, ref)
        g_src, g_into = grads(out, [src, into], gout)
        ginto_ref = gout.clone()
        for s in range(S):
            ginto_ref[s, ip[s]] = 0
        assert close(g_src, gref) and close(g_into, ginto_ref)


def test_index_mapping_random():
    rng = np.random.default_rng(5)
    for trial in range(TRIALS):
        S, Ms, Mt, K = (int(rng.integers(1, 5)), int(rng.integers(1, 6)), int(rng.integers(1, 6)),
                        int(rng.integers(0, 5)))
        n = [min(int(rng.integers(0, K + 1)), Mt) for _ in range(S)]
        sp = [torch.from_numpy(rng.integers(0, Ms, k).astype(np.int64)) for k in n]   # repeats ok
        tp = [torch.from_numpy(rng.permutation(Mt)[:k].astype(np.int64)) for k in n]  # unique
        s_idx, t_idx = R.combine_data(sp), R.combine_data(tp)
        src = randn(rng, S, Ms, 2).requires_grad_()
        tgt = randn(rng, S, Mt, 2).requires_grad_()
        out = R.batched_index_mapping(src, s_idx, t_idx, tgt)
        ref = tgt.detach().clone()
        for s in range(S):
            ref[s, tp[s]] = src.detach()[s, sp[s]]
        assert torch.equal(out, ref)
        gout = randn(rng, *out.shape)
        g_src, g_tgt = grads(out, [src, tgt], gout)
        gs_ref, gt_ref = torch.zeros_like(src), gout.clone()
        for s in range(S):
            gs_ref[s].index_add_(0, sp[s], gout[s, tp[s]])
            gt_ref[s, tp[s]] = 0
        assert close(g_src, gs_ref) and close(g_tgt, gt_ref)


def test_masks_and_bool_indexing_random():
    rng = np.random.default_rng(6)
    for trial in range(TRIALS):
        S, M = int(rng.integers(1, 5)), int(rng.integers(0, 7))
        mask = torch.from_numpy(rng.random((S, M)) < rng.random())
        idx = R.get_indices_from_mask(mask)
        for s in range(S):
            want = mask[s].nonzero().reshape(-1)
            assert torch.equal(idx.tensor[s, :len(want)], want)
            assert idx.sample_sizes[s] == len(want)
        assert torch.equal(R.get_mask_from_indices(M, idx), mask)
        x = randn(rng, S, M, 3).requires_grad_()
        sel = R.batched_bool_indexing(x, mask)
        for s in range(S):
            assert torch.equal(sel.tensor[s, :int(mask[s].sum())], x.detach()[s][mask[s]])
        gout = randn(rng, *sel.tensor.shape)
        (g,) = grads(sel.tensor, [x], gout)
        gref = torch.zeros_like(x)
        for s in range(S):
            gref[s][mask[s]] = gout[s, :int(mask[s].sum())]
        assert close(g, gref)
        # write back into another tensor
        src = R.RaggedBatch(sel.tensor.detach().clone().requires_grad_(), sample_sizes=sel.sample_sizes)
        into = randn(rng, S, M, 3).requires_grad_()
        out = R.batched_bool_indexing_write(src, mask, into)
        ref = into.detach().clone()
        for s in range(S):
            ref[s][mask[s]] = src.tensor.detach()[s, :int(mask[s].sum())]
        assert torch.equal(out, ref)
        # apply_mask
        am = R.apply_mask_to_tensor(x, mask, value_to_set=9.0)
        assert torch.equal(am, torch.where(mask.unsqueeze(-1), x.detach(), torch.tensor(9.0, dtype=x.dtype)))
        gout2 = randn(rng, *am.shape)
        (g2,) = grads(am, [x], gout2)
        assert close(g2, gout2 * mask.unsqueeze(-1))


def test_bool_write_gradients():
    rng = np.random.default_rng(7)
    for trial in range(TRIALS):
        S, M = int(rng.integers(1, 4)), int(rng.integers(0, 6))
        mask = torch.from_numpy(rng.random((S, M)) < 0.5)
        counts = mask.sum(-1)
        K = int(counts.max()) if S else 0
        src_t = randn(rng, S, K, 2).requires_grad_()
        src = R.RaggedBatch(src_t, sample_sizes=counts)
        into = randn(rng, S, M, 2).requires_grad_()
        out = R.batched_bool_indexing_write(src, mask, into)
        gout = randn(rng, *out.shape)
        g_src, g_into = grads(out, [src_t, into], gout)
        gs_ref = torch.zeros_like(src_t)
        for s in range(S):
            gs_ref[s, :int(counts[s])] = gout[s][mask[s]]
        assert close(g_src, gs_ref)
        assert close(g_into, gout * (~mask).unsqueeze(-1))


def test_sum_and_average_random():
    rng = np.random.default_rng(8)
    for trial in range(TRIALS):
        S = int(rng.integers(1, 5))
        sizes = sizes_for(rng, S, 5)
        parts = [randn(rng, n, 2) for n in sizes]
        rb = R.combine_data(parts)
        x = rb.tensor.clone().requires_grad_()
        rb = rb.create_with_sample_sizes_like_self(x)
        s_ = R.sum_over_targets(rb)
        a_ = R.average_over_targets(rb)
        a_nan = R.average_over_targets(rb, nans_to_zero=False)
        for s, p in enumerate(parts):
            assert torch.allclose(s_[s], p.sum(0))
            want = p.mean(0) if len(p) else torch.zeros(2, dtype=torch.float64)
            assert torch.allclose(a_[s], want)
            assert (torch.isnan(a_nan[s]).all() if len(p) == 0 else torch.allclose(a_nan[s], want))
        gout = randn(rng, S, 2)
        (g,) = grads(s_, [x], gout)
        (ga,) = grads(a_, [x], gout)
        for s, n in enumerate(sizes):
            assert torch.allclose(g[s, :n], gout[s].expand(n, 2)) and not g[s, n:].any()
            if n:
                assert torch.allclose(ga[s, :n], (gout[s] / n).expand(n, 2))


def test_compact_lists_and_squeeze():
    mask = torch.tensor([[True, False, True], [False, False, False]])
    a, b = torch.arange(6.0).reshape(2, 3), torch.arange(12.0).reshape(2, 3, 2)
    ca, cb = R.get_compact_lists(mask, [a, b])
    assert ca.sample_sizes.tolist() == [2, 0] and ca.tensor[0].tolist() == [0.0, 2.0]
    assert cb.tensor.shape == (2, 2, 2)
    sq = R.squeeze_except_batch_and_sample(R.RaggedBatch(torch.zeros(2, 3, 1), sample_sizes=torch.tensor([1, 2])))
    assert sq.tensor.shape == (2, 3)


# --------------------------------------------------------------------------
# Assignment


def test_linear_sum_assignment_matches_scipy():
    rng = np.random.default_rng(9)
    for trial in range(TRIALS):
        n = int(rng.integers(1, 6))
        mats = []
        for _ in range(n):
            r, c = int(rng.integers(0, 9)), int(rng.integers(0, 9))
            if rng.random() < 0.3:
                m = rng.integers(0, 3, (r, c)).astype(np.float64)   # ties
            else:
                m = rng.standard_normal((r, c)) * 10 ** rng.uniform(-3, 3)
            mats.append(torch.from_numpy(m))
        res, totals = R.linear_sum_assignment(mats, return_costs=True)
        for m, (ri, ci), tot in zip(mats, res, totals):
            a = m.numpy()
            sr, sc = scipy_optimize.linear_sum_assignment(a)
            want = a[sr, sc].sum()
            got = a[ri.numpy(), ci.numpy()].sum()
            assert abs(got - want) <= 1e-9 * max(1.0, abs(want)), (a, ri, ci, sr, sc)
            assert abs(float(tot) - got) <= 1e-9 * max(1.0, abs(got))
            assert len(ri) == min(a.shape) and len(set(ri.tolist())) == len(ri)
            assert len(set(ci.tolist())) == len(ci) and (np.diff(ri.numpy()) > 0).all()


def test_linear_sum_assignment_big_and_threads():
    rng = np.random.default_rng(10)
    mats = [torch.from_numpy(rng.random((int(rng.integers(0, 300)), int(rng.integers(0, 60)))))
            for _ in range(12)]
    r1 = R.linear_sum_assignment(mats)
    r2 = R.linear_sum_assignment(mats, threads=2)
    for m, (a, b), (c, d) in zip(mats, r1, r2):
        assert torch.equal(a, c) and torch.equal(b, d)
        sr, sc = scipy_optimize.linear_sum_assignment(m.numpy())
        want = m.numpy()[sr, sc].sum()
        assert abs(m.numpy()[a, b].sum() - want) <= 1e-9 * max(1, want)
    # ragged batch of costs, non-uniform along the columns
    rb = R.combine_data([torch.rand(5, 3, dtype=torch.float64), torch.rand(5, 0, dtype=torch.float64),
                         torch.rand(5, 7, dtype=torch.float64)], non_uniform_dim=1)
    out = R.linear_sum_assignment(rb)
    assert [len(r) for r, _ in out] == [3, 0, 5]


def test_linear_sum_assignment_bad_costs():
    c = [torch.rand(3, 4), torch.rand(2, 2)]
    c[1][1, 0] = float("nan")
    with pytest.raises(drivekit.InvalidArgumentError, match=r"sample 1: cost\[1\]\[0\] is NaN"):
        R.linear_sum_assignment(c)
    c[1][1, 0] = float("inf")
    with pytest.raises(ValueError, match=r"\+inf"):
        R.linear_sum_assignment(c)
    with pytest.raises(drivekit.InvalidArgumentError, match="2-D"):
        R.linear_sum_assignment([torch.rand(2, 2, 2)])


# --------------------------------------------------------------------------
# Losses and costs


def torch_focal(x, t, alpha, gamma):
    p = x.sigmoid()
    pt = (1 - p) * t + p * (1 - t)
    w = (alpha * t + (1 - alpha) * (1 - t)) * pt.pow(gamma)
    return torch.nn.functional.binary_cross_entropy_with_logits(x, t, reduction="none") * w


def test_sigmoid_focal_loss_random():
    rng = np.random.default_rng(11)
    for trial in range(TRIALS):
        N, C = int(rng.integers(0, 6)), int(rng.integers(1, 5))
        gamma = [2.0, 1.5, 0.0][trial % 3]
        x = (randn(rng, N, C) * 3).requires_grad_()
        lab = torch.from_numpy(rng.integers(-1, C + 1, N).astype(np.int64))
        t = torch.zeros(N, C, dtype=torch.float64)
        for i, l in enumerate(lab.tolist()):
            if 0 <= l < C:
                t[i, l] = 1
        red = ["sum", "none", "mean"][trial % 3]
        got = R.sigmoid_focal_loss(x, lab, 0.25, gamma, reduction=red)
        ref_e = torch_focal(x, t, 0.25, gamma)
        ref = ref_e.sum() if red == "sum" else ref_e if red == "none" else ref_e.mean() if N else ref_e.sum()
        assert torch.allclose(got, ref, rtol=1e-10, atol=1e-12)
        gout = randn(rng, *got.shape)
        (g,) = grads(got, [x], gout)
        (gr,) = grads(ref, [x], gout)
        assert close(g, gr, 1e-9)


def test_focal_cost_random():
    rng = np.random.default_rng(12)
    for trial in range(TRIALS):
        S, Q, C = int(rng.integers(1, 4)), int(rng.integers(1, 6)), int(rng.integers(1, 5))
        sizes = sizes_for(rng, S, 4)
        labels = R.combine_data([torch.from_numpy(rng.integers(0, C, n).astype(np.int64)) for n in sizes])
        x = (randn(rng, S, Q, C) * 3).requires_grad_()
        cost = R.focal_cost(x, labels)
        gout = randn(rng, *cost.tensor.shape)
        (g,) = grads(cost.tensor, [x], gout)
        gref = torch.zeros_like(x)
        for s, n in enumerate(sizes):
            lab = labels.tensor[s, :n]
            xs = x[s].detach().clone().requires_grad_()
            p = xs.sigmoid()
            neg = -(1 - p + 1e-12).log() * 0.75 * p.pow(2)
            pos = -(p + 1e-12).log() * 0.25 * (1 - p).pow(2)
            ref = pos[:, lab] - neg[:, lab]
            assert torch.allclose(cost.tensor[s, :, :n], ref, rtol=1e-10, atol=1e-12)
            assert not cost.tensor[s, :, n:].any()
            if n:
                (gs,) = torch.autograd.grad(ref, [xs], gout[s, :, :n])
                gref[s] = gs
        assert close(g, gref, 1e-9)


def test_l1_losses_random():
    rng = np.random.default_rng(13)
    for trial in range(TRIALS):
        S, D = int(rng.integers(1, 4)), int(rng.integers(1, 5))
        sizes = sizes_for(rng, S, 4)
        pred_rb = R.combine_data([randn(rng, n, D) for n in sizes])
        p = pred_rb.tensor.clone().requires_grad_()
        pred_rb = pred_rb.create_with_sample_sizes_like_self(p)
        t = randn(rng, *p.shape).requires_grad_()
        cw = torch.from_numpy(rng.uniform(0.1, 2, D))
        beta = [0.0, 0.5][trial % 2]
        red = ["sum", "mean", "none"][trial % 3]
        got = R.l1_loss(pred_rb, t, code_weights=cw, beta=beta, reduction=red)
        mask = pred_rb.mask.unsqueeze(-1).to(torch.float64)
        d = (p - t).abs()
        el = (torch.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta) if beta > 0 else d) * cw * mask
        ref = el.sum() if red == "sum" else el if red == "none" else el.sum() / max(1, sum(sizes) * D)
        gt = got.tensor if red == "none" else got
        assert torch.allclose(gt, ref, rtol=1e-10, atol=1e-12)
        gout = randn(rng, *gt.shape)
        g = grads(gt, [p, t], gout)
        gr = grads(ref, [p, t], gout)
        assert close(g[0], gr[0], 1e-9) and close(g[1], gr[1], 1e-9)


def torch_giou(a, b):
    """mmdet bbox_overlaps(mode='giou', is_aligned=False, eps=1e-6) on (N,4) x (M,4)."""
    eps = a.new_tensor([1e-6])
    area1 = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area2 = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[..., 0] * wh[..., 1]
    union = torch.max(area1[:, None] + area2[None, :] - overlap, eps)
    ious = overlap / union
    elt = torch.min(a[:, None, :2], b[None, :, :2])
    erb = torch.max(a[:, None, 2:], b[None, :, 2:])
    ewh = (erb - elt).clamp(min=0)
    enc = torch.max(ewh[..., 0] * ewh[..., 1], eps)
    return ious - (enc - union) / enc


def rand_boxes(rng, n):
    xy = rng.uniform(0, 10, (n, 2))
    wh = rng.uniform(0.5, 4, (n, 2))
    return torch.from_numpy(np.concatenate([xy, xy + wh], 1))


def test_giou_random():
    rng = np.random.default_rng(14)
    for trial in range(TRIALS):
        S = int(rng.integers(1, 4))
        na, nb = sizes_for(rng, S, 4), sizes_for(rng, S, 4)
        A = R.combine_data([rand_boxes(rng, n) for n in na])
        B = R.combine_data([rand_boxes(rng, n) for n in nb])
        a = A.tensor.clone().requires_grad_()
        b = B.tensor.clone().requires_grad_()
        A, B = A.create_with_sample_sizes_like_self(a), B.create_with_sample_sizes_like_self(b)
        out = R.giou(A, B)
        gout = randn(rng, *out.tensor.shape)
        ga, gb = grads(out.tensor, [a, b], gout)
        ga_ref, gb_ref = torch.zeros_like(a), torch.zeros_like(b)
        for s in range(S):
            aa = a[s, :na[s]].detach().clone().requires_grad_()
            bb = b[s, :nb[s]].detach().clone().requires_grad_()
            ref = torch_giou(aa, bb)
            assert torch.allclose(out.tensor[s, :na[s], :nb[s]], ref, rtol=1e-10, atol=1e-12)
            assert not out.tensor[s, na[s]:].any() and not out.tensor[s, :, nb[s]:].any()
            if na[s] and nb[s]:
                g1, g2 = torch.autograd.grad(ref, [aa, bb], gout[s, :na[s], :nb[s]])
                ga_ref[s, :na[s]] = g1
                gb_ref[s, :nb[s]] = g2
        assert close(ga, ga_ref, 1e-9) and close(gb, gb_ref, 1e-9)
        # aligned: pairs of the same sizes
        B2 = R.combine_data([rand_boxes(rng, n) for n in na])
        b2 = B2.tensor.clone().requires_grad_()
        al = R.giou(A, B2.create_with_sample_sizes_like_self(b2), aligned=True)
        g_al = randn(rng, *al.tensor.shape)
        ga2, gb2 = grads(al.tensor, [a, b2], g_al)
        for s in range(S):
            n = na[s]
            aa = a[s, :n].detach().clone().requires_grad_()
            bb = b2[s, :n].detach().clone().requires_grad_()
            ref = torch.diagonal(torch_giou(aa, bb)) if n else aa.new_zeros(0)
            assert torch.allclose(al.tensor[s, :n], ref, rtol=1e-10, atol=1e-12)
            if n:
                g1, g2 = torch.autograd.grad(ref, [aa, bb], g_al[s, :n])
                assert torch.allclose(ga2[s, :n], g1, atol=1e-9) and torch.allclose(gb2[s, :n], g2, atol=1e-9)


def test_box3d_l1_cost_random():
    rng = np.random.default_rng(15)
    for trial in range(TRIALS):
        S, Q, D = int(rng.integers(1, 4)), int(rng.integers(1, 6)), int(rng.integers(1, 11))
        sizes = sizes_for(rng, S, 4)
        G = R.combine_data([randn(rng, n, D) for n in sizes])
        gt = G.tensor.clone().requires_grad_()
        G = G.create_with_sample_sizes_like_self(gt)
        pred = randn(rng, S, Q, D).requires_grad_()
        k = min(D, 8)
        cost = R.box3d_l1_cost(pred, G)
        gout = randn(rng, *cost.tensor.shape)
        gp, gg = grads(cost.tensor, [pred, gt], gout)
        gp_ref, gg_ref = torch.zeros_like(pred), torch.zeros_like(gt)
        for s, n in enumerate(sizes):
            pp = pred[s].detach().clone().requires_grad_()
            qq = gt[s, :n].detach().clone().requires_grad_()
            ref = (pp[:, None, :k] - qq[None, :, :k]).abs().sum(-1)
            assert torch.allclose(cost.tensor[s, :, :n], ref, rtol=1e-10, atol=1e-12)
            if n:
                g1, g2 = torch.autograd.grad(ref, [pp, qq], gout[s, :, :n])
                gp_ref[s], gg_ref[s, :n] = g1, g2
        assert close(gp, gp_ref, 1e-9) and close(gg, gg_ref, 1e-9)


# --------------------------------------------------------------------------
# The fused set criterion


def reference_set_loss(cls, box, labels, boxes, cw, alpha=0.25, gamma=2.0, w_cls=2.0, w_reg=0.25,
                       match_codes=8, ours=None):
    """Per-sample torch + scipy. ``ours`` (L, B, Q) are drivekit's matches:
    they must cost what scipy's optimum costs (L1 costs tie exactly more
    often than one would think); the losses are then taken on them, so that
    equally optimal assignments compare equal."""
    L, B, Q, C = cls.shape
    D = box.shape[-1]
    npos = max(1, sum(min(Q, len(lab)) for lab in labels))
    tc, tb = 0, 0
    for l in range(L):
        for b in range(B):
            x, bp, lab, gt = cls[l, b], box[l, b], labels[b], boxes[b]
            tgt = torch.zeros(Q, C, dtype=x.dtype)
            if len(lab):
                with torch.no_grad():
                    p = x.double().sigmoid()
                    neg = -(1 - p + 1e-12).log() * (1 - alpha) * p.pow(gamma)
                    pos = -(p + 1e-12).log() * alpha * (1 - p).pow(gamma)
                    k = min(D, match_codes)
                    cost = w_cls * (pos[:, lab] - neg[:, lab]) + \
                        w_reg * (bp.double()[:, None, :k] - gt.double()[None, :, :k]).abs().sum(-1)
                r, c = scipy_optimize.linear_sum_assignment(cost.numpy())
                if ours is not None:
                    m = ours[l, b]
                    q = (m >= 0).nonzero().reshape(-1)
                    best = float(cost.numpy()[r, c].sum())
                    got = float(cost.numpy()[q.numpy(), m[q].numpy()].sum())
                    assert len(q) == len(r) and abs(got - best) <= 1e-5 * (1 + abs(best)), (got, best)
                    r, c = q.numpy(), m[q].numpy()
                r, c = torch.from_numpy(r), torch.from_numpy(c)
                tgt[r, lab[c]] = 1
                tb = tb + w_reg * ((bp[r] - gt[c]).abs() * cw).sum() / npos
            tc = tc + w_cls * torch_focal(x, tgt, alpha, gamma).sum() / npos
    return tc, tb


def test_detr3d_set_loss_random():
    rng = np.random.default_rng(16)
    for trial in range(TRIALS):
        L, B = int(rng.integers(1, 3)), int(rng.integers(1, 4))
        Q, C, D = int(rng.integers(1, 8)), int(rng.integers(1, 5)), int(rng.integers(1, 11))
        sizes = sizes_for(rng, B, Q + 2)
        cls = (randn(rng, L, B, Q, C, dtype=torch.float32) * 2).requires_grad_()
        box = randn(rng, L, B, Q, D, dtype=torch.float32).requires_grad_()
        labels = [torch.from_numpy(rng.integers(0, C, n).astype(np.int64)) for n in sizes]
        boxes = [randn(rng, n, D, dtype=torch.float32) for n in sizes]
        cw = torch.from_numpy(rng.uniform(0.2, 1.0, D)).float()
        kw = {}
        if trial % 3 == 2:
            kw = dict(alpha=0.4, gamma=1.5, cls_weight=1.0, reg_weight=0.5, match_codes=3)
        lc, lb, m = R.detr3d_set_loss(cls, box, labels, boxes, code_weights=cw, return_matches=True,
                                      **kw)
        rc, rb = reference_set_loss(cls, box, labels, boxes, cw, kw.get("alpha", 0.25),
                                    kw.get("gamma", 2.0), kw.get("cls_weight", 2.0),
                                    kw.get("reg_weight", 0.25), kw.get("match_codes", 8), ours=m)
        assert abs(float(lc) - float(rc)) <= 1e-5 * (1 + abs(float(rc))), (trial, float(lc), float(rc))
        assert abs(float(lb) - float(rb)) <= 1e-5 * (1 + abs(float(rb))), (trial, float(lb), float(rb))
        gc, gb = float(rng.standard_normal()), float(rng.standard_normal())
        g1 = torch.autograd.grad(lc * gc + lb * gb, [cls, box])
        g2 = torch.autograd.grad(rc * gc + rb * gb, [cls, box], allow_unused=True)
        assert torch.allclose(g1[0], g2[0], rtol=1e-4, atol=1e-6)
        ref_gb = g2[1] if g2[1] is not None else torch.zeros_like(box)
        assert torch.allclose(g1[1], ref_gb, rtol=1e-4, atol=1e-6)


def test_detr3d_matches_threads_and_ragged_input():
    rng = np.random.default_rng(17)
    L, B, Q, C, D = 3, 5, 40, 10, 10
    cls = randn(rng, L, B, Q, C, dtype=torch.float32)
    box = randn(rng, L, B, Q, D, dtype=torch.float32)
    sizes = [0, 1, 13, 40, 45]
    labels = [torch.from_numpy(rng.integers(0, C, n).astype(np.int64)) for n in sizes]
    boxes = [randn(rng, n, D, dtype=torch.float32) for n in sizes]
    a = R.detr3d_set_loss(cls, box, labels, boxes, return_matches=True)
    b = R.detr3d_set_loss(cls, box, R.combine_data(labels), R.combine_data(boxes), threads=3,
                          return_matches=True)
    assert float(a[0]) == float(b[0]) and float(a[1]) == float(b[1]) and torch.equal(a[2], b[2])
    m = a[2]
    assert m.shape == (L, B, Q)
    for bb, n in enumerate(sizes):
        got = m[:, bb][m[:, bb] >= 0]
        assert len(got) == L * min(n, Q)
    # float64 inputs are computed in float32, gradients come back as float64
    x64 = cls.double().requires_grad_()
    lc, lb = R.detr3d_set_loss(x64, box.double(), labels, boxes)
    lc.backward()
    assert x64.grad.dtype == torch.float64 and lc.dtype == torch.float64


def test_detr3d_bad_input():
    cls, box = torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 5)
    labels = [torch.tensor([0, 3]), torch.tensor([1])]
    boxes = [torch.zeros(2, 5), torch.zeros(1, 5)]
    with pytest.raises(drivekit.InvalidArgumentError, match="box_preds"):
        R.detr3d_set_loss(cls, torch.zeros(1, 2, 4, 5), labels, boxes)
    with pytest.raises(drivekit.RangeError, match="sample 0, box 1: class 4"):
        R.detr3d_set_loss(cls, box, [torch.tensor([0, 4]), torch.tensor([1])], boxes)
    with pytest.raises(drivekit.InvalidArgumentError, match="sizes"):
        R.detr3d_set_loss(cls, box, labels, [torch.zeros(1, 5), torch.zeros(1, 5)])
    bad = cls.clone()
    bad[0, 1, 2, 1] = float("nan")
    with pytest.raises(drivekit.InvalidArgumentError, match="layer 0, sample 1"):
        R.detr3d_set_loss(bad, box, labels, boxes)
    with pytest.raises(drivekit.InvalidArgumentError, match="gt_labels must have shape|B = 2"):
        R.detr3d_set_loss(cls, box, labels[:1], boxes[:1])


# --------------------------------------------------------------------------
# Heatmaps


def reference_draw(heatmap, x, y, r, k=1.0):
    d = 2 * r + 1
    sigma = d / 6
    m = (d - 1) / 2
    yy, xx = np.ogrid[-m:m + 1, -m:m + 1]
    g = np.exp(-(xx * xx + yy * yy) / (2 * sigma * sigma))
    g[g < np.finfo(g.dtype).eps * g.max()] = 0
    H, W = heatmap.shape
    left, right = min(x, r), min(W - x, r + 1)
    top, bottom = min(y, r), min(H - y, r + 1)
    mh = heatmap[y - top:y + bottom, x - left:x + right]
    mg = torch.from_numpy(g[r - top:r + bottom, r - left:r + right]).to(torch.float32)
    if min(mg.shape) > 0 and min(mh.shape) > 0:
        torch.max(mh, mg * k, out=mh)


def test_draw_heatmap_random():
    rng = np.random.default_rng(18)
    for trial in range(TRIALS):
        S, C, H, W = int(rng.integers(1, 4)), int(rng.integers(1, 4)), int(rng.integers(1, 12)), int(rng.integers(1, 12))
        sizes = sizes_for(rng, S, 5)
        ctr = R.combine_data([torch.from_numpy(np.stack([rng.integers(0, W, n), rng.integers(0, H, n)], 1).astype(np.int64)) for n in sizes])
        rad = R.combine_data([torch.from_numpy(rng.integers(0, 4, n).astype(np.int64)) for n in sizes])
        lab = R.combine_data([torch.from_numpy(rng.integers(0, C, n).astype(np.int64)) for n in sizes])
        hm = torch.zeros(S, C, H, W)
        R.draw_heatmap(hm, ctr, rad, lab, k_scale=0.8)
        ref = torch.zeros(S, C, H, W)
        for s, n in enumerate(sizes):
            for i in range(n):
                x, y = ctr.tensor[s, i].tolist()
                reference_draw(ref[s, int(lab.tensor[s, i])], x, y, int(rad.tensor[s, i]), 0.8)
        assert torch.equal(hm, ref)
    assert abs(R.gaussian_radius(10.0, 20.0, 0.7) - float(R.gaussian_radius(torch.tensor(10.0), torch.tensor(20.0), 0.7))) < 1e-9
    with pytest.raises(drivekit.RangeError, match="radius -1"):
        R.draw_heatmap(torch.zeros(1, 4, 4), R.combine_data([torch.tensor([[1, 1]])]),
                       torch.tensor([[-1]]))


# --------------------------------------------------------------------------
# Bad input of the helper ops, threads, leaks


def test_helper_bad_input():
    x = torch.zeros(2, 4, 3)
    idx = R.combine_data([torch.tensor([0, 4]), torch.tensor([1])])
    with pytest.raises(drivekit.RangeError, match=r"sample 0, entry 1: index 4 outside \[0, 4\)"):
        R.batched_indexing_access(x, idx)
    ragged_x = R.RaggedBatch(x, sample_sizes=torch.tensor([2, 4]))
    with pytest.raises(drivekit.RangeError, match=r"index 2 outside \[0, 2\)"):
        R.batched_indexing_access(ragged_x, R.combine_data([torch.tensor([2]), torch.tensor([1])]))
    with pytest.raises(drivekit.InvalidArgumentError, match="batch shape"):
        R.batched_indexing_access(torch.zeros(3, 4, 3), idx)
    dup = R.combine_data([torch.tensor([1, 1]), torch.tensor([0])])
    with pytest.raises(drivekit.InvalidArgumentError, match="both write position 1"):
        R.batched_indexing_write(torch.zeros(2, 2, 3), dup, x)
    mask = torch.tensor([[True, True, False, False], [False, False, False, True]])
    with pytest.raises(drivekit.InvalidArgumentError, match="sample 0: the mask has 2 true entries but src holds 1"):
        R.batched_bool_indexing_write(R.RaggedBatch(torch.zeros(2, 2, 3), sample_sizes=torch.tensor([1, 1])), mask, x)
    with pytest.raises(drivekit.InvalidArgumentError, match="mask"):
        R.apply_mask_to_tensor(x, torch.zeros(2, 5, dtype=torch.bool))
    with pytest.raises(drivekit.InvalidArgumentError, match="indices must be int64"):
        R.batched_indexing_access(x, R.RaggedBatch(torch.zeros(2, 2), sample_sizes=torch.tensor([1, 1])))


def test_threads_invariance_and_no_leaks():
    rng = np.random.default_rng(19)
    live = drivekit.alloc_live()
    for _ in range(20):
        S, M = 7, 9
        x = randn(rng, S, M, 3)
        idx, _ = random_indices(rng, S, [M] * S, 6)
        a = R.batched_indexing_access(x, idx, threads=1).tensor
        b = R.batched_indexing_access(x, idx, threads=3).tensor
        assert torch.equal(a, b)
        rb = R.RaggedBatch(x, sample_sizes=torch.from_numpy(rng.integers(0, M + 1, S)))
        assert torch.equal(R.sum_over_targets(rb, threads=1), R.sum_over_targets(rb, threads=3))
    assert drivekit.alloc_live() == live
