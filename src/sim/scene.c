/* Gaussian scene storage: allocation and validation. */
#include <math.h>
#include <string.h>

#include "drivekit/sim.h"
#include "internal.h"
#include "sim_impl.h"

/* Zero-size arrays still get a distinct allocation so that "NULL" always means
 * "field absent". */
static void *alloc_zero(size_t n, size_t elem)
{
    return dk_calloc(n ? n : 1, elem);
}

int dk_scene_create(int64_t n, int sh_degree, unsigned fields, dk_scene **out)
{
    if (!out) return dk__error(DK_EINVAL, __func__, "out is NULL");
    *out = NULL;
    if (n < 0 || n > DK_SCENE_MAX_GAUSSIANS)
        return dk__error(DK_EINVAL, __func__, "n = %lld outside [0, %lld]", (long long)n,
                         (long long)DK_SCENE_MAX_GAUSSIANS);
    if (sh_degree < 0 || sh_degree > DK_SCENE_MAX_SH_DEGREE)
        return dk__error(DK_EINVAL, __func__, "sh_degree = %d outside [0, 3]", sh_degree);
    if (fields & ~(DK_SCENE_NORMALS | DK_SCENE_LIDAR | DK_SCENE_ACTOR_ID))
        return dk__error(DK_EINVAL, __func__, "unknown field bits 0x%x", fields);
    dk_scene *s = dk_calloc(1, sizeof *s);
    if (!s) return dk__error(DK_ENOMEM, __func__, "out of memory");
    size_t un = (size_t)n;
    int k = (sh_degree + 1) * (sh_degree + 1);
    s->n = n;
    s->sh_degree = sh_degree;
    s->sh_coeffs = k;
    s->means = alloc_zero(un * 3, sizeof(float));
    s->scales = alloc_zero(un * 3, sizeof(float));
    s->rotations = alloc_zero(un * 4, sizeof(float));
    s->opacities = alloc_zero(un, sizeof(float));
    s->sh = alloc_zero(un * 3 * (size_t)k, sizeof(float));
    int fail = !s->means || !s->scales || !s->rotations || !s->opacities || !s->sh;
    if (fields & DK_SCENE_NORMALS) fail |= !(s->normals = alloc_zero(un * 3, sizeof(float)));
    if (fields & DK_SCENE_LIDAR) {
        fail |= !(s->lidar_intensity = alloc_zero(un, sizeof(float)));
        fail |= !(s->lidar_raydrop = alloc_zero(un, sizeof(float)));
    }
    if (fields & DK_SCENE_ACTOR_ID) {
        fail |= !(s->actor_id = alloc_zero(un, sizeof(int32_t)));
        if (s->actor_id)
            for (size_t i = 0; i < un; i++) s->actor_id[i] = -1;
    }
    if (fail) {
        dk_scene_destroy(s);
        return dk__error(DK_ENOMEM, __func__, "out of memory for %lld Gaussians", (long long)n);
    }
    *out = s;
    return DK_OK;
}

void dk_scene_destroy(dk_scene *s)
{
    if (!s) return;
    dk_free(s->means);
    dk_free(s->scales);
    dk_free(s->rotations);
    dk_free(s->opacities);
    dk_free(s->sh);
    dk_free(s->normals);
    dk_free(s->lidar_intensity);
    dk_free(s->lidar_raydrop);
    dk_free(s->actor_id);
    dk__scene_actors_free(s->actors);
    dk_free(s);
}

static int check_finite(const float *v, int64_t n, int dim, const char *name, int64_t *bad_i,
                        int *bad_j)
{
    for (int64_t i = 0; i < n; i++)
        for (int j = 0; j < dim; j++)
            if (!isfinite(v[i * dim + j])) {
                *bad_i = i;
                *bad_j = j;
                (void)name;
                return 1;
            }
    return 0;
}

int dk_scene_validate(const dk_scene *s)
{
    if (!s || s->n < 0 || s->sh_degree < 0 || s->sh_degree > DK_SCENE_MAX_SH_DEGREE ||
        s->sh_coeffs != (s->sh_degree + 1) * (s->sh_degree + 1) || !s->means || !s->scales ||
        !s->rotations || !s->opacities || !s->sh)
        return dk__error(DK_EINVAL, __func__, "NULL or inconsistent scene");
    static const char *const xyz[] = { "x", "y", "z" };
    static const char *const sc[] = { "scale_0", "scale_1", "scale_2" };
    static const char *const rot[] = { "rot_0", "rot_1", "rot_2", "rot_3" };
    int64_t bi;
    int bj;
    const float *bad = NULL;
    const char *field = NULL;
    char shname[32];
    if (check_finite(s->means, s->n, 3, "means", &bi, &bj)) {
        bad = s->means + bi * 3 + bj;
        field = xyz[bj];
    } else if (check_finite(s->scales, s->n, 3, "scales", &bi, &bj)) {
        bad = s->scales + bi * 3 + bj;
        field = sc[bj];
    } else if (check_finite(s->rotations, s->n, 4, "rotations", &bi, &bj)) {
        bad = s->rotations + bi * 4 + bj;
        field = rot[bj];
    } else if (check_finite(s->opacities, s->n, 1, "opacities", &bi, &bj)) {
        bad = s->opacities + bi;
        field = "opacity";
    } else if (check_finite(s->sh, s->n, 3 * s->sh_coeffs, "sh", &bi, &bj)) {
        bad = s->sh + bi * 3 * s->sh_coeffs + bj;
        int c = bj / s->sh_coeffs, k = bj % s->sh_coeffs;
        if (k == 0)
            snprintf(shname, sizeof shname, "f_dc_%d", c);
        else
            snprintf(shname, sizeof shname, "f_rest_%d", c * (s->sh_coeffs - 1) + k - 1);
        field = shname;
    } else if (s->lidar_intensity &&
               check_finite(s->lidar_intensity, s->n, 1, "lidar", &bi, &bj)) {
        bad = s->lidar_intensity + bi;
        field = "lidar_intensity";
    } else if (s->lidar_raydrop && check_finite(s->lidar_raydrop, s->n, 1, "lidar", &bi, &bj)) {
        bad = s->lidar_raydrop + bi;
        field = "lidar_raydrop";
    }
    if (bad)
        return dk__error(DK_EINVALIDDATA, __func__, "gaussian %lld: %s is %s", (long long)bi,
                         field, isnan(*bad) ? "nan" : "inf");
    for (int64_t i = 0; i < s->n; i++) {
        const float *q = s->rotations + i * 4;
        double nn = (double)q[0] * q[0] + (double)q[1] * q[1] + (double)q[2] * q[2] +
                    (double)q[3] * q[3];
        if (!(nn >= 1e-24))
            return dk__error(DK_EINVALIDDATA, __func__,
                             "gaussian %lld: rotation quaternion has zero norm", (long long)i);
    }
    return DK_OK;
}
