/*
 * Rigid poses: unit quaternion (w, x, y, z) + translation, p_b = R p_a + t.
 *
 * Quaternions are renormalised after every product so that long chains of
 * compositions do not drift off the unit sphere. Matrices coming from outside
 * (dk_pose_from_matrix) are checked, then projected onto the nearest rotation
 * (polar decomposition) before the quaternion is extracted, so a slightly
 * noisy calibration matrix yields the closest rigid transform rather than one
 * biased towards whichever entries the extraction happens to read.
 */
#include <math.h>
#include <string.h>

#include "drivekit/camera.h"
#include "internal.h"

static void quat_normalize(double q[4])
{
    double n = sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]);
    if (!(n > 0) || !isfinite(n)) {
        q[0] = 1;
        q[1] = q[2] = q[3] = 0;
        return;
    }
    for (int i = 0; i < 4; i++) q[i] /= n;
}

static void quat_mul(const double a[4], const double b[4], double out[4])
{
    double w = a[0] * b[0] - a[1] * b[1] - a[2] * b[2] - a[3] * b[3];
    double x = a[0] * b[1] + a[1] * b[0] + a[2] * b[3] - a[3] * b[2];
    double y = a[0] * b[2] - a[1] * b[3] + a[2] * b[0] + a[3] * b[1];
    double z = a[0] * b[3] + a[1] * b[2] - a[2] * b[1] + a[3] * b[0];
    out[0] = w;
    out[1] = x;
    out[2] = y;
    out[3] = z;
}

void dk_quat_to_rotation(const double q[4], double r[9])
{
    /* s = 2/|q|² keeps the matrix a rotation even for a slightly non-unit q. */
    double n2 = q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3];
    double s = n2 > 0 ? 2.0 / n2 : 0.0;
    double w = q[0], x = q[1], y = q[2], z = q[3];
    double xx = s * x * x, yy = s * y * y, zz = s * z * z;
    double xy = s * x * y, xz = s * x * z, yz = s * y * z;
    double wx = s * w * x, wy = s * w * y, wz = s * w * z;
    r[0] = 1 - yy - zz;
    r[1] = xy - wz;
    r[2] = xz + wy;
    r[3] = xy + wz;
    r[4] = 1 - xx - zz;
    r[5] = yz - wx;
    r[6] = xz - wy;
    r[7] = yz + wx;
    r[8] = 1 - xx - yy;
}

void dk_rotation_to_quat(const double r[9], double q[4])
{
    /* Shepperd's method: divide by the largest of the four candidate
     * diagonals, so no branch loses precision near 180-degree rotations. */
    double tr = r[0] + r[4] + r[8];
    if (tr > 0) {
        double s = sqrt(tr + 1.0) * 2;
        q[0] = 0.25 * s;
        q[1] = (r[7] - r[5]) / s;
        q[2] = (r[2] - r[6]) / s;
        q[3] = (r[3] - r[1]) / s;
    } else if (r[0] > r[4] && r[0] > r[8]) {
        double s = sqrt(1.0 + r[0] - r[4] - r[8]) * 2;
        q[0] = (r[7] - r[5]) / s;
        q[1] = 0.25 * s;
        q[2] = (r[1] + r[3]) / s;
        q[3] = (r[2] + r[6]) / s;
    } else if (r[4] > r[8]) {
        double s = sqrt(1.0 + r[4] - r[0] - r[8]) * 2;
        q[0] = (r[2] - r[6]) / s;
        q[1] = (r[1] + r[3]) / s;
        q[2] = 0.25 * s;
        q[3] = (r[5] + r[7]) / s;
    } else {
        double s = sqrt(1.0 + r[8] - r[0] - r[4]) * 2;
        q[0] = (r[3] - r[1]) / s;
        q[1] = (r[2] + r[6]) / s;
        q[2] = (r[5] + r[7]) / s;
        q[3] = 0.25 * s;
    }
    quat_normalize(q);
    if (q[0] < 0)
        for (int i = 0; i < 4; i++) q[i] = -q[i];
}

dk_pose dk_pose_identity(void)
{
    dk_pose p = {{1, 0, 0, 0}, {0, 0, 0}};
    return p;
}

