/*
 * drivekit ragged: batches whose samples have different sizes (ground-truth
 * boxes, matches, points), batched ops over them with backward, batched
 * minimum-cost assignment, DETR-style set losses and centre heatmaps. All of
 * it on the CPU, batched over samples, on an explicit dk_pool.
 *
 * A ragged batch (dk_ragged) is a padded tensor plus one size per sample:
 *
 *     data   shape (*batch, ..., max_size, ...): `batch_dims` leading dims
 *            index the samples, dim `dim` (>= batch_dims) is the non-uniform
 *            one; entry k along it is valid for sample s when k < sizes[s].
 *            Valid entries come first, fillers last; filler values are
 *            unspecified unless a function says otherwise.
 *     sizes  one int64 per sample, row-major over the batch dims.
 *
 * The padded form is what batched math wants; the packed form
 * (dk_ragged_packed: values of every sample back to back, shape (total,
 * rest...), plus n + 1 offsets) is what per-object math and storage want. dk_ragged_to_packed /
 * dk_ragged_from_packed convert; dk_ragged_combine builds a batch from
 * per-sample tensors and dk_ragged_sample views one sample without a copy.
 *
 * Example: match every sample of a batch in parallel, then gather each
 * sample's ground truth by index in one call.
 *
 *     // costs[b]: a (Q, n_b) float32 view per sample; pairs: sum of min(Q, n_b)
 *     if (dk_ragged_assign(pool, B, costs, rows, cols, NULL) != DK_OK)
 *         fprintf(stderr, "%s\n", dk_errmsg());
 *         // "dk_ragged_assign(): sample 3: cost[12][0] is NaN; costs must be finite"
 *
 *     // gt boxes (B, N, D) with sizes n[b]; an index batch (B, K) with sizes k[b]
 *     dk_ragged gt, idx, out;
 *     dk_ragged_wrap(&gt, &gt_tensor, 1, 1, n);
 *     dk_ragged_wrap(&idx, &idx_tensor, 1, 1, k);
 *     int64_t oshape[3] = {B, K, D};
 *     dk_ragged_alloc(&out, DK_F32, 3, oshape, 1, 1);     // owns data and sizes
 *     if (dk_ragged_index_access(pool, &gt, &idx, 0.0, &out) != DK_OK)
 *         fprintf(stderr, "%s\n", dk_errmsg());
 *         // "dk_ragged_index_access(): idx: sample 1, entry 0: index 5 outside [0, 1)"
 *     ...                                                 // out.sizes == k
 *     dk_ragged_release(&out);
 *
 * Conventions of every function below:
 *   - Tensors are dk_tensor views with any strides (in elements); outputs are
 *     preallocated by the caller with the documented shape and dtype, and are
 *     written, never reallocated. Inputs are never modified (except the
 *     in-place functions, which say so). Outputs must not alias inputs unless
 *     a function says it may.
 *   - A dk_ragged input with sizes == NULL is a plain tensor: every sample
 *     holds max_size entries.
 *   - Index tensors are int64 or int32; masks are bool or uint8 (nonzero =
 *     true); data moves with any dtype, arithmetic is float32/float64 (float64
 *     accumulation) unless noted.
 *   - `pool` may be NULL (run on the calling thread). Work is split by sample
 *     and every reduction sums per-sample partial results in a fixed order, so
 *     results are bit-identical for any pool size.
 *   - Errors: DK_EINVAL names the argument and what is wrong ("logits: shape
 *     (2, 5, 3) but labels have batch shape (3)"); DK_ERANGE names the sample
 *     and position of an index or size out of range; DK_EUNSUPPORTED names a
 *     dtype a function cannot compute in; DK_ENOMEM. On error the outputs
 *     hold unspecified values.
 *
 * Backward functions compute the gradient of a scalar loss with respect to
 * the inputs given the gradient with respect to the output ("grad_out"),
 * exactly as autograd would for the forward's definition (the derivative of
 * |x| at 0 is 0, as in torch).
 *
 * Thread safety: functions touch only their arguments; concurrent calls are
 * safe when their outputs do not overlap. Errors in pool tasks are reported
 * on the calling thread (dk_errmsg()).
 */
