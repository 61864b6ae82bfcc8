/* Pipelines from JSON step lists, and named presets. */
#include <stdio.h>
#include <string.h>

#include "data_impl.h"

#define MAX_NAMES 32

/* -- small JSON readers with defaults --------------------------------------- */

static int opt_field(const dk_json_cur *o, const char *key, dk_json_cur *f)
{
    int st = dk_json_field_opt(o, key, f);
    if (st) return st;
    return dk_json_type_of(f) == DK_JSON_MISSING ? 1 : 0;
}

static int get_double(const dk_json_cur *o, const char *key, double *v)
{
    dk_json_cur f;
    int st = opt_field(o, key, &f);
    return st ? (st > 0 ? 0 : st) : dk_json_number(&f, v);
}

static int get_float(const dk_json_cur *o, const char *key, float *v)
{
    double d = *v;
    int st = get_double(o, key, &d);
    if (!st) *v = (float)d;
    return st;
}

static int get_int(const dk_json_cur *o, const char *key, int lo, int hi, int *v)
{
    dk_json_cur f;
    int st = opt_field(o, key, &f);
    if (st) return st > 0 ? 0 : st;
    int64_t x;
    st = dk_json_int(&f, lo, hi, &x);
    if (!st) *v = (int)x;
    return st;
}

static int get_bool(const dk_json_cur *o, const char *key, int *v)
{
    dk_json_cur f;
    int st = opt_field(o, key, &f);
    return st ? (st > 0 ? 0 : st) : dk_json_bool(&f, v);
}

static int get_str(const dk_json_cur *o, const char *key, const char **v)
{
    dk_json_cur f;
    int st = opt_field(o, key, &f);
    return st ? (st > 0 ? 0 : st) : dk_json_string(&f, v);
}

static int get_floats(const dk_json_cur *o, const char *key, float *v, size_t n)
{
    dk_json_cur f;
    double d[8];
    int st = opt_field(o, key, &f);
    if (st) return st > 0 ? 0 : st;
    st = dk_json_numbers(&f, d, n);
    for (size_t i = 0; i < n && !st; i++) v[i] = (float)d[i];
    return st;
}

/* An array of strings (at most MAX_NAMES). *n = -1 when absent. */
static int get_names(const dk_json_cur *o, const char *key, const char **names, int *n)
{
    dk_json_cur f, it;
    *n = -1;
    int st = opt_field(o, key, &f);
    if (st) return st > 0 ? 0 : st;
    if (dk_json_type_of(&f) == DK_JSON_STRING) {
        *n = 1;
        return dk_json_string(&f, &names[0]);
    }
    size_t m = dk_json_size(&f);
    if (dk_json_type_of(&f) != DK_JSON_ARRAY || m > MAX_NAMES)
        return dk__error(DK_EINVALIDDATA, "dk_pipeline_add_json",
                         "%s: expected a string or an array of at most %d strings", f.path,
                         MAX_NAMES);
    for (size_t i = 0; i < m; i++) {
        if ((st = dk_json_item(&f, i, &it)) || (st = dk_json_string(&it, &names[i]))) return st;
    }
    *n = (int)m;
    return DK_OK;
}

static int pick(const dk_json_cur *o, const char *key, const char *const *choices, int n,
                int *v)
{
    const char *s = NULL;
    int st = get_str(o, key, &s);
    if (st || !s) return st;
    for (int i = 0; i < n; i++)
        if (choices[i] && !strcmp(s, choices[i])) {
            *v = i;
            return DK_OK;
        }
    dk_json_cur f;
    dk_json_field(o, key, &f);
    return dk__error(DK_EINVALIDDATA, "dk_pipeline_add_json", "%s: unknown value '%s'", f.path, s);
}

