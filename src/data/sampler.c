/* Samplers: shuffled + sharded epochs, and scene sequences per batch slot. */
#include <string.h>

#include "data_impl.h"

struct dk_sampler {
    dk_sampler_config cfg;
    /* SHUFFLED */
    int64_t *perm;         /* this rank's indices of the current epoch */
    int64_t per_rank, pos;
    int epoch;
    int ended;             /* DK_EOF returned for this epoch */
    /* SEQUENCE */
    int64_t *first, *length;
    int *order;            /* scene order of the current cycle */
    int cycle;             /* the cycle `order` belongs to */
    int *slot_scene;       /* per slot: scene, position */
    int64_t *slot_pos;
    int64_t qpos;          /* next position in the scene queue */
};

void dk_sampler_config_init(dk_sampler_config *cfg)
{
    if (!cfg) return;
    memset(cfg, 0, sizeof *cfg);
    cfg->kind = DK_SAMPLER_SHUFFLED;
    cfg->batch_size = 1;
    cfg->world_size = 1;
    cfg->shuffle = 1;
}

/* Fisher-Yates with a Philox stream keyed by (seed, tag, epoch). */
static void permute64(int64_t *v, int64_t n, uint64_t seed, uint64_t tag, int epoch)
{
    dk_rng r;
    dk_rng_init(&r, seed, dk_rng_stream_id(tag, (uint64_t)epoch, 0, 0));
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = i < (int64_t)UINT32_MAX ? (int64_t)dk_rng_below(&r, (uint32_t)(i + 1))
                                            : (int64_t)(dk_rng_u64(&r) % (uint64_t)(i + 1));
        int64_t t = v[i];
        v[i] = v[j];
        v[j] = t;
    }
}

static int start_epoch(dk_sampler *s, int epoch)
{
    const dk_sampler_config *c = &s->cfg;
    int64_t *all = dk_malloc((size_t)c->n * sizeof *all);
    if (!all) return dk__error(DK_ENOMEM, "dk_sampler", "out of memory");
    for (int64_t i = 0; i < c->n; i++) all[i] = i;
    if (c->shuffle) permute64(all, c->n, c->seed, 0x5348554646ull, epoch);
    /* Strided shard of the permutation padded by wrapping to per_rank * world. */
    for (int64_t k = 0; k < s->per_rank; k++)
        s->perm[k] = all[(k * c->world_size + c->rank) % c->n];
    dk_free(all);
    s->epoch = epoch;
    s->pos = 0;
    s->ended = 0;
    return DK_OK;
}

static void start_cycle(dk_sampler *s, int cycle)
{
    for (int k = 0; k < s->cfg.n_scenes; k++) s->order[k] = k;
    if (s->cfg.shuffle) {
        dk_rng r;
        dk_rng_init(&r, s->cfg.seed, dk_rng_stream_id(0x53455155ull, (uint64_t)cycle, 0, 0));
        for (int i = s->cfg.n_scenes - 1; i > 0; i--) {
            int j = (int)dk_rng_below(&r, (uint32_t)(i + 1));
            int t = s->order[i];
            s->order[i] = s->order[j];
            s->order[j] = t;
        }
    }
    s->cycle = cycle;
}

