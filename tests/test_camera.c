/* Tests for src/camera: poses, the four camera models, rolling-shutter time,
 * batch projection, lidar presets and the nuScenes rig. */
#include "dk_test.h"

#define PI 3.14159265358979323846
#define DEG (PI / 180.0)

static int64_t g_live_at_start;

/* ------------------------------------------------------------------------ */
/* Reference cameras                                                         */

static void cam_pinhole(dk_camera *c)
{
    dk_camera_init_pinhole(c, 1600, 900, 1266.4, 1266.4, 816.3, 491.5);
}

static const double OCV_K[6] = {-0.12, 0.03, -0.002, 0.02, 0.004, 0.0005};
static const double OCV_P[2] = {0.0011, -0.0007};
static const double OCV_S[4] = {0.0008, -0.0002, 0.0006, -0.0001};

static void cam_opencv(dk_camera *c)
{
    dk_camera_init_opencv(c, 1920, 1080, 1400.0, 1395.0, 965.2, 538.7, OCV_K, OCV_P, OCV_S);
}

/* gsplat's camera_front_fisheye_140fov (nre.md 1.3), principal point moved
 * by +0.5 into drivekit's continuous coordinates. */
static const double FE_K[4] = {-0.030093, -0.005104, -0.000850, 0.001080};
static void cam_fisheye(dk_camera *c)
{
    dk_camera_init_fisheye(c, 3840, 2160, 1913.76, 1914.00, 1928.68, 1084.36, FE_K, 1.2217);
}

/* gsplat's camera_cross_left_120fov f-theta calibration (nre.md 1.4). */
static const double FT_FW[6] = {0, 1888.838, -41.7718, 111.5047, -180.2714, 64.0710};
static const double FT_BW[6] = {0, 5.2871e-4, 9.6068e-9, -1.3836e-11, 1.0398e-14, -1.8811e-18};
static const double FT_CDE[3] = {0.99967, 3.40e-6, 3.74e-5};
static void cam_ftheta_fw(dk_camera *c)
{
    dk_camera_init_ftheta(c, 3840, 2160, 1920.20, 1487.01, DK_FTHETA_ANGLE_TO_PIXELDIST, FT_FW,
                          FT_CDE, 1.34617);
}
static void cam_ftheta_bw(dk_camera *c)
{
    /* Derived max_angle: the bw poly is calibrated for the image. */
    dk_camera_init_ftheta(c, 3840, 2160, 1920.20, 1487.01, DK_FTHETA_PIXELDIST_TO_ANGLE, FT_BW,
                          FT_CDE, 0);
}

typedef void (*cam_maker)(dk_camera *);
static const struct {
    const char *name;
    cam_maker make;
} g_cams[] = {
    {"pinhole", cam_pinhole}, {"opencv", cam_opencv},       {"fisheye", cam_fisheye},
    {"ftheta-fw", cam_ftheta_fw}, {"ftheta-bw", cam_ftheta_bw},
};
#define N_CAMS ((int)(sizeof g_cams / sizeof g_cams[0]))

static double urand(dk_rng *r, double lo, double hi)
{
    return lo + (hi - lo) * dk_rng_uniform_f64(r);
}

/* ------------------------------------------------------------------------ */
/* Poses                                                                     */

static void rot_of(const dk_pose *p, double r[9])
{
    dk_quat_to_rotation(p->q, r);
}

static double orthonormality_error(const double r[9])
{
    double worst = 0;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            double d = r[i] * r[j] + r[3 + i] * r[3 + j] + r[6 + i] * r[6 + j];
            worst = fmax(worst, fabs(d - (i == j)));
        }
    return worst;
}

static dk_pose random_pose(dk_rng *r)
{
    double t[3] = {urand(r, -50, 50), urand(r, -50, 50), urand(r, -5, 5)};
    return dk_pose_from_euler(t, urand(r, -PI, PI), urand(r, -1.4, 1.4), urand(r, -PI, PI));
}

static void test_pose_compose_inverse(void)
{
    dk_rng r;
    dk_rng_init(&r, 1, 0);
    for (int it = 0; it < 200; it++) {
        dk_pose a = random_pose(&r), b = random_pose(&r);
        dk_pose ai = dk_pose_inverse(&a);
        dk_pose id = dk_pose_compose(&a, &ai);
        double m[16];
        dk_pose_to_matrix(&id, m);
        for (int i = 0; i < 16; i++) DK_CHECK_NEAR(m[i], (i % 5 == 0) ? 1.0 : 0.0, 1e-12);
        double p[3] = {urand(&r, -10, 10), urand(&r, -10, 10), urand(&r, -10, 10)};
        double q1[3], q2[3], tmp[3], back[3];
        dk_pose ba = dk_pose_compose(&b, &a);
        dk_pose_apply(&ba, p, q1);
        dk_pose_apply(&a, p, tmp);
        dk_pose_apply(&b, tmp, q2);
        for (int i = 0; i < 3; i++) DK_CHECK_NEAR(q1[i], q2[i], 1e-11);
        dk_pose_apply(&ai, tmp, back);
        for (int i = 0; i < 3; i++) DK_CHECK_NEAR(back[i], p[i], 1e-11);
        /* rotate = apply without translation; the matrix agrees */
        double d[3], dm[3];
        dk_pose_rotate(&a, p, d);
        dk_pose_to_matrix(&a, m);
        for (int i = 0; i < 3; i++) {
            dm[i] = m[4 * i] * p[0] + m[4 * i + 1] * p[1] + m[4 * i + 2] * p[2];
            DK_CHECK_NEAR(d[i], dm[i], 1e-11);
            DK_CHECK_NEAR(tmp[i], dm[i] + m[4 * i + 3], 1e-11);
        }
        DK_CHECK(m[12] == 0 && m[13] == 0 && m[14] == 0 && m[15] == 1);
        double qn = a.q[0] * a.q[0] + a.q[1] * a.q[1] + a.q[2] * a.q[2] + a.q[3] * a.q[3];
        DK_CHECK_NEAR(qn, 1.0, 1e-14);
    }
    dk_pose id = dk_pose_identity();
    DK_CHECK(id.q[0] == 1 && id.q[1] == 0 && id.t[2] == 0);
}

static void test_pose_euler_yaw(void)
{
    dk_rng r;
    dk_rng_init(&r, 2, 0);
    for (int it = 0; it < 300; it++) {
        double yaw = urand(&r, -PI + 1e-6, PI - 1e-6);
        double pitch = urand(&r, -1.5, 1.5), roll = urand(&r, -PI + 1e-6, PI - 1e-6);
        double t[3] = {1, 2, 3};
        dk_pose p = dk_pose_from_euler(t, yaw, pitch, roll);
        double R[9];
        rot_of(&p, R);
        DK_CHECK(orthonormality_error(R) < 1e-14);
        /* R = Rz(yaw) Ry(pitch) Rx(roll): recover the angles */
        DK_CHECK_NEAR(asin(-R[6]), pitch, 1e-9);
        DK_CHECK_NEAR(atan2(R[3], R[0]), yaw, 1e-9);
        DK_CHECK_NEAR(atan2(R[7], R[8]), roll, 1e-9);
        DK_CHECK_NEAR(dk_pose_yaw(&p), yaw, 1e-9);
        dk_pose py = dk_pose_from_yaw(1, 2, 3, yaw);
        DK_CHECK_NEAR(dk_pose_yaw(&py), yaw, 1e-12);
        dk_pose pe = dk_pose_from_euler(t, yaw, 0, 0);
        for (int i = 0; i < 4; i++) DK_CHECK_NEAR(pe.q[i], py.q[i], 1e-15);
        for (int i = 0; i < 3; i++) DK_CHECK(py.t[i] == t[i]);
        /* rotation <-> quaternion round trip, w >= 0 */
        double q[4];
        dk_rotation_to_quat(R, q);
        DK_CHECK(q[0] >= 0);
        double s = p.q[0] < 0 ? -1 : 1;
        for (int i = 0; i < 4; i++) DK_CHECK_NEAR(q[i], s * p.q[i], 1e-12);
    }
    /* Yaw of a planar pose: x axis at 90 degrees points along +y. */
    dk_pose p90 = dk_pose_from_yaw(0, 0, 0, PI / 2);
    double ex[3] = {1, 0, 0}, o[3];
    dk_pose_rotate(&p90, ex, o);
    DK_CHECK_NEAR(o[0], 0, 1e-15);
    DK_CHECK_NEAR(o[1], 1, 1e-15);
    /* 180-degree rotations exercise every branch of the quaternion extraction. */
    const double flips[3][9] = {{1, 0, 0, 0, -1, 0, 0, 0, -1},
                                {-1, 0, 0, 0, 1, 0, 0, 0, -1},
                                {-1, 0, 0, 0, -1, 0, 0, 0, 1}};
    for (int f = 0; f < 3; f++) {
        double q[4], R[9];
        dk_rotation_to_quat(flips[f], q);
        dk_quat_to_rotation(q, R);
        for (int i = 0; i < 9; i++) DK_CHECK_NEAR(R[i], flips[f][i], 1e-15);
    }
}