/* Checks every key of o is one of `keys` (typos are errors, not defaults). */
static int known_keys(const dk_json_cur *o, const char *const *keys)
{
    for (size_t i = 0; i < dk_json_size(o); i++) {
        const char *k;
        dk_json_cur v;
        int st = dk_json_member(o, i, &k, &v);
        if (st) return st;
        int ok = !strcmp(k, "step") || !strcmp(k, "per_element") || !strcmp(k, "at");
        for (const char *const *p = keys; *p && !ok; p++) ok = !strcmp(*p, k);
        if (!ok)
            return dk__error(DK_EINVALIDDATA, "dk_pipeline_add_json", "%s%s%s: unknown parameter",
                             o->path, o->path[0] ? "." : "", k);
    }
    return DK_OK;
}

/* -- steps ------------------------------------------------------------------ */

static int s_image_decode(const dk_json_cur *o, dk_step **out)
{
    static const char *const keys[] = {"root", "source", "image_name", "file_field",
                                       "video_field", "frame_field", NULL};
    static const char *const sources[] = {"auto", "file", "video"};
    int st = known_keys(o, keys);
    dk_image_decode_config c;
    dk_image_decode_config_init(&c);
    int src = (int)c.source;
    if (!st) st = get_str(o, "root", &c.root);
    if (!st) st = pick(o, "source", sources, 3, &src);
    if (!st) st = get_str(o, "image_name", &c.image_name);
    if (!st) st = get_str(o, "file_field", &c.file_field);
    if (!st) st = get_str(o, "video_field", &c.video_field);
    if (!st) st = get_str(o, "frame_field", &c.frame_field);
    c.source = (dk_image_source)src;
    return st ? st : dk_step_image_decode(&c, out);
}