#ifndef DRIVEKIT_RAGGED_H
#define DRIVEKIT_RAGGED_H

#include "drivekit/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* The ragged batch descriptor                                               */

/** A padded ragged batch. Small, visible, copied by value; it borrows `data`'s
 *  memory unless data.owner holds a reference, and `sizes` unless
 *  sizes_owner does (dk_ragged_alloc sets both; dk_ragged_release drops both). */
typedef struct dk_ragged {
    dk_tensor data;          /* padded values (see the overview) */
    int64_t *sizes;          /* n_samples entries, each in [0, data.shape[dim]];
                                NULL: every sample is full (a plain tensor) */
    int32_t batch_dims;      /* >= 1 leading dims indexing the samples */
    int32_t dim;             /* the non-uniform dim, batch_dims <= dim < data.ndim */
    dk_buffer *sizes_owner;  /* keeps `sizes` alive, or NULL when borrowed */
} dk_ragged;

/** Fills `r` with a borrowed view of `data` (copied by value, owner not
 *  referenced) and `sizes` (may be NULL), then validates it
 *  (dk_ragged_validate). Returns DK_EINVAL, DK_ERANGE as that. */
DK_API int dk_ragged_wrap(dk_ragged *r, const dk_tensor *data, int batch_dims, int dim,
                          int64_t *sizes);

/** Allocates a zero-filled C-contiguous `data` and a sizes array (all 0) that
 *  `r` owns. Returns DK_EINVAL (bad dtype/shape, batch_dims or dim out of
 *  range), DK_EOVERFLOW, DK_ENOMEM; on error `r` is left empty. */
DK_API int dk_ragged_alloc(dk_ragged *r, dk_dtype dtype, int ndim, const int64_t *shape,
                           int batch_dims, int dim);

/** Drops the references `r` holds and clears it. NULL-safe. */
DK_API void dk_ragged_release(dk_ragged *r);

/** Samples: the product of the batch dims (1 for none). */
DK_API int64_t dk_ragged_num_samples(const dk_ragged *r);
/** The padded extent of the non-uniform dim, data.shape[dim]. */
DK_API int64_t dk_ragged_max_size(const dk_ragged *r);
/** Size of sample i (the max size when sizes is NULL); -1 if i is out of range. */
DK_API int64_t dk_ragged_size(const dk_ragged *r, int64_t i);
/** Sum of the sizes. */
DK_API int64_t dk_ragged_total(const dk_ragged *r);

/** Checks the descriptor: valid dtype and shape, 1 <= batch_dims <= dim <
 *  ndim, every size in [0, max_size]. Returns DK_EINVAL (descriptor) or
 *  DK_ERANGE ("ragged: sample 3 has size 7 outside [0, 5]"). */
DK_API int dk_ragged_validate(const dk_ragged *r);

/** A borrowed view of sample i (row-major over the batch dims): data without
 *  the batch dims and with the non-uniform dim cut to the sample's size. No
 *  copy. Returns DK_ERANGE for i outside [0, n_samples), DK_EINVAL. */
DK_API int dk_ragged_sample(const dk_ragged *r, int64_t i, dk_tensor *view);

/** Writes the validity mask, shape (*batch, max_size), bool or uint8.
 *  Returns DK_EINVAL (shapes), DK_ERANGE (sizes). */
DK_API int dk_ragged_mask(dk_pool *pool, const dk_ragged *r, dk_tensor *mask);

/** Sizes from a validity mask (*batch, M) (bool/uint8): sizes[s] = number of
 *  true entries, which must all come first. Returns DK_EINVALIDDATA naming the
 *  sample and position when a true follows a false, DK_EINVAL. */