int dk_sampler_create(const dk_sampler_config *cfg, dk_sampler **out)
{
    if (!out) return dk__error(DK_EINVAL, __func__, "out is NULL");
    *out = NULL;
    if (!cfg) return dk__error(DK_EINVAL, __func__, "NULL config");
    if (cfg->batch_size < 1) return dk__error(DK_EINVAL, __func__, "batch_size %d < 1", cfg->batch_size);
    if (cfg->world_size < 1 || cfg->rank < 0 || cfg->rank >= cfg->world_size)
        return dk__error(DK_EINVAL, __func__, "rank %d outside [0, world_size = %d)", cfg->rank,
                         cfg->world_size);
    if ((int64_t)cfg->batch_size * cfg->world_size > (1 << 24))
        return dk__error(DK_EINVAL, __func__, "batch_size %d x world_size %d is too large",
                         cfg->batch_size, cfg->world_size);
    if (cfg->kind == DK_SAMPLER_SHUFFLED && cfg->n > ((int64_t)1 << 40))
        return dk__error(DK_EINVAL, __func__, "n = %lld samples is too large",
                         (long long)cfg->n);
    dk_sampler *s = dk_calloc(1, sizeof *s);
    if (!s) return dk__error(DK_ENOMEM, __func__, "out of memory");
    s->cfg = *cfg;
    int st = DK_OK;
    if (cfg->kind == DK_SAMPLER_SHUFFLED) {
        if (cfg->n < 1) {
            st = dk__error(DK_EINVAL, __func__, "n = %lld: empty dataset", (long long)cfg->n);
        } else {
            s->per_rank = (cfg->n + cfg->world_size - 1) / cfg->world_size;
            if (cfg->drop_last && s->per_rank < cfg->batch_size) {
                int64_t per_rank = s->per_rank;
                dk_sampler_destroy(s);
                return dk__error(DK_EINVAL, __func__,
                                 "drop_last with %lld samples per rank leaves no batch of %d",
                                 (long long)per_rank, cfg->batch_size);
            }
            s->perm = dk_malloc((size_t)s->per_rank * sizeof *s->perm);
            st = s->perm ? start_epoch(s, 0) : dk__error(DK_ENOMEM, __func__, "out of memory");
        }
    } else if (cfg->kind == DK_SAMPLER_SEQUENCE) {
        int slots = cfg->batch_size * cfg->world_size;
        if (!cfg->scene_first || !cfg->scene_length) {
            st = dk__error(DK_EINVAL, __func__, "SEQUENCE needs scene_first and scene_length");
        } else if (cfg->n_scenes < slots) {
            st = dk__error(DK_EINVAL, __func__,
                           "%d scenes for %d sequence slots (batch_size x world_size): each slot "
                           "needs its own scene",
                           cfg->n_scenes, slots);
        } else {
            s->first = dk_malloc((size_t)cfg->n_scenes * sizeof *s->first);
            s->length = dk_malloc((size_t)cfg->n_scenes * sizeof *s->length);
            s->order = dk_malloc((size_t)cfg->n_scenes * sizeof *s->order);
            s->slot_scene = dk_malloc((size_t)slots * sizeof *s->slot_scene);
            s->slot_pos = dk_malloc((size_t)slots * sizeof *s->slot_pos);
            if (!s->first || !s->length || !s->order || !s->slot_scene || !s->slot_pos) {
                st = dk__error(DK_ENOMEM, __func__, "out of memory");
            } else {
                for (int k = 0; k < cfg->n_scenes && !st; k++) {
                    if (cfg->scene_length[k] < 1 || cfg->scene_first[k] < 0)
                        st = dk__error(DK_EINVAL, __func__, "scene %d: first %lld, length %lld", k,
                                       (long long)cfg->scene_first[k],
                                       (long long)cfg->scene_length[k]);
                    s->first[k] = cfg->scene_first[k];
                    s->length[k] = cfg->scene_length[k];
                }
                s->cfg.scene_first = s->first;
                s->cfg.scene_length = s->length;
                if (!st) st = dk_sampler_set_epoch(s, 0);
            }
        }
    } else {
        st = dk__error(DK_EINVAL, __func__, "unknown sampler kind %d", (int)cfg->kind);
    }
    if (st) {
        dk_sampler_destroy(s);
        return st;
    }
    *out = s;
    return DK_OK;
}

void dk_sampler_destroy(dk_sampler *s)
{
    if (!s) return;
    dk_free(s->perm);
    dk_free(s->first);
    dk_free(s->length);
    dk_free(s->order);
    dk_free(s->slot_scene);
    dk_free(s->slot_pos);
    dk_free(s);
}