static int s_affine(const dk_json_cur *o, dk_step **out)
{
    static const char *const keys[] = {"preset", "size", "resize_mode", "anchor", "ops",
                                       "image_name", "matrix_fields", "point_fields", "nearest",
                                       "fill", "pixel_center", NULL};
    static const char *const modes[] = {"stretch", "pad", "crop"};
    static const char *const anchors[] = {"center", "top_left", "bottom_right"};
    static const char *const kinds[] = {NULL, "scale", "scale_xy", "flip", "rotate", "shear",
                                        "translate", "shift_inside", "align_border",
                                        "resize_crop", "resize_crop_eval"};
    static const char *const borders[] = {"top", "left", "bottom", "right"};
    int st = known_keys(o, keys);
    dk_affine_config c;
    dk_affine_config_init(&c);
    const char *preset = NULL;
    if (!st) st = get_str(o, "preset", &preset);
    if (!st && preset) {
        if (!strcmp(preset, "streampetr"))
            dk_affine_config_streampetr(&c);
        else if (!strcmp(preset, "streampetr_eval"))
            dk_affine_config_streampetr_eval(&c);
        else
            return dk__error(DK_EINVALIDDATA, "dk_pipeline_add_json",
                             "%s.preset: unknown affine preset '%s' (streampetr, streampetr_eval)",
                             o->path, preset);
    }
    int size[2] = {c.out_w, c.out_h}, mode = (int)c.resize_mode, anchor = (int)c.anchor;
    dk_json_cur f, it;
    if (!st && !(st = opt_field(o, "size", &f))) {
        if (dk_json_type_of(&f) != DK_JSON_ARRAY || dk_json_size(&f) != 2)
            st = dk__error(DK_EINVALIDDATA, "dk_pipeline_add_json",
                           "%s: expected [width, height]", f.path);
        for (size_t i = 0; i < 2 && !st; i++) {
            int64_t v;
            st = dk_json_item(&f, i, &it);
            if (!st) st = dk_json_int(&it, 0, 1 << 16, &v);
            if (!st) size[i] = (int)v;
        }
    } else if (st > 0) {
        st = 0;
    }
    c.out_w = size[0];
    c.out_h = size[1];
    if (!st) st = pick(o, "resize_mode", modes, 3, &mode);
    if (!st) st = pick(o, "anchor", anchors, 3, &anchor);
    c.resize_mode = (dk_resize_mode)mode;
    c.anchor = (dk_resize_anchor)anchor;
    if (!st && !(st = opt_field(o, "ops", &f))) {
        c.n_ops = 0;
        for (size_t i = 0; i < dk_json_size(&f) && !st; i++) {
            static const char *const okeys[] = {"op", "prob", "lo", "hi", "axes", "border", NULL};
            st = dk_json_item(&f, i, &it);
            if (!st) st = known_keys(&it, okeys);
            int kind = 0, border = DK_BORDER_BOTTOM, axes = 3;
            double prob = 1, lo[2] = {0, 0}, hi[2] = {0, 0};
            if (!st) st = pick(&it, "op", kinds, 11, &kind);
            if (!st && !kind)
                st = dk__error(DK_EINVALIDDATA, "dk_pipeline_add_json", "%s.op: missing", it.path);
            if (!st) st = get_double(&it, "prob", &prob);
            dk_json_cur r;
            if (!st && !(st = opt_field(&it, "lo", &r))) {
                size_t n = dk_json_size(&r);
                st = dk_json_type_of(&r) == DK_JSON_NUMBER ? dk_json_number(&r, &lo[0])
                                                             : dk_json_numbers(&r, lo, n == 1 ? 1 : 2);
            } else if (st > 0) {
                st = 0;
            }
            if (!st && !(st = opt_field(&it, "hi", &r))) {
                size_t n = dk_json_size(&r);
                st = dk_json_type_of(&r) == DK_JSON_NUMBER ? dk_json_number(&r, &hi[0])
                                                             : dk_json_numbers(&r, hi, n == 1 ? 1 : 2);
            } else if (st > 0) {
                st = 0;
                hi[0] = lo[0];
                hi[1] = lo[1];
            }
            if (!st) st = get_int(&it, "axes", 1, 3, &axes);
            if (!st) st = pick(&it, "border", borders, 4, &border);
            if (!st) {
                dk_affine_op *op = dk_affine_config_add(&c, (dk_affine_op_kind)kind, prob, lo[0],
                                                        hi[0], lo[1], hi[1]);
                if (!op)
                    st = dk__error(DK_EINVALIDDATA, "dk_pipeline_add_json",
                                   "%s: more than %d ops", f.path, DK_AFFINE_MAX_OPS);
                else {
                    op->axes = axes;
                    op->border = (dk_border)border;
                }
            }
        }
    } else if (st > 0) {
        st = 0;
    }
    if (!st) st = get_str(o, "image_name", &c.image_name);
    if (!st) st = get_str(o, "matrix_fields", &c.matrix_fields);
    if (!st) st = get_str(o, "point_fields", &c.point_fields);
    if (!st) st = get_bool(o, "nearest", &c.nearest);
    if (!st) st = get_floats(o, "fill", c.fill, 3);
    if (!st) st = get_double(o, "pixel_center", &c.pixel_center);
    return st ? st : dk_step_affine(&c, out);
}

static int s_photometric(const dk_json_cur *o, dk_step **out)
{
    static const char *const keys[] = {"image_name", "brightness_delta", "contrast", "saturation",
                                       "hue_delta", "prob_brightness", "prob_contrast",
                                       "prob_saturation", "prob_hue", "prob_swap", NULL};
    int st = known_keys(o, keys);
    dk_photometric_config c;
    dk_photometric_config_init(&c);
    float con[2] = {c.contrast_lo, c.contrast_hi}, sat[2] = {c.saturation_lo, c.saturation_hi};
    if (!st) st = get_str(o, "image_name", &c.image_name);
    if (!st) st = get_float(o, "brightness_delta", &c.brightness_delta);
    if (!st) st = get_floats(o, "contrast", con, 2);
    if (!st) st = get_floats(o, "saturation", sat, 2);
    if (!st) st = get_float(o, "hue_delta", &c.hue_delta);
    if (!st) st = get_float(o, "prob_brightness", &c.prob_brightness);
    if (!st) st = get_float(o, "prob_contrast", &c.prob_contrast);
    if (!st) st = get_float(o, "prob_saturation", &c.prob_saturation);
    if (!st) st = get_float(o, "prob_hue", &c.prob_hue);
    if (!st) st = get_float(o, "prob_swap", &c.prob_swap);
    c.contrast_lo = con[0];
    c.contrast_hi = con[1];
    c.saturation_lo = sat[0];
    c.saturation_hi = sat[1];
    return st ? st : dk_step_photometric(&c, out);
}