DK_API int dk_ragged_sizes_from_mask(dk_pool *pool, const dk_tensor *mask, int batch_dims,
                                     int64_t *sizes);

/** Sets every filler entry (k >= sizes[s] along dim) to `value` (converted to
 *  the dtype; any dtype). In place. Returns DK_EINVAL, DK_ERANGE. */
DK_API int dk_ragged_set_padded(dk_pool *pool, dk_ragged *r, double value);

/** offsets[0] = 0, offsets[i + 1] = offsets[i] + size of sample i (n + 1
 *  entries). Returns DK_EINVAL, DK_ERANGE, DK_EOVERFLOW. */
DK_API int dk_ragged_offsets(const dk_ragged *r, int64_t *offsets);

/** The packed form of a ragged batch: the valid entries of every sample back
 *  to back. Borrows its memory (owns nothing).
 *    values     (total, rest...): rest are the padded data's dims after the
 *               batch dims without the non-uniform one, in order
 *    offsets    n_samples + 1 entries: 0, then running totals; sample i is
 *               rows [offsets[i], offsets[i + 1]) of values
 *    n_samples  the product of the padded form's batch dims */
typedef struct dk_ragged_packed {
    dk_tensor values;
    int64_t *offsets;
    int64_t n_samples;
} dk_ragged_packed;

/** Padded -> packed. out->values is preallocated (total rows, the dtype of r);
 *  out->offsets (n_samples + 1 entries) is written unless NULL; n_samples is
 *  set. Returns DK_EINVAL (shapes, dtype, a row count other than the total),
 *  DK_ERANGE (sizes). */
DK_API int dk_ragged_to_packed(dk_pool *pool, const dk_ragged *r, dk_ragged_packed *out);

/** Packed -> padded: out->data (preallocated) receives sample i's rows, the
 *  fillers are set to `filler`, and out->sizes (must not be NULL) is written.
 *  in->n_samples must equal out's sample count; in->offsets starts at 0,
 *  never decreases and ends at the row count. Returns DK_EINVAL (shapes,
 *  offsets, naming the position), DK_ERANGE (a sample longer than the padded
 *  dim, naming it). */
DK_API int dk_ragged_from_packed(dk_pool *pool, const dk_ragged_packed *in, double filler,
                                 dk_ragged *out);

/** Combines n per-sample tensors (same dtype, same ndim, equal extents except
 *  along `dim`) into out, whose data is preallocated with shape (n, dims of
 *  the parts with dim replaced by a max_size >= every part's extent), with
 *  batch_dims 1 and dim = `dim` + 1. Fillers are set to `filler`; out->sizes
 *  (not NULL) receives the parts' extents. Returns DK_EINVAL (mismatched
 *  parts, naming the part and dim), DK_ERANGE (a part longer than max_size). */
DK_API int dk_ragged_combine(dk_pool *pool, int64_t n, const dk_tensor *parts, int dim,
                             double filler, dk_ragged *out);

/* ------------------------------------------------------------------------ */
/* Indexing ops                                                              */
/*
 * Index batches are dk_ragged of shape (*batch, K) with batch_dims = dim =
 * ndim - 1, int64 or int32. Data batches are indexed along their dim; their
 * batch shapes must equal the index batches', and source and destination
 * must agree on every dim except the indexed one and on the dtype.
 */

typedef enum dk_ragged_mode {
    DK_RAGGED_SET = 0,   /* dst = src; repeated destination indices are an error */
    DK_RAGGED_ADD = 1,   /* dst += src (float32/float64); repeats accumulate in order */
} dk_ragged_mode;