dk_pose dk_pose_from_yaw(double x, double y, double z, double yaw)
{
    dk_pose p = {{cos(0.5 * yaw), 0, 0, sin(0.5 * yaw)}, {x, y, z}};
    return p;
}

dk_pose dk_pose_from_euler(const double t[3], double yaw, double pitch, double roll)
{
    /* Intrinsic Z-Y-X: R = Rz(yaw) Ry(pitch) Rx(roll). */
    double qz[4] = {cos(0.5 * yaw), 0, 0, sin(0.5 * yaw)};
    double qy[4] = {cos(0.5 * pitch), 0, sin(0.5 * pitch), 0};
    double qx[4] = {cos(0.5 * roll), sin(0.5 * roll), 0, 0};
    double tmp[4];
    dk_pose p;
    quat_mul(qz, qy, tmp);
    quat_mul(tmp, qx, p.q);
    quat_normalize(p.q);
    for (int i = 0; i < 3; i++) p.t[i] = t ? t[i] : 0.0;
    return p;
}

double dk_pose_yaw(const dk_pose *p)
{
    const double *q = p->q;
    double r10 = 2 * (q[1] * q[2] + q[0] * q[3]);
    double r00 = q[0] * q[0] + q[1] * q[1] - q[2] * q[2] - q[3] * q[3];
    return atan2(r10, r00);
}

void dk_pose_rotate(const dk_pose *p, const double in[3], double out[3])
{
    double r[9];
    dk_quat_to_rotation(p->q, r);
    double x = in[0], y = in[1], z = in[2];
    out[0] = r[0] * x + r[1] * y + r[2] * z;
    out[1] = r[3] * x + r[4] * y + r[5] * z;
    out[2] = r[6] * x + r[7] * y + r[8] * z;
}

void dk_pose_apply(const dk_pose *p, const double in[3], double out[3])
{
    double o[3];
    dk_pose_rotate(p, in, o);
    out[0] = o[0] + p->t[0];
    out[1] = o[1] + p->t[1];
    out[2] = o[2] + p->t[2];
}

dk_pose dk_pose_compose(const dk_pose *b_to_c, const dk_pose *a_to_b)
{
    /* p_c = R_bc (R_ab p_a + t_ab) + t_bc */
    dk_pose out;
    quat_mul(b_to_c->q, a_to_b->q, out.q);
    quat_normalize(out.q);
    dk_pose_apply(b_to_c, a_to_b->t, out.t);
    return out;
}

dk_pose dk_pose_inverse(const dk_pose *p)
{
    /* p_a = Rᵀ (p_b - t) */
    dk_pose inv;
    inv.q[0] = p->q[0];
    inv.q[1] = -p->q[1];
    inv.q[2] = -p->q[2];
    inv.q[3] = -p->q[3];
    quat_normalize(inv.q);
    double t[3];
    dk_pose_rotate(&inv, p->t, t);
    inv.t[0] = -t[0];
    inv.t[1] = -t[1];
    inv.t[2] = -t[2];
    return inv;
}

void dk_pose_to_matrix(const dk_pose *p, double m[16])
{
    double r[9];
    dk_quat_to_rotation(p->q, r);
    for (int i = 0; i < 3; i++) {
        m[4 * i + 0] = r[3 * i + 0];
        m[4 * i + 1] = r[3 * i + 1];
        m[4 * i + 2] = r[3 * i + 2];
        m[4 * i + 3] = p->t[i];
    }
    m[12] = m[13] = m[14] = 0;
    m[15] = 1;
}

static double det3(const double a[9])
{
    return a[0] * (a[4] * a[8] - a[5] * a[7]) - a[1] * (a[3] * a[8] - a[5] * a[6]) +
           a[2] * (a[3] * a[7] - a[4] * a[6]);
}

/* Nearest rotation (orthogonal polar factor) of a matrix already known to be
 * close to one: Newton's iteration R <- (R + R^-T) / 2 converges
 * quadratically. */