static int s_normalize(const dk_json_cur *o, dk_step **out)
{
    static const char *const keys[] = {"mean", "std", "to_bgr", NULL};
    float mean[3] = {0, 0, 0}, std[3] = {1, 1, 1};
    int bgr = 0;
    int st = known_keys(o, keys);
    if (!st) st = get_floats(o, "mean", mean, 3);
    if (!st) st = get_floats(o, "std", std, 3);
    if (!st) st = get_bool(o, "to_bgr", &bgr);
    return st ? st : dk_step_normalize(mean, std, bgr, out);
}

static int s_pad(const dk_json_cur *o, dk_step **out)
{
    static const char *const keys[] = {"multiple", "width", "height", "value", NULL};
    int multiple = 0, w = 0, h = 0;
    float v = 0;
    int st = known_keys(o, keys);
    if (!st) st = get_int(o, "multiple", 0, 1 << 16, &multiple);
    if (!st) st = get_int(o, "width", 0, 1 << 20, &w);
    if (!st) st = get_int(o, "height", 0, 1 << 20, &h);
    if (!st) st = get_float(o, "value", &v);
    return st ? st : dk_step_pad(multiple, w, h, v, out);
}

static int s_layout(const dk_json_cur *o, dk_step **out)
{
    static const char *const keys[] = {"chw", "dtype", NULL};
    static const char *const dts[] = {"uint8", "float32", "float16"};
    static const dk_dtype map[] = {DK_U8, DK_F32, DK_F16};
    int chw = 1, dt = 1;
    int st = known_keys(o, keys);
    if (!st) st = get_bool(o, "chw", &chw);
    if (!st) st = pick(o, "dtype", dts, 3, &dt);
    return st ? st : dk_step_layout(chw, map[dt], out);
}

static int s_global(const dk_json_cur *o, dk_step **out)
{
    static const char *const keys[] = {"rot_range", "scale_range", "translation_std",
                                       "flip_h_prob", "flip_v_prob", "boxes", "points",
                                       "from_lidar", "to_lidar", "matrix_out", NULL};
    dk_global_transform_3d_config c;
    dk_global_transform_3d_config_init(&c);
    const char *from[MAX_NAMES], *to[MAX_NAMES];
    int nf = -1, nt = -1;
    int st = known_keys(o, keys);
    if (!st) st = get_names(o, "from_lidar", from, &nf);
    if (!st) st = get_names(o, "to_lidar", to, &nt);
    if (!st) st = get_str(o, "matrix_out", &c.matrix_out);
    if (nf >= 0) {
        c.from_lidar = from;
        c.n_from_lidar = nf;
    }
    if (nt >= 0) {
        c.to_lidar = to;
        c.n_to_lidar = nt;
    }
    if (!st) st = get_floats(o, "rot_range", c.rot_range, 2);
    if (!st) st = get_floats(o, "scale_range", c.scale_range, 2);
    if (!st) st = get_floats(o, "translation_std", c.translation_std, 3);
    if (!st) st = get_float(o, "flip_h_prob", &c.flip_h_prob);
    if (!st) st = get_float(o, "flip_v_prob", &c.flip_v_prob);
    if (!st) st = get_str(o, "boxes", &c.boxes);
    if (!st) st = get_str(o, "points", &c.points);
    return st ? st : dk_step_global_transform_3d(&c, out);
}

/* "fields" (names of per-element fields), "mask" and "remove", shared by the
   filters. */
static int filter_common(const dk_json_cur *o, const char **names, int *n_names,
                         const char **mask, int *remove)
{
    int st = get_names(o, "fields", names, n_names);
    if (!st) st = get_str(o, "mask", mask);
    if (!st) st = get_bool(o, "remove", remove);
    return st;
}

