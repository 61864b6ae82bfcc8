/* nuScenes samples as pipeline input: the standard format and its values. */
#include <stdio.h>
#include <string.h>

#include "data_impl.h"

#define NS_PATH_MAX 4096

typedef struct cam_ids {
    int channel, filename, video, video_frame, timestamp, intrinsic, cam2ego, ego2global,
        lidar2cam, lidar2img;
} cam_ids;

struct dk_nusc_source {
    const dk_nusc *db;
    unsigned flags;
    dk_group *fmt;
    int token, scene_token, index_in_scene, timestamp, lidar2ego, ego2global;
    cam_ids cams[DK_NUSC_NUM_CAMS];
    int boxes, labels, num_pts, visibility, points;
};

static int build_format(dk_nusc_source *s)
{
    dk_group *g = NULL, *cam = NULL;
    int st = dk_group_create(&g);
    if (!st) st = dk_group_create(&cam);
    if (st) goto out;
#define ADD(expr, dst)                                                                     \
    do {                                                                                   \
        int id_ = (expr);                                                                  \
        if (id_ < 0) {                                                                     \
            st = id_;                                                                      \
            goto out;                                                                      \
        }                                                                                  \
        dst = id_;                                                                         \
    } while (0)
    int unused;
    ADD(dk_group_add_string(g, DK_GROUP_ROOT, "token"), s->token);
    ADD(dk_group_add_string(g, DK_GROUP_ROOT, "scene_token"), s->scene_token);
    ADD(dk_group_add_tensor(g, DK_GROUP_ROOT, "index_in_scene", DK_I64, 0), s->index_in_scene);
    ADD(dk_group_add_tensor(g, DK_GROUP_ROOT, "timestamp", DK_F64, 0), s->timestamp);
    ADD(dk_group_add_tensor(g, DK_GROUP_ROOT, "lidar2ego", DK_F32, 2), s->lidar2ego);
    ADD(dk_group_add_tensor(g, DK_GROUP_ROOT, "ego2global", DK_F32, 2), s->ego2global);
    ADD(dk_group_add_string(cam, DK_GROUP_ROOT, "channel"), unused);
    ADD(dk_group_add_string(cam, DK_GROUP_ROOT, "filename"), unused);
    ADD(dk_group_add_string(cam, DK_GROUP_ROOT, "video"), unused);
    ADD(dk_group_add_tensor(cam, DK_GROUP_ROOT, "video_frame", DK_I64, 0), unused);
    ADD(dk_group_add_tensor(cam, DK_GROUP_ROOT, "timestamp", DK_F64, 0), unused);
    ADD(dk_group_add_tensor(cam, DK_GROUP_ROOT, "intrinsic", DK_F32, 2), unused);
    ADD(dk_group_add_tensor(cam, DK_GROUP_ROOT, "cam2ego", DK_F32, 2), unused);
    ADD(dk_group_add_tensor(cam, DK_GROUP_ROOT, "ego2global", DK_F32, 2), unused);
    ADD(dk_group_add_tensor(cam, DK_GROUP_ROOT, "lidar2cam", DK_F32, 2), unused);
    ADD(dk_group_add_tensor(cam, DK_GROUP_ROOT, "lidar2img", DK_F32, 2), unused);
    (void)unused;
    int cams;
    ADD(dk_group_add_array(g, DK_GROUP_ROOT, "cams", cam, DK_GROUP_ROOT, DK_NUSC_NUM_CAMS), cams);
    for (int c = 0; c < DK_NUSC_NUM_CAMS; c++) {
        char en[8];
        snprintf(en, sizeof en, "%d", c);
        int e = dk_group_child(g, cams, en);
        cam_ids *ci = &s->cams[c];
        ci->channel = dk_group_child(g, e, "channel");
        ci->filename = dk_group_child(g, e, "filename");
        ci->video = dk_group_child(g, e, "video");
        ci->video_frame = dk_group_child(g, e, "video_frame");
        ci->timestamp = dk_group_child(g, e, "timestamp");
        ci->intrinsic = dk_group_child(g, e, "intrinsic");
        ci->cam2ego = dk_group_child(g, e, "cam2ego");
        ci->ego2global = dk_group_child(g, e, "ego2global");
        ci->lidar2cam = dk_group_child(g, e, "lidar2cam");
        ci->lidar2img = dk_group_child(g, e, "lidar2img");
    }
    ADD(dk_group_add_tensor(g, DK_GROUP_ROOT, "gt_bboxes_3d", DK_F32, 2), s->boxes);
    ADD(dk_group_add_tensor(g, DK_GROUP_ROOT, "gt_labels_3d", DK_I32, 1), s->labels);
    ADD(dk_group_add_tensor(g, DK_GROUP_ROOT, "gt_num_lidar_pts", DK_I32, 1), s->num_pts);
    ADD(dk_group_add_tensor(g, DK_GROUP_ROOT, "gt_visibility", DK_I32, 1), s->visibility);
    s->points = -1;
    if (s->flags & DK_NUSC_SOURCE_POINTS)
        ADD(dk_group_add_tensor(g, DK_GROUP_ROOT, "points", DK_F32, 2), s->points);
#undef ADD
out:
    dk_group_destroy(cam);
    if (st) {
        dk_group_destroy(g);
        return st;
    }
    s->fmt = g;
    return DK_OK;
}