static void nearest_rotation(double r[9])
{
    for (int it = 0; it < 30; it++) {
        double d = det3(r);
        if (!(fabs(d) > 1e-300)) return;
        /* R^-T = cofactor(R) / det */
        double cof[9] = {
            r[4] * r[8] - r[5] * r[7], r[5] * r[6] - r[3] * r[8], r[3] * r[7] - r[4] * r[6],
            r[2] * r[7] - r[1] * r[8], r[0] * r[8] - r[2] * r[6], r[1] * r[6] - r[0] * r[7],
            r[1] * r[5] - r[2] * r[4], r[2] * r[3] - r[0] * r[5], r[0] * r[4] - r[1] * r[3],
        };
        double change = 0;
        for (int i = 0; i < 9; i++) {
            double nv = 0.5 * (r[i] + cof[i] / d);
            change = fmax(change, fabs(nv - r[i]));
            r[i] = nv;
        }
        if (change < 1e-15) return;
    }
}

int dk_pose_from_matrix(const double m[16], dk_pose *out)
{
    if (!m || !out) return dk__error(DK_EINVAL, __func__, "NULL argument");
    for (int i = 0; i < 16; i++)
        if (!isfinite(m[i]))
            return dk__error(DK_EINVAL, __func__, "m[%d] (row %d, column %d) is not finite", i,
                             i / 4, i % 4);
    /* Exact in files; a tolerance for matrices that went through arithmetic. */
    if (fabs(m[12]) > 1e-9 || fabs(m[13]) > 1e-9 || fabs(m[14]) > 1e-9 || fabs(m[15] - 1) > 1e-9)
        return dk__error(DK_EINVALIDDATA, __func__, "last row is (%g, %g, %g, %g), not (0, 0, 0, 1)",
                         m[12], m[13], m[14], m[15]);
    double r[9];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) r[3 * i + j] = m[4 * i + j];
    double worst = 0;
    int wi = 0, wj = 0;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            double dot = r[i] * r[j] + r[3 + i] * r[3 + j] + r[6 + i] * r[6 + j];
            double e = fabs(dot - (i == j ? 1.0 : 0.0));
            if (e > worst) {
                worst = e;
                wi = i;
                wj = j;
            }
        }
    if (worst > 1e-4)
        return dk__error(DK_EINVALIDDATA, __func__,
                         "rotation block is not orthonormal: |(R^T R - I)[%d][%d]| = %g > 1e-4",
                         wi, wj, worst);
    double d = det3(r);
    if (!(d > 0))
        return dk__error(DK_EINVALIDDATA, __func__,
                         "rotation block has determinant %g (a reflection, not a rotation)", d);
    nearest_rotation(r);
    dk_rotation_to_quat(r, out->q);
    out->t[0] = m[3];
    out->t[1] = m[7];
    out->t[2] = m[11];
    return DK_OK;
}

dk_pose dk_pose_interpolate(const dk_pose *a, const dk_pose *b, double s)
{
    dk_pose out;
    for (int i = 0; i < 3; i++) out.t[i] = (1.0 - s) * a->t[i] + s * b->t[i];

    double q0[4], q1[4];
    memcpy(q0, a->q, sizeof q0);
    memcpy(q1, b->q, sizeof q1);
    quat_normalize(q0);
    quat_normalize(q1);
    double dot = q0[0] * q1[0] + q0[1] * q1[1] + q0[2] * q1[2] + q0[3] * q1[3];
    if (dot < 0) {  /* q and -q are the same rotation: take the shorter arc */
        for (int i = 0; i < 4; i++) q1[i] = -q1[i];
    }
    /* Angle between the two unit quaternions from the chord lengths: accurate
     * for tiny angles, where acos(dot) is not. */
    double dm = 0, dp = 0;
    for (int i = 0; i < 4; i++) {
        dm += (q1[i] - q0[i]) * (q1[i] - q0[i]);
        dp += (q1[i] + q0[i]) * (q1[i] + q0[i]);
    }
    double omega = 2.0 * atan2(sqrt(dm), sqrt(dp));
    double w0, w1;
    if (omega < 1e-8) {
        /* Nearly identical: normalised lerp, whose error is O(omega³). */
        w0 = 1.0 - s;
        w1 = s;
    } else {
        double so = sin(omega);
        w0 = sin((1.0 - s) * omega) / so;
        w1 = sin(s * omega) / so;
    }
    for (int i = 0; i < 4; i++) out.q[i] = w0 * q0[i] + w1 * q1[i];
    quat_normalize(out.q);
    return out;
}