static void test_pose_interpolate(void)
{
    dk_rng r;
    dk_rng_init(&r, 3, 0);
    for (int it = 0; it < 200; it++) {
        dk_pose a = random_pose(&r), b = random_pose(&r);
        if (it % 2) {  /* the same rotation written as -q must not change the result */
            for (int i = 0; i < 4; i++) b.q[i] = -b.q[i];
        }
        double Ra[9], Rb[9], R0[9], R1[9];
        dk_pose p0 = dk_pose_interpolate(&a, &b, 0), p1 = dk_pose_interpolate(&a, &b, 1);
        rot_of(&a, Ra);
        rot_of(&b, Rb);
        rot_of(&p0, R0);
        rot_of(&p1, R1);
        for (int i = 0; i < 9; i++) {
            DK_CHECK_NEAR(R0[i], Ra[i], 1e-12);
            DK_CHECK_NEAR(R1[i], Rb[i], 1e-12);
        }
        for (int i = 0; i < 3; i++) {
            DK_CHECK_NEAR(p0.t[i], a.t[i], 1e-12);
            DK_CHECK_NEAR(p1.t[i], b.t[i], 1e-12);
        }
        /* Constant angular speed along the shortest arc: the angle from a
         * grows linearly with s and never exceeds pi. */
        dk_pose ai = dk_pose_inverse(&a);
        dk_pose rel = dk_pose_compose(&ai, &b);
        double total = 2 * acos(fmin(1.0, fabs(rel.q[0])));
        for (int k = 1; k < 8; k++) {
            double s = k / 8.0;
            dk_pose ps = dk_pose_interpolate(&a, &b, s);
            double R[9];
            rot_of(&ps, R);
            DK_CHECK(orthonormality_error(R) < 1e-14);
            dk_pose rs = dk_pose_compose(&ai, &ps);
            double ang = 2 * acos(fmin(1.0, fabs(rs.q[0])));
            DK_CHECK_NEAR(ang, s * total, 1e-7);
            DK_CHECK_NEAR(ps.t[0], a.t[0] + s * (b.t[0] - a.t[0]), 1e-12);
        }
    }
    /* Nearly identical quaternions: no NaN, stays between them. */
    dk_pose a = dk_pose_from_yaw(0, 0, 0, 0.3), b = dk_pose_from_yaw(0, 0, 0, 0.3 + 1e-12);
    dk_pose m = dk_pose_interpolate(&a, &b, 0.5);
    DK_CHECK(isfinite(m.q[0]) && isfinite(m.q[3]));
    DK_CHECK_NEAR(dk_pose_yaw(&m), 0.3, 1e-11);
    dk_pose same = dk_pose_interpolate(&a, &a, 0.25);
    DK_CHECK_NEAR(dk_pose_yaw(&same), 0.3, 1e-15);
}

static void test_pose_from_matrix(void)
{
    dk_rng r;
    dk_rng_init(&r, 4, 0);
    dk_pose a = random_pose(&r), b;
    double m[16], m2[16];
    dk_pose_to_matrix(&a, m);
    DK_CHECK_OK(dk_pose_from_matrix(m, &b));
    dk_pose_to_matrix(&b, m2);
    for (int i = 0; i < 16; i++) DK_CHECK_NEAR(m2[i], m[i], 1e-14);

    /* Small noise (1e-6) is accepted and re-orthonormalised. */
    double noisy[16];
    memcpy(noisy, m, sizeof m);
    for (int i = 0; i < 12; i++)
        if (i % 4 != 3) noisy[i] += urand(&r, -1e-6, 1e-6);
    DK_CHECK_OK(dk_pose_from_matrix(noisy, &b));
    double R[9];
    rot_of(&b, R);
    DK_CHECK(orthonormality_error(R) < 1e-14);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) DK_CHECK_NEAR(R[3 * i + j], m[4 * i + j], 3e-6);

    double bad[16];
    memcpy(bad, m, sizeof m);  /* scaled */
    for (int i = 0; i < 12; i++)
        if (i % 4 != 3) bad[i] *= 1.01;
    DK_CHECK_STATUS(dk_pose_from_matrix(bad, &b), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "orthonormal");
    memcpy(bad, m, sizeof m);  /* sheared */
    bad[1] += 0.05;
    DK_CHECK_STATUS(dk_pose_from_matrix(bad, &b), DK_EINVALIDDATA);
    memcpy(bad, m, sizeof m);  /* reflected: one column negated */
    for (int i = 0; i < 3; i++) bad[4 * i] = -bad[4 * i];
    DK_CHECK_STATUS(dk_pose_from_matrix(bad, &b), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "determinant");
    memcpy(bad, m, sizeof m);
    bad[5] = NAN;
    DK_CHECK_STATUS(dk_pose_from_matrix(bad, &b), DK_EINVAL);
    memcpy(bad, m, sizeof m);
    bad[11] = INFINITY;
    DK_CHECK_STATUS(dk_pose_from_matrix(bad, &b), DK_EINVAL);
    memcpy(bad, m, sizeof m);  /* projective last row */
    bad[14] = 0.1;
    DK_CHECK_STATUS(dk_pose_from_matrix(bad, &b), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "last row");
    DK_CHECK_STATUS(dk_pose_from_matrix(NULL, &b), DK_EINVAL);
}

/* ------------------------------------------------------------------------ */
/* Camera models                                                             */

static void test_camera_names_and_init(void)
{
    for (int m = 0; m < 4; m++) {
        dk_camera_model out;
        DK_CHECK_OK(dk_camera_model_parse(dk_camera_model_name((dk_camera_model)m), &out));
        DK_CHECK_EQ_INT(out, m);
    }
    DK_CHECK_STR(dk_camera_model_name(DK_CAM_FTHETA), "ftheta");
    DK_CHECK_STR(dk_camera_model_name((dk_camera_model)9), "unknown");
    dk_camera_model out;
    DK_CHECK_STATUS(dk_camera_model_parse("kannala", &out), DK_EINVAL);
    DK_CHECK_STATUS(dk_camera_model_parse(NULL, &out), DK_EINVAL);
    for (int i = 0; i < N_CAMS; i++) {
        dk_camera c;
        g_cams[i].make(&c);
        DK_CHECK_OK(dk_camera_validate(&c));
        DK_CHECK(c.shutter == DK_SHUTTER_GLOBAL && c.margin == 0);
    }
    dk_camera c;
    cam_fisheye(&c);
    DK_CHECK(c.max_angle == 1.2217);
    cam_ftheta_bw(&c);
    DK_CHECK(c.max_angle > 1.0 && c.max_angle < 1.6);
    DK_CHECK(c.fw_poly[1] > 1800 && c.fw_poly[1] < 1990);  /* fitted inverse ~ 1/bw[1] */
    cam_ftheta_fw(&c);
    DK_CHECK(c.bw_poly[1] > 4.8e-4 && c.bw_poly[1] < 5.8e-4);
    DK_CHECK(c.linear_c == FT_CDE[0] && c.linear_d == FT_CDE[1] && c.linear_e == FT_CDE[2]);
    dk_camera_init_ftheta(&c, 100, 100, 50, 50, DK_FTHETA_ANGLE_TO_PIXELDIST, FT_FW, NULL, 0);
    DK_CHECK(c.linear_c == 1 && c.linear_d == 0 && c.linear_e == 0);
}