/** The general move: for every sample s and j < count[s],
 *      dst[s, .., dst_idx[s, j], ..]  (= or +=)  src[s, .., src_idx[s, j], ..]
 *  where a NULL index batch means the identity (j itself), and count is the
 *  sizes of src_idx, else of dst_idx (at least one must be given; when both
 *  are, their sizes must be equal). Source indices must lie in [0, size of
 *  the src sample) (its sizes, or the padded extent if src->sizes is NULL),
 *  destination indices in [0, padded extent of dst). dst->sizes is not
 *  changed. Returns DK_EINVAL (shapes, dtypes, repeated destination with SET,
 *  naming sample and both positions), DK_ERANGE (index out of range, naming
 *  the argument, sample and entry), DK_EUNSUPPORTED (ADD on a non-float dtype). */
DK_API int dk_ragged_index_map(dk_pool *pool, const dk_ragged *src, const dk_ragged *src_idx,
                               dk_ragged *dst, const dk_ragged *dst_idx, dk_ragged_mode mode);

/** Batched gather (accvlab batched_indexing_access):
 *  out[s, .., j, ..] = in[s, .., idx[s, j], ..] for j < idx size, `filler`
 *  after; out->sizes (if not NULL) receives idx's sizes. out has in's shape
 *  with the dim replaced by idx's K. Errors as dk_ragged_index_map. */
DK_API int dk_ragged_index_access(dk_pool *pool, const dk_ragged *in, const dk_ragged *idx,
                                  double filler, dk_ragged *out);
/** Its backward: grad_in = 0, then grad_in[s, idx[s, j]] += grad_out[s, j]. */
DK_API int dk_ragged_index_access_backward(dk_pool *pool, const dk_ragged *grad_out,
                                           const dk_ragged *idx, dk_ragged *grad_in);

/** Batched scatter into an existing batch, in place (accvlab
 *  batched_indexing_write; with dst pre-filled, batched_inverse_indexing_access):
 *  dst[s, idx[s, j]] = src[s, j] for j < idx size. Repeated indices within a
 *  sample are DK_EINVAL. The backward is index_access of grad_out (for src)
 *  and index_fill of grad_out with 0 (for dst). */
DK_API int dk_ragged_index_write(dk_pool *pool, const dk_ragged *src, const dk_ragged *idx,
                                 dk_ragged *dst);

/** dst[s, .., idx[s, j], ..] = value for j < idx size, in place. */
DK_API int dk_ragged_index_fill(dk_pool *pool, dk_ragged *dst, const dk_ragged *idx,
                                double value);

/** mask (*batch, M) bool/uint8: true exactly at idx[s, j], j < idx size.
 *  Returns DK_ERANGE for an index outside [0, M). */
DK_API int dk_ragged_mask_from_indices(dk_pool *pool, const dk_ragged *idx, dk_tensor *mask);

/** counts[s] = number of true entries of mask[s, :] (mask (*batch, M)). */
DK_API int dk_ragged_count_mask(dk_pool *pool, const dk_tensor *mask, int batch_dims,
                                int64_t *counts);

/** Positions of the true entries in increasing order: out (*batch, K) int64
 *  or int32 with K >= the largest count (dk_ragged_count_mask), fillers 0,
 *  out->sizes (not NULL) = counts. Returns DK_ERANGE if K is too small. */
DK_API int dk_ragged_indices_from_mask(dk_pool *pool, const dk_tensor *mask, int batch_dims,
                                       dk_ragged *out);

/** Batched boolean select along in's dim: out[s, .., j, ..] = in[s, .., m_j, ..]
 *  where m_j is the j-th true position of mask[s] (*batch, M) with M the
 *  padded extent of in; fillers after, out->sizes (not NULL) = counts.
 *  out's dim must be >= the largest count (DK_ERANGE otherwise). */
DK_API int dk_ragged_bool_select(dk_pool *pool, const dk_ragged *in, const dk_tensor *mask,
                                 double filler, dk_ragged *out);

/** Its inverse, in place: dst[s, .., m_j, ..] = src[s, .., j, ..] for the j-th
 *  true position m_j of mask[s]. The number of true entries must equal src's
 *  size per sample (DK_EINVAL naming the sample). */