static int s_points_in_range(const dk_json_cur *o, dk_step **out)
{
    static const char *const keys[] = {"points", "range", "fields", NULL};
    dk_points_in_range_config c;
    dk_points_in_range_config_init(&c);
    const char *names[MAX_NAMES];
    int n = -1;
    int st = known_keys(o, keys);
    if (!st) st = get_str(o, "points", &c.points);
    if (!st) st = get_floats(o, "range", c.range, 6);
    if (!st) st = get_names(o, "fields", names, &n);
    if (n >= 0) {
        c.fields = names;
        c.n_fields = n;
    }
    return st ? st : dk_step_points_in_range(&c, out);
}

static int s_boxes_in_range(const dk_json_cur *o, dk_step **out)
{
    static const char *const keys[] = {"boxes", "range", "use_z", "wrap_yaw", "fields", "mask",
                                       "remove", NULL};
    dk_boxes_in_range_config c;
    dk_boxes_in_range_config_init(&c);
    const char *names[MAX_NAMES];
    int n = -1;
    int st = known_keys(o, keys);
    if (!st) st = get_str(o, "boxes", &c.boxes);
    if (!st) st = get_floats(o, "range", c.range, 6);
    if (!st) st = get_bool(o, "use_z", &c.use_z);
    if (!st) st = get_bool(o, "wrap_yaw", &c.wrap_yaw);
    if (!st) st = filter_common(o, names, &n, &c.mask, &c.remove);
    if (n >= 0) {
        c.fields = names;
        c.n_fields = n;
    }
    return st ? st : dk_step_boxes_in_range(&c, out);
}

static int s_remove_masked(const dk_json_cur *o, dk_step **out)
{
    static const char *const keys[] = {"mask", "fields", "keep_mask", NULL};
    const char *mask = NULL, *names[MAX_NAMES];
    int n = -1, keep = 0;
    int st = known_keys(o, keys);
    if (!st) st = dk_json_get_string(o, "mask", &mask);
    if (!st) st = get_names(o, "fields", names, &n);
    if (!st) st = get_bool(o, "keep_mask", &keep);
    return st ? st : dk_step_remove_masked(mask, n >= 0 ? names : NULL, n >= 0 ? n : 0, keep, out);
}

static int s_class_filter(const dk_json_cur *o, dk_step **out)
{
    static const char *const keys[] = {"classes", "remap", "labels", "fields", "mask", "remove",
                                       NULL};
    dk_class_filter_config c;
    dk_class_filter_config_init(&c);
    const char *names[MAX_NAMES];
    int n_names = -1;
    int32_t classes[DK_NUSC_NUM_CLASSES * 4];
    int n = 0;
    int st = known_keys(o, keys);
    dk_json_cur f, it;
    if (!st) st = dk_json_field(o, "classes", &f);
    for (size_t i = 0; !st && i < dk_json_size(&f); i++) {
        if (n >= (int)(sizeof classes / sizeof classes[0])) {
            st = dk__error(DK_EINVALIDDATA, "dk_pipeline_add_json", "%s: too many classes", f.path);
            break;
        }
        st = dk_json_item(&f, i, &it);
        if (st) break;
        if (dk_json_type_of(&it) == DK_JSON_STRING) {
            const char *name;
            dk_json_string(&it, &name);
            int label = -1;
            for (int k = 0; k < DK_NUSC_NUM_CLASSES; k++)
                if (!strcmp(dk_nusc_class_name(k), name)) label = k;
            if (label < 0)
                st = dk__error(DK_EINVALIDDATA, "dk_pipeline_add_json",
                               "%s: '%s' is not a nuScenes detection class", it.path, name);
            classes[n++] = label;
        } else {
            int64_t v;
            st = dk_json_int(&it, -1, 1 << 20, &v);
            classes[n++] = (int32_t)v;
        }
    }
    c.classes = classes;
    c.n_classes = n;
    if (!st) st = get_bool(o, "remap", &c.remap);
    if (!st) st = get_str(o, "labels", &c.labels);
    if (!st) st = filter_common(o, names, &n_names, &c.mask, &c.remove);
    if (n_names >= 0) {
        c.fields = names;
        c.n_fields = n_names;
    }
    return st ? st : dk_step_class_filter(&c, out);
}