static void test_pinhole_known(void)
{
    dk_camera c;
    cam_pinhole(&c);
    double p[3] = {1, 0.5, 10}, uv[2], J[6];
    DK_CHECK(dk_camera_project(&c, p, uv, J));
    DK_CHECK_NEAR(uv[0], 1266.4 * 0.1 + 816.3, 1e-12);
    DK_CHECK_NEAR(uv[1], 1266.4 * 0.05 + 491.5, 1e-12);
    DK_CHECK_NEAR(J[0], 126.64, 1e-12);
    DK_CHECK_NEAR(J[1], 0, 0);
    DK_CHECK_NEAR(J[2], -12.664, 1e-12);
    DK_CHECK_NEAR(J[5], -6.332, 1e-12);
    double ray[3];
    double cuv[2] = {816.3, 491.5};
    DK_CHECK(dk_camera_unproject(&c, cuv, ray));
    DK_CHECK_NEAR(ray[0], 0, 1e-15);
    DK_CHECK_NEAR(ray[2], 1, 1e-15);
    /* behind the camera: uv written but not valid; on the z = 0 plane: undefined */
    double back[3] = {1, 0.5, -10};
    DK_CHECK(!dk_camera_project(&c, back, uv, NULL));
    double plane[3] = {1, 0, 0};
    uv[0] = uv[1] = -7;
    DK_CHECK(!dk_camera_project(&c, plane, uv, NULL));
    DK_CHECK(uv[0] == -7);
}

static void test_opencv_known(void)
{
    dk_camera c;
    cam_opencv(&c);
    /* Expected values: the formulas of nre.md 1.2 evaluated by hand in double;
     * cv2.projectPoints with the same K and (k1 k2 p1 p2 k3 k4 k5 k6 s1..s4)
     * gives the same numbers to the last digit. */
    double p[3] = {0.3, -0.2, 1.5}, uv[2];
    DK_CHECK(dk_camera_project(&c, p, uv, NULL));
    DK_CHECK_NEAR(uv[0], 1242.8085159093957, 1e-9);
    DK_CHECK_NEAR(uv[1], 354.42993544325594, 1e-9);
    /* and no distortion: identical to the pinhole */
    dk_camera o, ph;
    dk_camera_init_opencv(&o, 1600, 900, 1266.4, 1260.1, 816.3, 491.5, NULL, NULL, NULL);
    dk_camera_init_pinhole(&ph, 1600, 900, 1266.4, 1260.1, 816.3, 491.5);
    double q[3] = {-2, 1, 7}, a[2], b[2];
    DK_CHECK(dk_camera_project(&o, q, a, NULL) && dk_camera_project(&ph, q, b, NULL));
    DK_CHECK_NEAR(a[0], b[0], 1e-12);
    DK_CHECK_NEAR(a[1], b[1], 1e-12);
}

static void test_fisheye_known(void)
{
    dk_camera c;
    cam_fisheye(&c);
    /* cv2.fisheye.projectPoints with the same K and D */
    double p[3] = {0.8, -0.5, 1.0}, uv[2];
    DK_CHECK(dk_camera_project(&c, p, uv, NULL));
    DK_CHECK_NEAR(uv[0], 3132.7947184478116, 1e-9);
    DK_CHECK_NEAR(uv[1], 331.69392277861664, 1e-9);

    /* Equidistant (k = 0): pixel distance = f θ, also beyond 90 degrees. */
    dk_camera e;
    dk_camera_init_fisheye(&e, 2000, 2000, 500, 500, 1000, 1000, NULL, 100 * DEG);
    DK_CHECK_OK(dk_camera_validate(&e));
    DK_CHECK_NEAR(e.max_angle, 100 * DEG, 0);
    for (int i = 0; i <= 20; i++) {
        double th = i * 5 * DEG, phi = 0.7 * i;
        double q[3] = {sin(th) * cos(phi) * 3, sin(th) * sin(phi) * 3, cos(th) * 3};
        DK_CHECK(dk_camera_project(&e, q, uv, NULL));
        double r = hypot(uv[0] - 1000, uv[1] - 1000) / 500;
        DK_CHECK_NEAR(r, th, 1e-12);
        if (i > 0) DK_CHECK_NEAR(atan2(uv[1] - 1000, uv[0] - 1000), atan2(sin(phi), cos(phi)), 1e-9);
    }
    /* Exactly on the axis: the principal point, finite Jacobian = f/z. */
    double axis[3] = {0, 0, 2}, J[6];
    DK_CHECK(dk_camera_project(&e, axis, uv, J));
    DK_CHECK(uv[0] == 1000 && uv[1] == 1000);
    DK_CHECK_NEAR(J[0], 250, 1e-12);
    DK_CHECK_NEAR(J[4], 250, 1e-12);
    DK_CHECK_NEAR(J[1], 0, 1e-12);
    DK_CHECK_NEAR(J[2], 0, 1e-12);
    double ray[3], cuv[2] = {1000, 1000};
    DK_CHECK(dk_camera_unproject(&e, cuv, ray));
    DK_CHECK(ray[0] == 0 && ray[1] == 0 && ray[2] == 1);
    /* Straight behind the camera the model is undefined. */
    double behind[3] = {0, 0, -1};
    DK_CHECK(!dk_camera_project(&e, behind, uv, J));
}

/* Round trip pixel -> ray -> random depth -> pixel over a dense grid. */
static void test_roundtrip_grid(void)
{
    dk_rng r;
    dk_rng_init(&r, 5, 0);
    for (int ci = 0; ci < N_CAMS; ci++) {
        dk_camera c;
        g_cams[ci].make(&c);
        int n = 0, fails = 0, central_fails = 0;
        double worst = 0;
        int step = c.width / 97;
        for (int j = 0; j < c.height; j += step)
            for (int i = 0; i < c.width; i += step) {
                double uv[2] = {i + 0.5, j + 0.5}, ray[3], back[2];
                n++;
                if (!dk_camera_unproject(&c, uv, ray)) {
                    fails++;
                    /* inside the inscribed ellipse every pixel must succeed */
                    double du = (uv[0] - c.width / 2.0) / (c.width / 2.0);
                    double dv = (uv[1] - c.height / 2.0) / (c.height / 2.0);
                    if (du * du + dv * dv < 1.0) central_fails++;
                    continue;
                }
                DK_CHECK_NEAR(ray[0] * ray[0] + ray[1] * ray[1] + ray[2] * ray[2], 1.0, 1e-14);
                double depth = urand(&r, 0.3, 150);
                double p[3] = {ray[0] * depth, ray[1] * depth, ray[2] * depth};
                if (!dk_camera_project(&c, p, back, NULL))
                    DK_FAIL_("%s: pixel (%g, %g) -> ray does not project back valid", g_cams[ci].name,
                             uv[0], uv[1]);
                worst = fmax(worst, hypot(back[0] - uv[0], back[1] - uv[1]));
            }
        if (worst >= 1e-3 || central_fails || fails * 20 > n)
            DK_FAIL_("%s: worst round trip %g px, %d of %d pixels failed (%d central)",
                     g_cams[ci].name, worst, fails, n, central_fails);
        /* Perspective models have no angular limit: every pixel works. */
        if (c.model == DK_CAM_PINHOLE || c.model == DK_CAM_OPENCV) DK_CHECK_EQ_INT(fails, 0);
    }
}

/* Random visible points: project, unproject, compare directions. */
static void test_roundtrip_points(void)
{
    dk_rng r;
    dk_rng_init(&r, 6, 0);
    for (int ci = 0; ci < N_CAMS; ci++) {
        dk_camera c;
        g_cams[ci].make(&c);
        int tried = 0;
        for (int it = 0; it < 4000; it++) {
            double th = urand(&r, 0, c.model >= DK_CAM_FISHEYE ? c.max_angle : 0.6);
            double phi = urand(&r, -PI, PI), d = urand(&r, 0.5, 80);
            double p[3] = {d * sin(th) * cos(phi), d * sin(th) * sin(phi), d * cos(th)};
            double uv[2], ray[3];
            if (!dk_camera_project(&c, p, uv, NULL)) continue;
            tried++;
            DK_CHECK(dk_camera_unproject(&c, uv, ray));
            double cx = ray[1] * p[2] - ray[2] * p[1], cy = ray[2] * p[0] - ray[0] * p[2];
            double cz = ray[0] * p[1] - ray[1] * p[0];
            double cross = sqrt(cx * cx + cy * cy + cz * cz) / d;
            if (!(cross < 1e-9)) DK_FAIL_("%s: ray error %g rad", g_cams[ci].name, cross);
        }
        DK_CHECK(tried > 1000);
    }
}