DK_API int dk_ragged_bool_write(dk_pool *pool, const dk_ragged *src, const dk_tensor *mask,
                                dk_ragged *dst);

/** out = in where mask is true (false if `invert`), `value` elsewhere. mask's
 *  dims are in's batch dims followed by in's dim (a (*batch, M) mask), and
 *  broadcast over the others; sizes are ignored. out may be in->data (in
 *  place). Any dtype. This is also its own backward (value 0). */
DK_API int dk_ragged_apply_mask(dk_pool *pool, const dk_ragged *in, const dk_tensor *mask,
                                int invert, double value, dk_tensor *out);

/** Sum (or mean when `average`) over the valid entries of the non-uniform
 *  dim: out has in's shape without dim. The mean of an empty sample is NaN,
 *  or 0 when `nans_to_zero`. float32/float64, summed in float64 in index
 *  order. */
DK_API int dk_ragged_sum(dk_pool *pool, const dk_ragged *in, int average, int nans_to_zero,
                         dk_tensor *out);
/** Its backward: grad_in (shape and sizes of the forward's input; sizes not
 *  NULL) = grad_out broadcast over the valid entries (divided by the size
 *  when `average`), 0 in the fillers. */
DK_API int dk_ragged_sum_backward(dk_pool *pool, const dk_tensor *grad_out, int average,
                                  dk_ragged *grad_in);

/* ------------------------------------------------------------------------ */
/* Batched minimum-cost assignment                                           */
/*
 * Exact rectangular linear sum assignment (the problem of
 * scipy.optimize.linear_sum_assignment): for an r x c cost matrix choose
 * min(r, c) pairs, no row or column twice, with the least total cost.
 * Solved by shortest augmenting paths with potentials (Jonker-Volgenant
 * family; Dijkstra over reduced costs) in float64; a matrix with more rows
 * than columns is solved transposed. When columns outnumber rows (DETR: few
 * ground truths, many queries) the unassigned columns, whose potential is
 * still 0, are served from short sorted per-row candidate lists, so a search
 * step costs O(rows) instead of O(columns); the result is bit-identical to the
 * dense scan. Costs must be finite: a NaN or infinity is DK_EINVAL naming the
 * sample and the entry.
 *
 * Determinism: the entries of the shorter side (rows, or the columns of a
 * matrix with more rows than columns) are augmented in increasing order; when
 * several entries of the other side are equally close, an unassigned one is
 * preferred, then the lowest index. When several assignments are optimal
 * this picks one of them as a function of the costs only (never of the pool
 * or the instruction set); it need not be the one scipy picks.
 *
 * Output pairs of each sample are sorted by row index, as scipy returns them.
 */

/** Solves one matrix `cost` (2-D, float32 or float64, any strides).
 *  row_ind, col_ind: min(r, c) entries each. u (r) and v (c), when not NULL,
 *  receive an optimality certificate: c[i][j] - u[i] - v[j] >= 0 for all i,
 *  j (up to rounding), = 0 on the chosen pairs, and the duals of the longer
 *  side are <= 0 and 0 on its unchosen entries. total (may be NULL) = the sum
 *  of the chosen costs, in float64 in row order. Returns DK_EINVAL (not 2-D,
 *  non-finite entry), DK_EUNSUPPORTED (dtype), DK_ENOMEM. */
DK_API int dk_ragged_assign_one(const dk_tensor *cost, int64_t *row_ind, int64_t *col_ind,
                                double *u, double *v, double *total);

/** Solves n matrices in parallel (one task per matrix). Sample i's pairs go
 *  to row_ind/col_ind at offset sum_{k<i} min(r_k, c_k); total (n entries,
 *  may be NULL) receives each sample's cost. Errors as dk_ragged_assign_one,
 *  naming the sample; the lowest failing sample is reported. */
DK_API int dk_ragged_assign(dk_pool *pool, int64_t n, const dk_tensor *costs, int64_t *row_ind,
                            int64_t *col_ind, double *total);