int dk_nusc_source_create(const dk_nusc *db, unsigned flags, dk_nusc_source **out)
{
    if (!out) return dk__error(DK_EINVAL, __func__, "out is NULL");
    *out = NULL;
    if (!db) return dk__error(DK_EINVAL, __func__, "NULL database");
    if (flags & ~DK_NUSC_SOURCE_POINTS)
        return dk__error(DK_EINVAL, __func__, "unknown flags 0x%x", flags);
    dk_nusc_source *s = dk_calloc(1, sizeof *s);
    if (!s) return dk__error(DK_ENOMEM, __func__, "out of memory");
    s->db = db;
    s->flags = flags;
    int st = build_format(s);
    if (st) {
        dk_free(s);
        return st;
    }
    *out = s;
    return DK_OK;
}

void dk_nusc_source_destroy(dk_nusc_source *s)
{
    if (!s) return;
    dk_group_destroy(s->fmt);
    dk_free(s);
}

const dk_group *dk_nusc_source_format(const dk_nusc_source *s)
{
    return s ? s->fmt : NULL;
}

static int set_mat(dk_sample *x, int id, const double *m, int rows, int cols)
{
    float f[16];
    for (int i = 0; i < rows * cols; i++) f[i] = (float)m[i];
    int64_t shape[2] = {rows, cols};
    return dk_sample_set_copy(x, id, DK_F32, 2, shape, f);
}

static int set_pose(dk_sample *x, int id, const dk_pose *p)
{
    double m[16];
    dk_pose_to_matrix(p, m);
    return set_mat(x, id, m, 4, 4);
}

static int set_scalar(dk_sample *x, int id, dk_dtype dt, const void *v)
{
    return dk_sample_set_copy(x, id, dt, 0, NULL, v);
}

static int set_path(dk_sample *x, int id, const char *root, const char *rel)
{
    char path[NS_PATH_MAX];
    if (!rel) return dk_sample_set_string(x, id, "");
    if (snprintf(path, sizeof path, "%s/%s", root, rel) >= (int)sizeof path)
        return dk__error(DK_EINVAL, "dk_nusc_source_read", "%s: path too long", rel);
    return dk_sample_set_string(x, id, path);
}