int64_t dk_sampler_batches_per_epoch(const dk_sampler *s)
{
    if (!s || s->cfg.kind != DK_SAMPLER_SHUFFLED) return -1;
    int64_t b = s->cfg.batch_size;
    return s->cfg.drop_last ? s->per_rank / b : (s->per_rank + b - 1) / b;
}

/* SEQUENCE: every rank simulates all G = batch_size * world_size slots (it
 * only depends on the config), so no two slots of any rank walk the same
 * scene at once. Scenes come from one queue, the concatenation of each
 * cycle's shuffled order; a slot that finishes its scene takes the next
 * queued scene no other slot is walking (a scene in use is passed over). */
static int order_at(dk_sampler *s, int64_t q)
{
    int cycle = (int)(q / s->cfg.n_scenes);
    if (cycle != s->cycle) start_cycle(s, cycle);
    return s->order[q % s->cfg.n_scenes];
}

static void seq_assign(dk_sampler *s, int g)
{
    int G = s->cfg.batch_size * s->cfg.world_size;
    for (;;) {
        int sc = order_at(s, s->qpos++);
        int used = 0;
        for (int o = 0; o < G && !used; o++)
            used = o != g && s->slot_scene[o] == sc && s->slot_pos[o] < s->length[sc];
        if (!used) {
            s->slot_scene[g] = sc;
            s->slot_pos[g] = 0;
            return;
        }
    }
}

int dk_sampler_set_epoch(dk_sampler *s, int epoch)
{
    if (!s) return dk__error(DK_EINVAL, __func__, "NULL sampler");
    if (epoch < 0) return dk__error(DK_EINVAL, __func__, "epoch %d < 0", epoch);
    if (s->cfg.kind == DK_SAMPLER_SHUFFLED) return start_epoch(s, epoch);
    int G = s->cfg.batch_size * s->cfg.world_size;
    start_cycle(s, epoch);
    s->qpos = (int64_t)epoch * s->cfg.n_scenes;
    for (int g = 0; g < G; g++) s->slot_scene[g] = -1;
    for (int g = 0; g < G; g++) seq_assign(s, g);
    s->epoch = epoch;
    return DK_OK;
}

int dk_sampler_next(dk_sampler *s, int64_t *indices, int *epoch)
{
    if (!s || !indices) return dk__error(DK_EINVAL, __func__, "NULL argument");
    const dk_sampler_config *c = &s->cfg;
    if (c->kind == DK_SAMPLER_SHUFFLED) {
        int64_t left = s->per_rank - s->pos;
        if (left <= 0 || (c->drop_last && left < c->batch_size)) {
            if (!s->ended) {
                s->ended = 1;
                return DK_EOF;
            }
            int st = start_epoch(s, s->epoch + 1);
            if (st) return st;
            left = s->per_rank;
            if (c->drop_last && left < c->batch_size) {
                /* Not even one whole batch per epoch. */
                s->ended = 1;
                return DK_EOF;
            }
        }
        int n = left < c->batch_size ? (int)left : c->batch_size;
        memcpy(indices, s->perm + s->pos, (size_t)n * sizeof *indices);
        s->pos += n;
        if (epoch) *epoch = s->epoch;
        return n;
    }
    int G = c->batch_size * c->world_size;
    for (int g = 0; g < G; g++)
        if (s->slot_pos[g] >= s->length[s->slot_scene[g]]) seq_assign(s, g);
    for (int k = 0; k < c->batch_size; k++) {
        int g = c->rank * c->batch_size + k;
        indices[k] = s->first[s->slot_scene[g]] + s->slot_pos[g];
    }
    for (int g = 0; g < G; g++) s->slot_pos[g]++;
    if (epoch) *epoch = (int)((s->qpos - 1) / c->n_scenes);
    return c->batch_size;
}

int dk__sampler_batch_size(const dk_sampler *s)
{
    return s->cfg.batch_size;
}