/** Padded form: costs (S, R, C) (or (*batch, R, C) flattened), sample s is the
 *  top-left rows[s] x cols[s] block (NULL: R, resp. C). row_ind and col_ind
 *  are (S, min(R, C)) C-contiguous, -1 after the n_pairs[s] = min(rows[s],
 *  cols[s]) valid pairs; n_pairs and total may be NULL. Returns DK_ERANGE for
 *  a size outside [0, R] resp. [0, C], plus dk_ragged_assign's errors. */
DK_API int dk_ragged_assign_padded(dk_pool *pool, const dk_tensor *costs, const int64_t *rows,
                                   const int64_t *cols, int64_t *row_ind, int64_t *col_ind,
                                   int64_t *n_pairs, double *total);

/* ------------------------------------------------------------------------ */
/* Batched losses and matching costs                                         */
/*
 * Inputs are float32 or float64 (computed in float64). Sums are over every
 * valid element, per-sample partial sums added in sample order.
 */

/** Sigmoid focal loss (Lin et al. 2017; mmdet's sigmoid_focal_loss) per
 *  element of logits (..., C) with class labels (...) (int32/int64; a label
 *  outside [0, C) is background: every class has target 0):
 *      p = sigmoid(x), t = target, p_t = t ? p : 1 - p,
 *      loss = BCEWithLogits(x, t) * (t ? alpha : 1 - alpha) * (1 - p_t)^gamma.
 *  Optional outputs, each NULL or shaped like logits (float32/float64): loss
 *  (elementwise) and grad (d loss / d x elementwise); sum (may be NULL) is the
 *  total. gamma >= 0. Returns DK_EINVAL (shapes, alpha/gamma not finite,
 *  gamma < 0), DK_EUNSUPPORTED. */
DK_API int dk_ragged_focal_loss(dk_pool *pool, const dk_tensor *logits, const dk_tensor *labels,
                                double alpha, double gamma, dk_tensor *loss, dk_tensor *grad,
                                double *sum);

/** Focal classification cost (mmdet's FocalLossCost) between every query
 *  and every ground truth of a sample: logits (*batch, Q, C), labels (*batch,
 *  N) ragged, cost (*batch, Q, N') ragged at its last dim, N' >= labels' max
 *  size, cost->sizes (if not NULL) = labels' sizes, fillers 0:
 *      p = sigmoid(x), neg = -log(1 - p + 1e-12) (1 - alpha) p^gamma,
 *      pos = -log(p + 1e-12) alpha (1 - p)^gamma,
 *      cost[q, j] = pos[q, label_j] - neg[q, label_j].
 *  Labels must lie in [0, C) (DK_ERANGE naming sample and entry). */
DK_API int dk_ragged_focal_cost(dk_pool *pool, const dk_tensor *logits, const dk_ragged *labels,
                                double alpha, double gamma, dk_ragged *cost);
/** Its backward with respect to the logits (grad_logits is overwritten). */
DK_API int dk_ragged_focal_cost_backward(dk_pool *pool, const dk_tensor *logits,
                                         const dk_ragged *labels, double alpha, double gamma,
                                         const dk_ragged *grad_cost, dk_tensor *grad_logits);

/** Weighted L1 (beta == 0) or smooth L1 (beta > 0: 0.5 d^2 / beta for d <
 *  beta, d - beta / 2 otherwise, d = |pred - target|) per element of pred
 *  (..., D), over the valid entries of the ragged pred (target: same shape,
 *  its sizes ignored), times code_weights[k] along the last dim (D entries;
 *  NULL = 1). loss (elementwise, fillers 0), grad (d sum / d pred; fillers
 *  0; d / d target is its negative) and sum are optional outputs. Returns
 *  DK_EINVAL (shapes, beta < 0 or not finite), DK_EUNSUPPORTED. */
DK_API int dk_ragged_l1_loss(dk_pool *pool, const dk_ragged *pred, const dk_tensor *target,
                             const double *code_weights, double beta, dk_tensor *loss,
                             dk_tensor *grad, double *sum);