static int s_min_points(const dk_json_cur *o, dk_step **out)
{
    static const char *const keys[] = {"min_points", "num_points", "fields", "mask", "remove",
                                       NULL};
    dk_min_points_filter_config c;
    dk_min_points_filter_config_init(&c);
    const char *names[MAX_NAMES];
    int n = -1;
    int st = known_keys(o, keys);
    if (!st) st = get_int(o, "min_points", 0, 1 << 30, &c.min_points);
    if (!st) st = get_str(o, "num_points", &c.num_points);
    if (!st) st = filter_common(o, names, &n, &c.mask, &c.remove);
    if (n >= 0) {
        c.fields = names;
        c.n_fields = n;
    }
    return st ? st : dk_step_min_points_filter(&c, out);
}

static int s_visible(const dk_json_cur *o, dk_step **out)
{
    static const char *const keys[] = {"min_depth", "min_size", "occlusion", "image_chw",
                                       "boxes", "labels", "lidar2img", "image", "image_size",
                                       "mask_out", "bboxes_out", "centers_out", "depths_out",
                                       "labels_out", "index_out", NULL};
    dk_visible_boxes_config c;
    dk_visible_boxes_config_init(&c);
    int st = known_keys(o, keys);
    float isz[2] = {0, 0};
    if (!st) st = get_str(o, "boxes", &c.boxes);
    if (!st) st = get_str(o, "labels", &c.labels);
    if (!st) st = get_str(o, "lidar2img", &c.lidar2img);
    if (!st) st = get_str(o, "image", &c.image);
    if (!st) st = get_floats(o, "image_size", isz, 2);
    c.image_w = (int)isz[0];
    c.image_h = (int)isz[1];
    if (!st) st = get_str(o, "mask_out", &c.mask_out);
    if (!st) st = get_str(o, "bboxes_out", &c.bboxes_out);
    if (!st) st = get_str(o, "centers_out", &c.centers_out);
    if (!st) st = get_str(o, "depths_out", &c.depths_out);
    if (!st) st = get_str(o, "labels_out", &c.labels_out);
    if (!st) st = get_str(o, "index_out", &c.index_out);
    if (!st) st = get_float(o, "min_depth", &c.min_depth);
    if (!st) st = get_float(o, "min_size", &c.min_size);
    if (!st) st = get_bool(o, "occlusion", &c.occlusion);
    if (!st) st = get_bool(o, "image_chw", &c.image_chw);
    return st ? st : dk_step_visible_boxes(&c, out);
}

static int s_pad_uniform(const dk_json_cur *o, dk_step **out)
{
    static const char *const keys[] = {"names", "capacity", "fill", "truncate", "count_suffix",
                                       NULL};
    dk_pad_to_uniform_config c;
    dk_pad_to_uniform_config_init(&c);
    const char *names[MAX_NAMES];
    int n = 0, cap = 0;
    int st = known_keys(o, keys);
    dk_json_cur f;
    if (!st) st = dk_json_field(o, "capacity", &f);   /* required */
    if (!st) st = get_names(o, "names", names, &n);
    if (!st) st = get_int(o, "capacity", 0, 1 << 24, &cap);
    if (!st) st = get_str(o, "count_suffix", &c.count_suffix);
    if (!st) st = get_double(o, "fill", &c.fill);
    if (!st) st = get_bool(o, "truncate", &c.truncate);
    c.names = names;
    c.n_names = n < 0 ? 0 : n;
    c.capacity = cap;
    return st ? st : dk_step_pad_to_uniform(&c, out);
}