static void fd_jacobian(const dk_camera *c, const double p[3], double Jfd[6])
{
    double scale = sqrt(p[0] * p[0] + p[1] * p[1] + p[2] * p[2]);
    double h = 1e-6 * scale;
    for (int k = 0; k < 3; k++) {
        double a[3] = {p[0], p[1], p[2]}, b[3] = {p[0], p[1], p[2]}, ua[2], ub[2];
        a[k] += h;
        b[k] -= h;
        dk_camera_project(c, a, ua, NULL);
        dk_camera_project(c, b, ub, NULL);
        Jfd[k] = (ua[0] - ub[0]) / (2 * h);
        Jfd[3 + k] = (ua[1] - ub[1]) / (2 * h);
    }
}

static int jac_close(const double J[6], const double Jfd[6], double rel)
{
    for (int row = 0; row < 2; row++) {
        double norm = fabs(J[3 * row]) + fabs(J[3 * row + 1]) + fabs(J[3 * row + 2]);
        for (int k = 0; k < 3; k++)
            if (!(fabs(J[3 * row + k] - Jfd[3 * row + k]) <= rel * norm)) return 0;
    }
    return 1;
}

static void test_jacobians(void)
{
    dk_rng r;
    dk_rng_init(&r, 7, 0);
    for (int ci = 0; ci < N_CAMS; ci++) {
        dk_camera c;
        g_cams[ci].make(&c);
        int checked = 0;
        for (int it = 0; it < 3000 && checked < 500; it++) {
            double uv[2] = {urand(&r, 0, c.width), urand(&r, 0, c.height)}, ray[3];
            if (!dk_camera_unproject(&c, uv, ray)) continue;
            double d = urand(&r, 0.5, 60);
            double p[3] = {ray[0] * d, ray[1] * d, ray[2] * d}, J[6], Jfd[6], uv2[2];
            if (!dk_camera_project(&c, p, uv2, J)) continue;
            fd_jacobian(&c, p, Jfd);
            if (!jac_close(J, Jfd, 1e-5))
                DK_FAIL_("%s: J (%g %g %g; %g %g %g) vs FD (%g %g %g; %g %g %g)", g_cams[ci].name,
                         J[0], J[1], J[2], J[3], J[4], J[5], Jfd[0], Jfd[1], Jfd[2], Jfd[3],
                         Jfd[4], Jfd[5]);
            checked++;
        }
        DK_CHECK(checked >= 400);
        /* Near and exactly on the optical axis (the r/rho limit). */
        const double axis_pts[3][3] = {{0, 0, 3}, {1e-9, -2e-9, 3}, {1e-5, 2e-5, 3}};
        for (int k = 0; k < 3; k++) {
            double J[6], Jfd[6], uv2[2];
            DK_CHECK(dk_camera_project(&c, axis_pts[k], uv2, J));
            for (int i = 0; i < 6; i++) DK_CHECK(isfinite(J[i]));
            fd_jacobian(&c, axis_pts[k], Jfd);
            if (!jac_close(J, Jfd, 1e-5))
                DK_FAIL_("%s axis %d: J (%g %g %g; %g %g %g) vs FD (%g %g %g; %g %g %g)",
                         g_cams[ci].name, k, J[0], J[1], J[2], J[3], J[4], J[5], Jfd[0], Jfd[1],
                         Jfd[2], Jfd[3], Jfd[4], Jfd[5]);
        }
    }
}

static void test_ftheta_references_agree(void)
{
    /* Exact inverse pair: fw(θ) = 900 θ, bw(δ) = δ / 900, with a non-trivial
     * linear term. Both references give the same pixels. */
    const double fw[6] = {0, 900, 0, 0, 0, 0}, bw[6] = {0, 1.0 / 900, 0, 0, 0, 0};
    const double cde[3] = {1.002, 0.003, -0.004};
    dk_camera a, b;
    dk_camera_init_ftheta(&a, 1920, 1280, 960.5, 640.25, DK_FTHETA_ANGLE_TO_PIXELDIST, fw, cde, 0);
    dk_camera_init_ftheta(&b, 1920, 1280, 960.5, 640.25, DK_FTHETA_PIXELDIST_TO_ANGLE, bw, cde, 0);
    DK_CHECK_OK(dk_camera_validate(&a));
    DK_CHECK_OK(dk_camera_validate(&b));
    DK_CHECK_NEAR(a.max_angle, b.max_angle, 1e-12);
    dk_rng r;
    dk_rng_init(&r, 8, 0);
    for (int it = 0; it < 500; it++) {
        double th = urand(&r, 0, a.max_angle), phi = urand(&r, -PI, PI);
        double p[3] = {sin(th) * cos(phi), sin(th) * sin(phi), cos(th)}, ua[2], ub[2], Ja[6], Jb[6];
        int va = dk_camera_project(&a, p, ua, Ja), vb = dk_camera_project(&b, p, ub, Jb);
        DK_CHECK_EQ_INT(va, vb);
        DK_CHECK_NEAR(ua[0], ub[0], 1e-8);
        DK_CHECK_NEAR(ua[1], ub[1], 1e-8);
        for (int i = 0; i < 6; i++) DK_CHECK_NEAR(Ja[i], Jb[i], 1e-7 * (1 + fabs(Ja[i])));
    }
    /* The real calibration: the BW camera built from the FW camera's fitted
     * inverse lands within the fit's accuracy, and its pixels satisfy the
     * reference polynomial exactly. */
    dk_camera f, g;
    cam_ftheta_fw(&f);
    dk_camera_init_ftheta(&g, 3840, 2160, 1920.20, 1487.01, DK_FTHETA_PIXELDIST_TO_ANGLE,
                          f.bw_poly, FT_CDE, 1.34617);
    DK_CHECK_OK(dk_camera_validate(&g));
    double worst = 0;
    for (int it = 0; it < 500; it++) {
        double th = urand(&r, 0, 1.3), phi = urand(&r, -PI, PI);
        double p[3] = {sin(th) * cos(phi), sin(th) * sin(phi), cos(th)}, uf[2], ug[2];
        dk_camera_project(&f, p, uf, NULL);
        dk_camera_project(&g, p, ug, NULL);
        worst = fmax(worst, hypot(uf[0] - ug[0], uf[1] - ug[1]));
        /* invert the linear term by hand and check bw(δ) = θ */
        double qx = ug[0] - g.cx, qy = ug[1] - g.cy;
        double det = g.linear_c - g.linear_e * g.linear_d;
        double px = (qx - g.linear_d * qy) / det, py = (-g.linear_e * qx + g.linear_c * qy) / det;
        double d = hypot(px, py), bwv = 0;
        for (int k = 5; k >= 0; k--) bwv = bwv * d + g.bw_poly[k];
        DK_CHECK_NEAR(bwv, th, 1e-12);
    }
    DK_CHECK(worst < 0.5);
}