/** Generalized IoU (Rezatofighi et al. 2019, mmdet's bbox_overlaps(mode=
 *  'giou', eps=1e-6)) of axis-aligned boxes (x1, y1, x2, y2): a (*batch, N,
 *  4) and b (*batch, M, 4), ragged along N and M. Pairwise (aligned = 0):
 *  out (*batch, N, M') with M' >= b's max size, out[s, i, j] for i < a's size
 *  and j < b's size, 0 elsewhere. Aligned (aligned = 1): a and b have equal
 *  sizes per sample and out is (*batch, N), out[s, i] = giou(a[s, i], b[s, i]).
 *      iou = inter / max(union, eps), giou = iou - (E - max(union, eps)) / max(E, eps)
 *  with E the area of the smallest enclosing box. */
DK_API int dk_ragged_giou(dk_pool *pool, const dk_ragged *a, const dk_ragged *b, int aligned,
                          dk_tensor *out);
/** Its backward: grad_a, grad_b (shaped like a, b; either may be NULL) are
 *  overwritten; fillers get 0. */
DK_API int dk_ragged_giou_backward(dk_pool *pool, const dk_ragged *a, const dk_ragged *b,
                                   int aligned, const dk_tensor *grad_out, dk_tensor *grad_a,
                                   dk_tensor *grad_b);

/** 3D box L1 matching cost: pred (*batch, Q, D), gt (*batch, N, D) ragged,
 *  cost (*batch, Q, N') ragged at its last dim (fillers 0, sizes = gt's):
 *      cost[q, j] = sum_{k < n_codes} w_k |pred[q, k] - gt[j, k]|
 *  (n_codes <= 0: D; weights NULL: 1). */
DK_API int dk_ragged_box_l1_cost(dk_pool *pool, const dk_tensor *pred, const dk_ragged *gt,
                                 const double *code_weights, int n_codes, dk_ragged *cost);
/** Its backward; grad_pred and grad_gt (either may be NULL) are overwritten. */
DK_API int dk_ragged_box_l1_cost_backward(dk_pool *pool, const dk_tensor *pred,
                                          const dk_ragged *gt, const double *code_weights,
                                          int n_codes, const dk_ragged *grad_cost,
                                          dk_tensor *grad_pred, dk_tensor *grad_gt);

/* ------------------------------------------------------------------------ */
/* The fused DETR-style 3D set criterion                                     */

/** Parameters of dk_ragged_detr3d_loss. Fill with dk_ragged_detr3d_config_init. */
typedef struct dk_detr3d_config {
    double cls_weight;           /* default 2.0 */
    double reg_weight;           /* default 0.25 */
    double alpha, gamma;         /* focal parameters, default 0.25, 2.0 */
    const double *code_weights;  /* D entries for the box loss; NULL = 1 (default) */
    int match_codes;             /* box dims in the matching cost, default 8
                                    (clamped to D) */
} dk_detr3d_config;

DK_API void dk_ragged_detr3d_config_init(dk_detr3d_config *cfg);