static int s_heatmap(const dk_json_cur *o, dk_step **out)
{
    static const char *const keys[] = {"num_classes", "range", "voxel_size", "out_size_factor",
                                       "min_overlap", "min_radius", "out", "boxes", "labels",
                                       NULL};
    dk_heatmap_config c;
    dk_heatmap_config_init(&c);
    int st = known_keys(o, keys);
    if (!st) st = get_int(o, "num_classes", 1, 1024, &c.num_classes);
    if (!st) st = get_floats(o, "range", c.range, 6);
    if (!st) st = get_floats(o, "voxel_size", c.voxel_size, 2);
    if (!st) st = get_int(o, "out_size_factor", 1, 1024, &c.out_size_factor);
    if (!st) st = get_float(o, "min_overlap", &c.min_overlap);
    if (!st) st = get_int(o, "min_radius", 0, 1024, &c.min_radius);
    if (!st) st = get_str(o, "out", &c.out);
    if (!st) st = get_str(o, "boxes", &c.boxes);
    if (!st) st = get_str(o, "labels", &c.labels);
    return st ? st : dk_step_heatmap(&c, out);
}

static int s_remove(const dk_json_cur *o, dk_step **out)
{
    static const char *const keys[] = {"names", NULL};
    const char *names[MAX_NAMES];
    int n = 0;
    int st = known_keys(o, keys);
    if (!st) st = get_names(o, "names", names, &n);
    return st ? st : dk_step_remove_fields(names, n < 0 ? 0 : n, out);
}

static const struct {
    const char *name;
    int (*make)(const dk_json_cur *o, dk_step **out);
} factories[] = {
    {"image_decode", s_image_decode},
    {"affine", s_affine},
    {"photometric", s_photometric},
    {"normalize", s_normalize},
    {"pad", s_pad},
    {"layout", s_layout},
    {"global_transform_3d", s_global},
    {"points_in_range", s_points_in_range},
    {"boxes_in_range", s_boxes_in_range},
    {"class_filter", s_class_filter},
    {"min_points_filter", s_min_points},
    {"visible_boxes", s_visible},
    {"pad_to_uniform", s_pad_uniform},
    {"heatmap", s_heatmap},
    {"remove_fields", s_remove},
    {"remove_masked", s_remove_masked},
};

static int step_from(const dk_json_cur *o, dk_step **out)
{
    const char *name;
    int st = dk_json_get_string(o, "step", &name);
    if (st) return st;
    for (size_t i = 0; i < sizeof factories / sizeof factories[0]; i++)
        if (!strcmp(factories[i].name, name)) {
            st = factories[i].make(o, out);
            if (st) return st;
            const char *elem = NULL, *at = NULL;
            st = get_str(o, "per_element", &elem);
            if (!st) st = get_str(o, "at", &at);
            if (st) {
                dk_step_destroy(*out);
                *out = NULL;
                return st;
            }
            /* The wrappers take the step, also on error. */
            if (elem) st = dk_step_per_element(*out, elem, out);
            if (!st && at) st = dk_step_at_path(*out, at, out);
            return st;
        }
    dk_json_cur f;
    dk_json_field(o, "step", &f);
    return dk__error(DK_EINVALIDDATA, "dk_pipeline_add_json", "%s: unknown step '%s'", f.path,
                     name);
}

int dk_pipeline_add_json(dk_pipeline *p, const char *json, size_t len)
{
    if (!p || !json) return dk__error(DK_EINVAL, __func__, "NULL argument");
    dk_json *doc;
    int st = dk_json_parse(json, len, "steps", &doc);
    if (st) return st;
    dk_json_cur root = dk_json_root(doc);
    if (dk_json_type_of(&root) != DK_JSON_ARRAY) {
        dk_json_free(doc);
        return dk__error(DK_EINVALIDDATA, __func__, "steps: expected an array of step objects");
    }
    for (size_t i = 0; i < dk_json_size(&root) && !st; i++) {
        dk_json_cur o;
        dk_step *s = NULL;
        st = dk_json_item(&root, i, &o);
        if (!st && dk_json_type_of(&o) != DK_JSON_OBJECT)
            st = dk__error(DK_EINVALIDDATA, __func__, "steps[%zu]: expected an object", i);
        if (!st) st = step_from(&o, &s);
        if (!st) st = dk_pipeline_add(p, s);
        if (st) {
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", dk_errmsg());
            st = dk__error(st, __func__, "steps[%zu]: %s", i, msg);
        }
    }
    dk_json_free(doc);
    return st;
}