static void test_validity_and_margin(void)
{
    dk_camera c;
    cam_pinhole(&c);
    double uv[2];
    /* A point projecting 5% of the width left of the image. */
    double u_target = -0.05 * 1600;
    double p[3] = {(u_target - 816.3) / 1266.4 * 10, 0, 10};
    DK_CHECK(!dk_camera_project(&c, p, uv, NULL));
    DK_CHECK_NEAR(uv[0], u_target, 1e-9);
    c.margin = 0.1;
    DK_CHECK_OK(dk_camera_validate(&c));
    DK_CHECK(dk_camera_project(&c, p, uv, NULL));
    c.margin = 0.04;
    DK_CHECK(!dk_camera_project(&c, p, uv, NULL));
    double right[3] = {(1600 * 1.09 - 816.3) / 1266.4 * 10, (900 * 1.09 - 491.5) / 1266.4 * 10, 10};
    c.margin = 0.1;
    DK_CHECK(dk_camera_project(&c, right, uv, NULL));
    c.margin = 0.08;
    DK_CHECK(!dk_camera_project(&c, right, uv, NULL));

    /* Behind every model with max_angle <= 90 degrees. */
    for (int ci = 0; ci < N_CAMS; ci++) {
        dk_camera d;
        g_cams[ci].make(&d);
        double behind[3] = {0.01, 0.02, -1};
        DK_CHECK(!dk_camera_project(&d, behind, uv, NULL));
    }

    /* Fisheye: beyond max_angle (even if it lands in the image) is invalid. */
    dk_camera fe;
    dk_camera_init_fisheye(&fe, 2000, 2000, 400, 400, 1000, 1000, NULL, 60 * DEG);
    double in[3] = {sin(59 * DEG), 0, cos(59 * DEG)}, out[3] = {sin(61 * DEG), 0, cos(61 * DEG)};
    DK_CHECK(dk_camera_project(&fe, in, uv, NULL));
    DK_CHECK(!dk_camera_project(&fe, out, uv, NULL));
    DK_CHECK(uv[0] > 1000 && uv[0] < 2000);  /* written: the model is defined there */
    double ray[3], far_px[2] = {1000 + 400 * 61 * DEG, 1000};
    DK_CHECK(!dk_camera_unproject(&fe, far_px, ray));

    /* F-theta beyond 180 degrees FOV: no z <= 0 guard. */
    const double fw[6] = {0, 500, 0, 0, 0, 0};
    dk_camera ft;
    dk_camera_init_ftheta(&ft, 2000, 2000, 1000, 1000, DK_FTHETA_ANGLE_TO_PIXELDIST, fw, NULL,
                          100 * DEG);
    DK_CHECK_OK(dk_camera_validate(&ft));
    double side_back[3] = {sin(95 * DEG), 0, cos(95 * DEG)};
    DK_CHECK(dk_camera_project(&ft, side_back, uv, NULL));
    DK_CHECK_NEAR(uv[0], 1000 + 500 * 95 * DEG, 1e-9);
    DK_CHECK(dk_camera_unproject(&ft, uv, ray));
    DK_CHECK(ray[2] < 0);
    DK_CHECK_NEAR(ray[0], sin(95 * DEG), 1e-12);
    double beyond[3] = {sin(101 * DEG), 0, cos(101 * DEG)};
    DK_CHECK(!dk_camera_project(&ft, beyond, uv, NULL));

    /* OpenCV: the radial factor guard rejects points far outside the
     * calibrated range even when they would land in the image. */
    dk_camera o;
    const double k[6] = {-0.4, 0, 0, 0, 0, 0};
    dk_camera_init_opencv(&o, 1000, 1000, 100, 100, 500, 500, k, NULL, NULL);
    double wide[3] = {1.0, 0, 1};     /* icD = 0.6 */
    DK_CHECK(!dk_camera_project(&o, wide, uv, NULL));
    double ok[3] = {0.3, 0, 1};       /* icD = 0.964 */
    DK_CHECK(dk_camera_project(&o, ok, uv, NULL));
    /* NaN input */
    double nanp[3] = {NAN, 0, 1};
    for (int ci = 0; ci < N_CAMS; ci++) {
        dk_camera d;
        g_cams[ci].make(&d);
        DK_CHECK(!dk_camera_project(&d, nanp, uv, NULL));
        double nuv[2] = {NAN, 3};
        DK_CHECK(!dk_camera_unproject(&d, nuv, ray));
    }
}

static void test_max_angle_derivation(void)
{
    /* Equidistant fisheye: max_angle is the angle of the farthest corner. */
    dk_camera c;
    dk_camera_init_fisheye(&c, 1000, 800, 300, 300, 500, 400, NULL, 0);
    DK_CHECK_OK(dk_camera_validate(&c));
    DK_CHECK_NEAR(c.max_angle, hypot(500, 400) / 300, 1e-10);
    /* A strongly negative k1 folds r(θ) back at dr/dθ = 1 - 0.6 θ² = 0. */
    const double k[4] = {-0.2, 0, 0, 0};
    dk_camera_init_fisheye(&c, 4000, 4000, 500, 500, 2000, 2000, k, 0);
    DK_CHECK_OK(dk_camera_validate(&c));
    DK_CHECK_NEAR(c.max_angle, sqrt(1 / 0.6), 1e-9);
    /* ... and a max_angle beyond the fold is rejected. */
    c.max_angle = 1.4;
    DK_CHECK_STATUS(dk_camera_validate(&c), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "fisheye: max_angle");
    /* Capped by pi: a tiny focal length and a huge image. */
    dk_camera_init_fisheye(&c, 8000, 8000, 10, 10, 4000, 4000, NULL, 0);
    DK_CHECK_OK(dk_camera_validate(&c));
    DK_CHECK(c.max_angle <= PI && c.max_angle > PI - 1e-9);
    /* The nre.md calibrations derive angles close to the calibrated ones. */
    dk_camera_init_fisheye(&c, 3840, 2160, 1913.76, 1914.00, 1928.68, 1084.36, FE_K, 0);
    DK_CHECK_OK(dk_camera_validate(&c));
    DK_CHECK_NEAR(c.max_angle, 1.2217, 0.01);
    dk_camera_init_ftheta(&c, 3840, 2160, 1920.20, 1487.01, DK_FTHETA_ANGLE_TO_PIXELDIST, FT_FW,
                          FT_CDE, 0);
    DK_CHECK_OK(dk_camera_validate(&c));
    DK_CHECK(c.max_angle > 1.2 && c.max_angle <= PI);
    /* The f-theta forward poly folds: derivative root below the corner. */
    const double fold[6] = {0, 1000, 0, -300, 0, 0};   /* fw' = 1000 - 900 θ² */
    dk_camera_init_ftheta(&c, 8000, 8000, 4000, 4000, DK_FTHETA_ANGLE_TO_PIXELDIST, fold, NULL, 0);
    DK_CHECK_OK(dk_camera_validate(&c));
    DK_CHECK_NEAR(c.max_angle, sqrt(1000.0 / 900.0), 1e-9);
    const double bfold[6] = {0, 1e-3, 0, -1e-10, 0, 0}; /* bw' = 1e-3 - 3e-10 δ² */
    dk_camera_init_ftheta(&c, 8000, 8000, 4000, 4000, DK_FTHETA_PIXELDIST_TO_ANGLE, bfold, NULL, 0);
    DK_CHECK_OK(dk_camera_validate(&c));
    double dstop = sqrt(1e-3 / 3e-10);
    DK_CHECK_NEAR(c.max_angle, 1e-3 * dstop - 1e-10 * dstop * dstop * dstop, 1e-9);
}

static void test_validate_errors(void)
{
    dk_camera c;
    cam_pinhole(&c);
    c.fx = 0;
    DK_CHECK_STATUS(dk_camera_validate(&c), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "dk_camera_validate(): pinhole: fx");
    cam_opencv(&c);
    c.k[2] = NAN;
    DK_CHECK_STATUS(dk_camera_validate(&c), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "opencv: k[2] is NaN");
    cam_opencv(&c);
    c.s[3] = INFINITY;
    DK_CHECK_STATUS(dk_camera_validate(&c), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "opencv: s[3] is infinite");
    cam_fisheye(&c);
    c.k[2] = NAN;
    DK_CHECK_STATUS(dk_camera_validate(&c), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "fisheye: k[2] is NaN");
    cam_fisheye(&c);
    c.fy = -3;
    DK_CHECK_STATUS(dk_camera_validate(&c), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "fisheye: fy");
    cam_pinhole(&c);
    c.width = 0;
    DK_CHECK_STATUS(dk_camera_validate(&c), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "size");
    cam_pinhole(&c);
    c.height = 70000;
    DK_CHECK_STATUS(dk_camera_validate(&c), DK_EINVAL);
    cam_pinhole(&c);
    c.margin = -0.1;
    DK_CHECK_STATUS(dk_camera_validate(&c), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "margin");
    cam_pinhole(&c);
    c.model = (dk_camera_model)7;
    DK_CHECK_STATUS(dk_camera_validate(&c), DK_EINVAL);
    cam_ftheta_fw(&c);
    c.linear_c = 0.5;
    c.linear_d = 1;
    c.linear_e = 0.5;
    DK_CHECK_STATUS(dk_camera_validate(&c), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "ftheta: linear_c - linear_e * linear_d");
    cam_ftheta_fw(&c);
    c.fw_poly[0] = 3;
    DK_CHECK_STATUS(dk_camera_validate(&c), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "ftheta: fw_poly[0]");
    cam_ftheta_fw(&c);
    c.fw_poly[1] = -1;
    DK_CHECK_STATUS(dk_camera_validate(&c), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "does not increase");
    cam_ftheta_bw(&c);
    c.bw_poly[4] = NAN;
    DK_CHECK_STATUS(dk_camera_validate(&c), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "ftheta: bw_poly[4] is NaN");
    cam_ftheta_bw(&c);
    c.max_angle = 4;
    DK_CHECK_STATUS(dk_camera_validate(&c), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "max_angle");
    /* A failing validate leaves the camera untouched. */
    dk_camera before;
    cam_fisheye(&c);
    c.max_angle = 0;
    c.fx = 0;
    before = c;
    DK_CHECK_STATUS(dk_camera_validate(&c), DK_EINVAL);
    DK_CHECK(memcmp(&before, &c, sizeof c) == 0);
    DK_CHECK_STATUS(dk_camera_validate(NULL), DK_EINVAL);
    /* Validate fills an all-zero non-reference f-theta polynomial. */
    cam_ftheta_fw(&c);
    double fitted = c.bw_poly[1];
    memset(c.bw_poly, 0, sizeof c.bw_poly);
    DK_CHECK_OK(dk_camera_validate(&c));
    DK_CHECK_NEAR(c.bw_poly[1], fitted, 1e-15);
}