/** StreamPETR / PETR / DETR3D training criterion over L decoder layers, in
 *  one pass: for every layer l and sample b (in parallel, one task each)
 *    cost[q, j] = cls_weight * focal_cost(logits[l, b, q], label_j)
 *               + reg_weight * sum_{k < match_codes} |box[l, b, q, k] - gt_j[k]|,
 *    an exact minimum-cost assignment (dk_ragged_assign_one's rules),
 *    loss_cls_l = cls_weight * sum over all queries and classes of the
 *        sigmoid focal loss (matched queries target their gt's class, the
 *        others background) / N,
 *    loss_bbox_l = reg_weight * sum over matched pairs of
 *        sum_k w_k |box[q, k] - gt_j[k]| / N,
 *  with N = max(1, sum_b min(Q, n_b)), the layer's matched count over the
 *  batch. loss_cls and loss_bbox are the sums over layers.
 *
 *  cls_logits (L, B, Q, C), box_preds (L, B, Q, D) and gt_boxes (B, N, D):
 *  float32, any strides (contiguous ones are read in place); gt_labels (B, N)
 *  int32/int64 ragged, labels in [0, C); gt_boxes ragged with the sizes of
 *  gt_labels (gt_boxes->sizes may be NULL). Outputs (each may be NULL):
 *  loss_cls, loss_bbox; layer_losses (2 L: cls, bbox per layer); grad_cls and
 *  grad_box (float32, shaped like the inputs: the gradients of loss_cls and of
 *  loss_bbox, i.e. each loss with output gradient 1; overwritten); match
 *  (L, B, Q) int64: the gt index matched to each query, -1 for none.
 *
 *  Precision: per-element terms are computed in float32 (vectorised exp/log
 *  accurate to ~2 ulp, log p and log(1 - p) from softplus so the tails stay
 *  accurate; the focal cost's 1e-12 guards are applied exactly), per-sample
 *  sums in float64, the assignment in float64 on the float32 costs (exact for
 *  them). Results are bit-identical for any pool size and instruction set
 *  (SSE2 or AVX2, chosen at load time; no FMA contraction).
 *
 *  Returns DK_EINVAL (shapes, a non-finite matching cost, naming layer, sample,
 *  query and ground truth; gt_boxes holding fewer boxes than gt_labels),
 *  DK_ERANGE (a label outside [0, C), naming sample and box; a size beyond the
 *  padded dim), DK_EUNSUPPORTED (a dtype other than float32), DK_ENOMEM. */
DK_API int dk_ragged_detr3d_loss(dk_pool *pool, const dk_detr3d_config *cfg,
                                 const dk_tensor *cls_logits, const dk_tensor *box_preds,
                                 const dk_ragged *gt_labels, const dk_ragged *gt_boxes,
                                 double *loss_cls, double *loss_bbox, double *layer_losses,
                                 dk_tensor *grad_cls, dk_tensor *grad_box, int64_t *match);

/* ------------------------------------------------------------------------ */
/* Gaussian heatmaps for centre-based heads (CenterNet / CenterPoint)        */

/** CenterNet's gaussian radius for a box of height x width (pixels) so that a
 *  box shifted within the radius keeps IoU >= min_overlap with it (the
 *  three-case bound of CenterNet's reference code, as in mmdet3d's
 *  gaussian_radius). Returns the radius in pixels, 0 for an empty box. */
DK_API double dk_ragged_gaussian_radius(double height, double width, double min_overlap);

/** Draws one Gaussian per object, max-combined (order does not matter):
 *  heatmaps (*batch, H, W), or (*batch, C, H, W) when labels are given (the
 *  object draws into plane label), float32 or float64, in place; centers
 *  (*batch, N, 2) ragged (x = column, y = row; integers, floats truncated
 *  toward zero as torch's .int()), radii (*batch, N) (integers or truncated
 *  floats, >= 0; the sizes of centers), labels (*batch, N) int in [0, C).
 *  The Gaussian of radius r has diameter d = 2r + 1, sigma = d /
 *  diameter_to_sigma, values exp(-(x^2 + y^2) / (2 sigma^2)) (zero below
 *  DBL_EPSILON) times k, clipped at the image border (mmdet3d
 *  draw_heatmap_gaussian). Centres outside the image draw nothing. Returns
 *  DK_EINVAL, DK_ERANGE (a negative radius, a label out of range). */
DK_API int dk_ragged_draw_gaussians(dk_pool *pool, dk_tensor *heatmaps, const dk_ragged *centers,
                                    const dk_ragged *radii, const dk_ragged *labels,
                                    double diameter_to_sigma, double k);

#ifdef __cplusplus
}
#endif

#endif /* DRIVEKIT_RAGGED_H */