int dk_nusc_source_read(const dk_nusc_source *s, int64_t i, dk_sample *x)
{
    if (!s || !x) return dk__error(DK_EINVAL, __func__, "NULL argument");
    dk_nusc_sample smp;
    int st = dk_nusc_get_sample(s->db, i, &smp);
    if (st) return st;
    int epoch = x->values ? x->epoch : 0;
    if (x->values) dk_sample_free(x);
    if ((st = dk_sample_init(x, dk_group_id_limit(s->fmt)))) return st;
    x->index = i;
    x->epoch = epoch;
    const char *root = dk_nusc_root(s->db);
    double ts = (double)smp.timestamp * 1e-6;
    st = dk_sample_set_string(x, s->token, smp.token);
    if (!st) st = dk_sample_set_string(x, s->scene_token, smp.scene_token);
    if (!st) st = set_scalar(x, s->index_in_scene, DK_I64, &smp.index_in_scene);
    if (!st) st = set_scalar(x, s->timestamp, DK_F64, &ts);
    if (!st) st = set_pose(x, s->lidar2ego, &smp.lidar2ego);
    if (!st) st = set_pose(x, s->ego2global, &smp.ego2global);
    for (int c = 0; c < DK_NUSC_NUM_CAMS && !st; c++) {
        const dk_nusc_cam *cam = &smp.cams[c];
        const cam_ids *ci = &s->cams[c];
        double cts = (double)cam->timestamp * 1e-6;
        st = dk_sample_set_string(x, ci->channel, cam->channel);
        if (!st) st = set_path(x, ci->filename, root, cam->filename);
        if (!st) st = set_path(x, ci->video, root, cam->video);
        if (!st) st = set_scalar(x, ci->video_frame, DK_I64, &cam->video_frame);
        if (!st) st = set_scalar(x, ci->timestamp, DK_F64, &cts);
        if (!st) st = set_mat(x, ci->intrinsic, cam->intrinsic, 3, 3);
        if (!st) st = set_pose(x, ci->cam2ego, &cam->sensor2ego);
        if (!st) st = set_pose(x, ci->ego2global, &cam->ego2global);
        if (!st) st = set_mat(x, ci->lidar2cam, cam->lidar2cam, 4, 4);
        if (!st) st = set_mat(x, ci->lidar2img, cam->lidar2img, 4, 4);
    }
    if (st) return st;
    const dk_nusc_box *b;
    int64_t n = dk_nusc_get_boxes(s->db, i, &b);
    if (n < 0) return (int)n;
    dk_tensor tb, tl, tn, tv;
    int64_t shape[2] = {n, 9};
    memset(&tl, 0, sizeof tl);
    memset(&tn, 0, sizeof tn);
    memset(&tv, 0, sizeof tv);
    st = dk_tensor_alloc(&tb, DK_F32, 2, shape);
    if (!st) st = dk_tensor_alloc(&tl, DK_I32, 1, shape);
    if (!st) st = dk_tensor_alloc(&tn, DK_I32, 1, shape);
    if (!st) st = dk_tensor_alloc(&tv, DK_I32, 1, shape);
    if (st) {
        dk_tensor_release(&tb);
        dk_tensor_release(&tl);
        dk_tensor_release(&tn);
        dk_tensor_release(&tv);
        return st;
    }
    float *bx = tb.data;
    int32_t *lb = tl.data, *np = tn.data, *vi = tv.data;
    for (int64_t k = 0; k < n; k++) {
        float *r = bx + k * 9;
        r[0] = b[k].center[0];
        r[1] = b[k].center[1];
        r[2] = b[k].center[2];
        r[3] = b[k].size[0];
        r[4] = b[k].size[1];
        r[5] = b[k].size[2];
        r[6] = b[k].yaw;
        r[7] = b[k].velocity[0];
        r[8] = b[k].velocity[1];
        lb[k] = b[k].label;
        np[k] = b[k].num_lidar_pts;
        vi[k] = b[k].visibility;
    }
    dk_sample_set(x, s->boxes, &tb);
    dk_sample_set(x, s->labels, &tl);
    dk_sample_set(x, s->num_pts, &tn);
    dk_sample_set(x, s->visibility, &tv);
    if (s->points >= 0) {
        float *pts;
        int64_t m;
        st = dk_nusc_load_points(s->db, i, 5, &pts, &m);
        if (st) return st;
        int64_t ps[2] = {m, 5};
        st = dk_sample_set_copy(x, s->points, DK_F32, 2, ps, pts);
        dk_free(pts);
    }
    return st;
}