/* -- presets ------------------------------------------------------------------ */

/* Adds the step a constructor just made (st: the constructor's status). */
static int add(dk_pipeline *p, int st, dk_step **s)
{
    if (st) return st;
    st = dk_pipeline_add(p, *s);
    *s = NULL;
    return st;
}

int dk_pipeline_add_preset(dk_pipeline *p, const char *name, const char *source)
{
    if (!p || !name) return dk__error(DK_EINVAL, __func__, "NULL argument");
    dk_image_decode_config dc;
    dk_image_decode_config_init(&dc);
    if (!source || !strcmp(source, "jpeg"))
        dc.source = DK_IMAGE_SOURCE_FILE;
    else if (!strcmp(source, "video"))
        dc.source = DK_IMAGE_SOURCE_VIDEO;
    else
        return dk__error(DK_EINVAL, __func__, "source '%s': 'jpeg' or 'video'", source);
    dk_step *s = NULL;
    int st;
    if (!strcmp(name, "decode")) {
        st = dk_step_image_decode(&dc, &s);
        return add(p, st, &s);
    }
    int eval = !strcmp(name, "streampetr_test");
    if (strcmp(name, "streampetr") && !eval)
        return dk__error(DK_EINVAL, __func__,
                         "unknown preset '%s' (streampetr, streampetr_test, decode)", name);
    /* ObjectRangeFilter + ObjectNameFilter. */
    dk_boxes_in_range_config br;
    dk_boxes_in_range_config_init(&br);
    st = add(p, dk_step_boxes_in_range(&br, &s), &s);
    dk_class_filter_config cf;
    dk_class_filter_config_init(&cf);
    int32_t classes[DK_NUSC_NUM_CLASSES];
    for (int k = 0; k < DK_NUSC_NUM_CLASSES; k++) classes[k] = k;
    cf.classes = classes;
    cf.n_classes = DK_NUSC_NUM_CLASSES;
    if (!st) st = add(p, dk_step_class_filter(&cf, &s), &s);
    /* Images: decode, ResizeCropFlipRotImage per camera, normalise, pad, CHW. */
    if (!st) st = add(p, dk_step_image_decode(&dc, &s), &s);
    /* ResizeCropFlipRotImage: one draw shared by the six cameras, as
       StreamPETR samples its augmentation once per sample. */
    dk_affine_config ac;
    if (eval)
        dk_affine_config_streampetr_eval(&ac);
    else
        dk_affine_config_streampetr(&ac);
    if (!st) st = add(p, dk_step_affine(&ac, &s), &s);
    static const float mean[3] = {103.530f, 116.280f, 123.675f}, sd[3] = {57.375f, 57.120f, 58.395f};
    if (!st) st = add(p, dk_step_normalize(mean, sd, 1, &s), &s);
    if (!st) st = add(p, dk_step_pad(32, 0, 0, 0.0f, &s), &s);
    if (!st) st = add(p, dk_step_layout(1, DK_F32, &s), &s);
    /* GlobalRotScaleTransImage (after the image steps, so that they fuse into
       one pass; the 2-D and 3-D matrix updates commute): rotation and scale,
       no flip, no translation. */
    dk_global_transform_3d_config gc;
    dk_global_transform_3d_config_init(&gc);
    gc.flip_h_prob = 0;
    gc.flip_v_prob = 0;
    if (!st && !eval) {
        if (dk_group_find(dk_pipeline_format(p), DK_GROUP_ROOT, "points") < 0) gc.points = NULL;
        dk_errmsg_clear();
        st = add(p, dk_step_global_transform_3d(&gc, &s), &s);
    }
    return st;
}