static void test_shutter_time(void)
{
    dk_camera c;
    dk_camera_init_pinhole(&c, 100, 50, 80, 80, 50, 25);
    const double first_row[2] = {37.5, 0.5}, last_row[2] = {37.5, 49.5};
    const double first_col[2] = {0.5, 20.5}, last_col[2] = {99.5, 20.5};
    const double mid[2] = {50.5, 25.5};
    c.shutter = DK_SHUTTER_GLOBAL;
    DK_CHECK(dk_camera_shutter_time(&c, last_row) == 0);
    c.shutter = DK_SHUTTER_TOP_TO_BOTTOM;
    DK_CHECK(dk_camera_shutter_time(&c, first_row) == 0);
    DK_CHECK(dk_camera_shutter_time(&c, last_row) == 1);
    DK_CHECK_NEAR(dk_camera_shutter_time(&c, mid), 25.0 / 49, 1e-15);
    c.shutter = DK_SHUTTER_BOTTOM_TO_TOP;
    DK_CHECK(dk_camera_shutter_time(&c, first_row) == 1);
    DK_CHECK(dk_camera_shutter_time(&c, last_row) == 0);
    DK_CHECK_NEAR(dk_camera_shutter_time(&c, mid), (50 - 26) / 49.0, 1e-15);
    c.shutter = DK_SHUTTER_LEFT_TO_RIGHT;
    DK_CHECK(dk_camera_shutter_time(&c, first_col) == 0);
    DK_CHECK(dk_camera_shutter_time(&c, last_col) == 1);
    c.shutter = DK_SHUTTER_RIGHT_TO_LEFT;
    DK_CHECK(dk_camera_shutter_time(&c, first_col) == 1);
    DK_CHECK(dk_camera_shutter_time(&c, last_col) == 0);
    /* clamped outside the image */
    const double left_out[2] = {-30, 10}, right_out[2] = {130, 10};
    DK_CHECK(dk_camera_shutter_time(&c, left_out) == 1);
    DK_CHECK(dk_camera_shutter_time(&c, right_out) == 0);
    c.shutter = DK_SHUTTER_TOP_TO_BOTTOM;
    const double above[2] = {3, -4}, below[2] = {3, 80};
    DK_CHECK(dk_camera_shutter_time(&c, above) == 0);
    DK_CHECK(dk_camera_shutter_time(&c, below) == 1);
}

static void test_batch(void)
{
    dk_rng r;
    dk_rng_init(&r, 9, 0);
    const int64_t n = 5003;
    float *xyz = malloc((size_t)n * 3 * sizeof *xyz);
    float *uv = malloc((size_t)n * 2 * sizeof *uv), *uv_ref = malloc((size_t)n * 2 * sizeof *uv);
    uint8_t *valid = malloc((size_t)n), *valid_ref = malloc((size_t)n);
    for (int64_t i = 0; i < n; i++) {
        xyz[3 * i] = (float)urand(&r, -20, 20);
        xyz[3 * i + 1] = (float)urand(&r, -10, 10);
        xyz[3 * i + 2] = (float)urand(&r, -5, 40);
    }
    xyz[0] = xyz[1] = xyz[2] = 0;  /* undefined everywhere: NaN */
    for (int ci = 0; ci < N_CAMS; ci++) {
        dk_camera c;
        g_cams[ci].make(&c);
        for (int64_t i = 0; i < n; i++) {
            double p[3] = {xyz[3 * i], xyz[3 * i + 1], xyz[3 * i + 2]}, u[2] = {NAN, NAN};
            valid_ref[i] = (uint8_t)dk_camera_project(&c, p, u, NULL);
            uv_ref[2 * i] = (float)u[0];
            uv_ref[2 * i + 1] = (float)u[1];
        }
        DK_CHECK(isnan(uv_ref[0]));
        for (int threads = 1; threads <= 4; threads++) {
            dk_pool_config cfg;
            dk_pool_config_init(&cfg);
            cfg.n_threads = threads;
            dk_pool *pool;
            DK_CHECK_OK(dk_pool_create(&cfg, &pool));
            memset(uv, 0xAB, (size_t)n * 2 * sizeof *uv);
            memset(valid, 7, (size_t)n);
            int st = dk_camera_project_points(&c, pool, n, xyz, uv, valid);
            dk_pool_destroy(pool);
            DK_CHECK_OK(st);
            DK_CHECK(memcmp(uv, uv_ref, (size_t)n * 2 * sizeof *uv) == 0);
            DK_CHECK(memcmp(valid, valid_ref, (size_t)n) == 0);
        }
        DK_CHECK_OK(dk_camera_project_points(&c, NULL, n, xyz, uv, NULL));
        DK_CHECK(memcmp(uv, uv_ref, (size_t)n * 2 * sizeof *uv) == 0);
    }
    dk_camera c;
    cam_pinhole(&c);
    DK_CHECK_STATUS(dk_camera_project_points(&c, NULL, -1, xyz, uv, valid), DK_EINVAL);
    DK_CHECK_STATUS(dk_camera_project_points(&c, NULL, n, NULL, uv, valid), DK_EINVAL);
    DK_CHECK_STATUS(dk_camera_project_points(NULL, NULL, n, xyz, uv, valid), DK_EINVAL);
    DK_CHECK_OK(dk_camera_project_points(&c, NULL, 0, xyz, uv, valid));
    free(xyz);
    free(uv);
    free(uv_ref);
    free(valid);
    free(valid_ref);

    /* Pixel rays: small versions of each model, equal to scalar unproject. */
    for (int ci = 0; ci < N_CAMS; ci++) {
        dk_camera big, s;
        g_cams[ci].make(&big);
        s = big;
        s.width = big.width / 16;
        s.height = big.height / 16;
        s.fx /= 16;
        s.fy /= 16;
        s.cx /= 16;
        s.cy /= 16;
        if (s.model == DK_CAM_FTHETA) {  /* pixel distances scale with the image */
            for (int k = 0; k < 6; k++) {
                s.fw_poly[k] /= 16;
                s.bw_poly[k] *= pow(16, k);
            }
        }
        DK_CHECK_OK(dk_camera_validate(&s));
        size_t np = (size_t)s.width * s.height;
        float *rays = malloc(np * 3 * sizeof *rays), *rays_ref = malloc(np * 3 * sizeof *rays);
        uint8_t *ok = malloc(np), *ok_ref = malloc(np);
        int n_ok = 0;
        for (int j = 0; j < s.height; j++)
            for (int i = 0; i < s.width; i++) {
                size_t idx = (size_t)j * s.width + i;
                double uvp[2] = {i + 0.5, j + 0.5}, ray[3] = {0, 0, 0};
                ok_ref[idx] = (uint8_t)dk_camera_unproject(&s, uvp, ray);
                if (!ok_ref[idx]) ray[0] = ray[1] = ray[2] = 0;
                n_ok += ok_ref[idx];
                for (int k = 0; k < 3; k++) rays_ref[3 * idx + k] = (float)ray[k];
            }
        DK_CHECK(n_ok * 10 > (int)np * 9);
        for (int threads = 1; threads <= 4; threads++) {
            dk_pool_config cfg;
            dk_pool_config_init(&cfg);
            cfg.n_threads = threads;
            dk_pool *pool;
            DK_CHECK_OK(dk_pool_create(&cfg, &pool));
            int st = dk_camera_pixel_rays(&s, pool, rays, ok);
            dk_pool_destroy(pool);
            DK_CHECK_OK(st);
            DK_CHECK(memcmp(rays, rays_ref, np * 3 * sizeof *rays) == 0);
            DK_CHECK(memcmp(ok, ok_ref, np) == 0);
        }
        DK_CHECK_OK(dk_camera_pixel_rays(&s, NULL, rays, NULL));
        DK_CHECK(memcmp(rays, rays_ref, np * 3 * sizeof *rays) == 0);
        free(rays);
        free(rays_ref);
        free(ok);
        free(ok_ref);
    }
    float dummy[3];
    DK_CHECK_STATUS(dk_camera_pixel_rays(NULL, NULL, dummy, NULL), DK_EINVAL);
}

/* ------------------------------------------------------------------------ */
/* Lidar                                                                     */

static void test_lidar_presets(void)
{
    const struct {
        dk_lidar_preset p;
        int beams, cols;
        double lo, hi, hz;
    } want[3] = {{DK_LIDAR_32, 32, 1084, -30.67, 10.67, 20},
                 {DK_LIDAR_64, 64, 2048, -24.9, 2.0, 10},
                 {DK_LIDAR_128, 128, 3600, -25, 15, 10}};
    for (int i = 0; i < 3; i++) {
        dk_lidar_model m;
        DK_CHECK_OK(dk_lidar_model_preset(&m, want[i].p));
        DK_CHECK_OK(dk_lidar_model_validate(&m));
        DK_CHECK_EQ_INT(m.n_beams, want[i].beams);
        DK_CHECK_EQ_INT(m.n_columns, want[i].cols);
        DK_CHECK(m.spin_hz == want[i].hz);
        DK_CHECK(m.max_range > m.min_range);
        double step = (want[i].hi - want[i].lo) / (want[i].beams - 1);
        for (int b = 0; b < m.n_beams; b++) {
            double dir[3], t;
            dk_lidar_ray(&m, b, 0, dir, &t);
            DK_CHECK_NEAR(dir[0] * dir[0] + dir[1] * dir[1] + dir[2] * dir[2], 1, 1e-14);
            DK_CHECK_NEAR(asin(dir[2]) / DEG, want[i].lo + step * b, 1e-9);
            DK_CHECK(t == 0);
            DK_CHECK_NEAR(atan2(dir[1], dir[0]), 0, 1e-15);  /* sweep starts facing +x */
        }
        double dir[3], t;
        dk_lidar_ray(&m, 0, m.n_columns - 1, dir, &t);
        DK_CHECK_NEAR(t, (m.n_columns - 1) / (m.n_columns * m.spin_hz), 1e-15);
        DK_CHECK(t < 1.0 / m.spin_hz);
        /* a quarter turn: clockwise seen from above, so towards -y (right) */
        dk_lidar_ray(&m, 5, m.n_columns / 4, dir, &t);
        DK_CHECK_NEAR(atan2(dir[1], dir[0]), m.direction * 2 * PI * (m.n_columns / 4) / m.n_columns,
                      1e-12);
        DK_CHECK_NEAR(t, 0.25 / m.spin_hz, 1e-4);
    }
    dk_lidar_model m;
    DK_CHECK_OK(dk_lidar_model_preset(&m, DK_LIDAR_32));
    DK_CHECK_EQ_INT(m.direction, -1);
    DK_CHECK_NEAR(m.elevation[1] - m.elevation[0], 1.3335 * DEG, 1e-3 * DEG);
    double dir[3];
    dk_lidar_ray(&m, 0, 271, dir, NULL);  /* ~90 degrees clockwise */
    DK_CHECK(dir[1] < -0.5);
    /* per-beam azimuth offsets and a start azimuth add up */
    m.azimuth_start = 0.3;
    m.azimuth_offset[3] = -0.1;
    m.direction = 1;
    dk_lidar_ray(&m, 3, 0, dir, NULL);
    DK_CHECK_NEAR(atan2(dir[1], dir[0]), 0.2, 1e-12);
    DK_CHECK_STATUS(dk_lidar_model_preset(&m, (dk_lidar_preset)16), DK_EINVAL);
    DK_CHECK_STATUS(dk_lidar_model_preset(NULL, DK_LIDAR_32), DK_EINVAL);
}

static void test_lidar_validate(void)
{
    dk_lidar_model m;
    const struct {
        int field;
        const char *word;
    } cases[] = {{0, "n_beams"}, {1, "n_columns"}, {2, "spin_hz"}, {3, "direction"},
                 {4, "min_range"}, {5, "elevation[7]"}, {6, "azimuth_offset[2]"}, {7, "n_beams"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        DK_CHECK_OK(dk_lidar_model_preset(&m, DK_LIDAR_64));
        switch (cases[i].field) {
        case 0: m.n_beams = 0; break;
        case 1: m.n_columns = 2000000; break;
        case 2: m.spin_hz = 0; break;
        case 3: m.direction = 0; break;
        case 4: m.min_range = 200; break;
        case 5: m.elevation[7] = NAN; break;
        case 6: m.azimuth_offset[2] = INFINITY; break;
        case 7: m.n_beams = DK_LIDAR_MAX_BEAMS + 1; break;
        }
        DK_CHECK_STATUS(dk_lidar_model_validate(&m), DK_EINVAL);
        DK_CHECK_CONTAINS(dk_errmsg(), cases[i].word);
    }
    DK_CHECK_STATUS(dk_lidar_model_validate(NULL), DK_EINVAL);
}

/* ------------------------------------------------------------------------ */
/* Rig                                                                       */

static void ego_to_pixel(const dk_rig_sensor *s, const double ego[3], double uv[2], int *valid)
{
    dk_pose e2c = dk_pose_inverse(&s->sensor_to_ego);
    double pc[3];
    dk_pose_apply(&e2c, ego, pc);
    *valid = dk_camera_project(&s->camera, pc, uv, NULL);
}

static void test_rig_nuscenes(void)
{
    dk_rig rig;
    dk_rig_nuscenes(&rig, 0, 0);
    DK_CHECK_OK(dk_rig_validate(&rig));
    DK_CHECK_EQ_INT(rig.n_sensors, 7);
    static const char *names[7] = {"CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK",
                                   "CAM_BACK_LEFT", "CAM_FRONT_LEFT", "LIDAR_TOP"};
    static const double yaws[6] = {0, -55, -110, 180, 110, 55};
    double prev_offset = -1;
    for (int i = 0; i < 7; i++) DK_CHECK_EQ_INT(dk_rig_find(&rig, names[i]), i);
    DK_CHECK_EQ_INT(dk_rig_find(&rig, "CAM_TOP"), -1);
    DK_CHECK_EQ_INT(dk_rig_find(&rig, NULL), -1);
    for (int i = 0; i < 6; i++) {
        const dk_rig_sensor *s = &rig.sensors[i];
        DK_CHECK(s->kind == DK_SENSOR_CAMERA);
        DK_CHECK(s->camera.width == 1600 && s->camera.height == 900);
        DK_CHECK(s->camera.shutter == DK_SHUTTER_TOP_TO_BOTTOM);
        DK_CHECK(s->rate_hz == 12 && s->readout_time > 0.02 && s->readout_time < 0.05);
        DK_CHECK(s->time_offset > prev_offset && s->time_offset < 0.05);  /* CAM_FRONT first */
        prev_offset = s->time_offset;
        double hfov = 2 * atan(800 / s->camera.fx) / DEG;
        DK_CHECK_NEAR(hfov, i == 3 ? 110 : 70, 1e-9);
        DK_CHECK(s->camera.fx == s->camera.fy && s->camera.cx == 800 && s->camera.cy == 450);
        /* optical axis horizontal, along the camera's yaw; image y down = ego -z */
        double z[3] = {0, 0, 1}, y[3] = {0, 1, 0}, x[3] = {1, 0, 0}, a[3], b[3], c[3];
        dk_pose_rotate(&s->sensor_to_ego, z, a);
        dk_pose_rotate(&s->sensor_to_ego, y, b);
        dk_pose_rotate(&s->sensor_to_ego, x, c);
        DK_CHECK_NEAR(a[2], 0, 1e-15);
        DK_CHECK_NEAR(a[0], cos(yaws[i] * DEG), 1e-12);
        DK_CHECK_NEAR(a[1], sin(yaws[i] * DEG), 1e-12);
        DK_CHECK_NEAR(b[2], -1, 1e-15);
        DK_CHECK_NEAR(c[0], sin(yaws[i] * DEG), 1e-12);   /* right-hand side */
        DK_CHECK_NEAR(c[1], -cos(yaws[i] * DEG), 1e-12);
        double m[16];
        dk_pose_to_matrix(&s->sensor_to_ego, m);
        DK_CHECK_NEAR(m[3], s->sensor_to_ego.t[0], 0);
        DK_CHECK(s->sensor_to_ego.t[2] > 1.4 && s->sensor_to_ego.t[2] < 1.7);
        /* a point 10 m along the optical axis at the camera height lands on
         * the image centre */
        const double *t = s->sensor_to_ego.t;
        double ego[3] = {t[0] + 10 * a[0], t[1] + 10 * a[1], t[2]}, uv[2];
        int valid;
        ego_to_pixel(s, ego, uv, &valid);
        DK_CHECK(valid);
        DK_CHECK_NEAR(uv[0], 800, 1e-9);
        DK_CHECK_NEAR(uv[1], 450, 1e-9);
    }
    /* CAM_FRONT: 10 m ahead of the camera on +x ego; left (+y) is image left;
     * up (+z) is image up. */
    const dk_rig_sensor *f = &rig.sensors[0];
    DK_CHECK_NEAR(f->sensor_to_ego.t[0], 1.70, 0.01);
    DK_CHECK_NEAR(f->sensor_to_ego.t[2], 1.51, 0.01);
    double ahead[3] = {f->sensor_to_ego.t[0] + 10, f->sensor_to_ego.t[1], f->sensor_to_ego.t[2]};
    double uv[2];
    int valid;
    ego_to_pixel(f, ahead, uv, &valid);
    DK_CHECK(valid);
    DK_CHECK_NEAR(uv[0], 800, 1e-9);
    DK_CHECK_NEAR(uv[1], 450, 1e-9);
    double left_up[3] = {ahead[0], ahead[1] + 1, ahead[2] + 1};
    ego_to_pixel(f, left_up, uv, &valid);
    DK_CHECK(valid && uv[0] < 800 && uv[1] < 450);
    double behind_ego[3] = {-20, 0, 1.5};
    ego_to_pixel(f, behind_ego, uv, &valid);
    DK_CHECK(!valid);
    /* CAM_BACK looks along -x. */
    const dk_rig_sensor *bk = &rig.sensors[3];
    double back[3] = {bk->sensor_to_ego.t[0] - 10, bk->sensor_to_ego.t[1], bk->sensor_to_ego.t[2]};
    ego_to_pixel(bk, back, uv, &valid);
    DK_CHECK(valid);
    DK_CHECK_NEAR(uv[0], 800, 1e-9);
    DK_CHECK_NEAR(uv[1], 450, 1e-9);
    /* The lidar. */
    const dk_rig_sensor *l = &rig.sensors[6];
    DK_CHECK(l->kind == DK_SENSOR_LIDAR && l->rate_hz == 20 && l->lidar.n_beams == 32);
    DK_CHECK_NEAR(l->sensor_to_ego.t[0], 0.94, 1e-12);
    DK_CHECK_NEAR(l->sensor_to_ego.t[2], 1.84, 1e-12);

    /* Scaled rig. */
    dk_rig small;
    dk_rig_nuscenes(&small, 800, 450);
    DK_CHECK_OK(dk_rig_validate(&small));
    DK_CHECK(small.sensors[0].camera.width == 800 && small.sensors[0].camera.height == 450);
    DK_CHECK_NEAR(small.sensors[0].camera.fx, rig.sensors[0].camera.fx / 2, 1e-12);
    DK_CHECK_NEAR(small.sensors[0].camera.cy, 225, 1e-12);
}

static void test_rig_validate_errors(void)
{
    dk_rig rig;
    dk_rig_nuscenes(&rig, 0, 0);
    rig.sensors[2].camera.fx = 0;
    DK_CHECK_STATUS(dk_rig_validate(&rig), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "CAM_BACK_RIGHT");
    DK_CHECK_CONTAINS(dk_errmsg(), "pinhole: fx");
    DK_CHECK(strstr(dk_errmsg(), "dk_camera_validate") == NULL);

    dk_rig_nuscenes(&rig, 0, 0);
    dk_camera_init_opencv(&rig.sensors[1].camera, 1600, 900, 1000, 1000, 800, 450, OCV_K, NULL,
                          NULL);
    DK_CHECK_OK(dk_rig_validate(&rig));
    rig.sensors[1].camera.k[4] = NAN;
    DK_CHECK_STATUS(dk_rig_validate(&rig), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "CAM_FRONT_RIGHT");
    DK_CHECK_CONTAINS(dk_errmsg(), "k[4] is NaN");

    dk_rig_nuscenes(&rig, 0, 0);
    snprintf(rig.sensors[4].name, sizeof rig.sensors[4].name, "CAM_FRONT");
    DK_CHECK_STATUS(dk_rig_validate(&rig), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "repeats");

    dk_rig_nuscenes(&rig, 0, 0);
    rig.sensors[5].name[0] = '\0';
    DK_CHECK_STATUS(dk_rig_validate(&rig), DK_EINVAL);

    dk_rig_nuscenes(&rig, 0, 0);
    rig.sensors[6].lidar.spin_hz = -1;
    DK_CHECK_STATUS(dk_rig_validate(&rig), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "LIDAR_TOP");
    DK_CHECK_CONTAINS(dk_errmsg(), "spin_hz");

    dk_rig_nuscenes(&rig, 0, 0);
    rig.sensors[0].rate_hz = 0;
    DK_CHECK_STATUS(dk_rig_validate(&rig), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "rate_hz");

    dk_rig_nuscenes(&rig, 0, 0);
    rig.sensors[0].sensor_to_ego.q[0] = 2;
    DK_CHECK_STATUS(dk_rig_validate(&rig), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "sensor_to_ego.q");

    dk_rig_nuscenes(&rig, 0, 0);
    rig.n_sensors = DK_RIG_MAX_SENSORS + 1;
    DK_CHECK_STATUS(dk_rig_validate(&rig), DK_EINVAL);
    DK_CHECK_STATUS(dk_rig_validate(NULL), DK_EINVAL);
}

static void test_zz_no_leaks(void)
{
    DK_CHECK_EQ_INT(dk_alloc_live(), g_live_at_start);
}

int main(int argc, char **argv)
{
    g_live_at_start = dk_alloc_live();
    static const dk_test_case cases[] = {
        DK_TEST(test_pose_compose_inverse),
        DK_TEST(test_pose_euler_yaw),
        DK_TEST(test_pose_interpolate),
        DK_TEST(test_pose_from_matrix),
        DK_TEST(test_camera_names_and_init),
        DK_TEST(test_pinhole_known),
        DK_TEST(test_opencv_known),
        DK_TEST(test_fisheye_known),
        DK_TEST(test_roundtrip_grid),
        DK_TEST(test_roundtrip_points),
        DK_TEST(test_jacobians),
        DK_TEST(test_ftheta_references_agree),
        DK_TEST(test_validity_and_margin),
        DK_TEST(test_max_angle_derivation),
        DK_TEST(test_validate_errors),
        DK_TEST(test_shutter_time),
        DK_TEST(test_batch),
        DK_TEST(test_lidar_presets),
        DK_TEST(test_lidar_validate),
        DK_TEST(test_rig_nuscenes),
        DK_TEST(test_rig_validate_errors),
        DK_TEST(test_zz_no_leaks),
    };
    return dk_test_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
