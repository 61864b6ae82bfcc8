/*
 * Sensor rigs: the nuScenes-like reference rig, lookup and validation.
 *
 * The nuScenes rig (dk_rig_nuscenes):
 *   - Extrinsics: translations rounded from nuScenes' calibrated_sensor
 *     records (Renault Zoe, ego frame at the rear axle, FLU). Orientations are
 *     idealised to pure yaw (optical axes horizontal): CAM_FRONT 0,
 *     CAM_FRONT_RIGHT -55, CAM_BACK_RIGHT -110, CAM_BACK 180,
 *     CAM_BACK_LEFT +110, CAM_FRONT_LEFT +55 degrees.
 *   - Intrinsics: pinhole, fx = fy = (W/2) / tan(hfov/2) at 1600x900 with
 *     hfov 70 deg (CAM_BACK 110 deg), principal point at the image centre;
 *     another width/height scales fx, cx by width/1600 and fy, cy by
 *     height/900.
 *   - Timing: 12 Hz, rolling shutter read out top to bottom in 30 ms (a
 *     typical automotive CMOS readout; nuScenes does not publish it). nuScenes
 *     triggers each camera when the top lidar's sweep crosses its optical axis,
 *     so time_offset is the sweep time from the front (the lidar's azimuth 0,
 *     where its sweep starts) to the camera's yaw: the lidar spins clockwise at
 *     20 Hz, so CAM_FRONT fires first, then FRONT_RIGHT, BACK_RIGHT, BACK,
 *     BACK_LEFT, FRONT_LEFT.
 *   - LIDAR_TOP at (0.94, 0, 1.84), identity orientation (its own FLU frame),
 *     the DK_LIDAR_32 preset, 20 Hz, time_offset 0.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "drivekit/camera.h"
#include "internal.h"

#define DEG (3.14159265358979323846 / 180.0)

/* sensor_to_ego of an OpenCV camera looking along ego direction (cos ψ, sin ψ, 0)
 * with a horizontal optical axis: the columns of R are the camera axes in ego
 * coordinates, x (right) = (sin ψ, -cos ψ, 0), y (down) = (0, 0, -1),
 * z (forward) = (cos ψ, sin ψ, 0). */
static dk_pose camera_pose(double x, double y, double z, double yaw)
{
    double c = cos(yaw), s = sin(yaw);
    double r[9] = {
        s,  0, c,
        -c, 0, s,
        0, -1, 0,
    };
    dk_pose p;
    dk_rotation_to_quat(r, p.q);
    p.t[0] = x;
    p.t[1] = y;
    p.t[2] = z;
    return p;
}

void dk_rig_nuscenes(dk_rig *rig, int width, int height)
{
    if (!rig) return;
    static const struct {
        const char *name;
        double x, y, z, yaw_deg, hfov_deg;
    } cams[6] = {
        {"CAM_FRONT", 1.70, 0.02, 1.51, 0, 70},
        {"CAM_FRONT_RIGHT", 1.55, -0.49, 1.50, -55, 70},
        {"CAM_BACK_RIGHT", 1.01, -0.48, 1.56, -110, 70},
        {"CAM_BACK", 0.03, 0.00, 1.58, 180, 110},
        {"CAM_BACK_LEFT", 1.04, 0.48, 1.59, 110, 70},
        {"CAM_FRONT_LEFT", 1.52, 0.49, 1.51, 55, 70},
    };
    const double lidar_hz = 20.0;
    if (width <= 0) width = 1600;
    if (height <= 0) height = 900;
    double sx = width / 1600.0, sy = height / 900.0;
    memset(rig, 0, sizeof *rig);
    for (int i = 0; i < 6; i++) {
        dk_rig_sensor *s = &rig->sensors[i];
        snprintf(s->name, sizeof s->name, "%s", cams[i].name);
        s->kind = DK_SENSOR_CAMERA;
        s->sensor_to_ego = camera_pose(cams[i].x, cams[i].y, cams[i].z, cams[i].yaw_deg * DEG);
        s->rate_hz = 12.0;
        /* Clockwise sweep angle from the front to the camera's yaw, in [0, 360). */
        double swept = fmod(360.0 - cams[i].yaw_deg, 360.0);
        s->time_offset = swept / 360.0 / lidar_hz;
        double f = 800.0 / tan(0.5 * cams[i].hfov_deg * DEG);
        dk_camera_init_pinhole(&s->camera, width, height, f * sx, f * sy, 800.0 * sx, 450.0 * sy);
        s->camera.shutter = DK_SHUTTER_TOP_TO_BOTTOM;
        s->readout_time = 0.030;
    }
    dk_rig_sensor *l = &rig->sensors[6];
    snprintf(l->name, sizeof l->name, "%s", "LIDAR_TOP");
    l->kind = DK_SENSOR_LIDAR;
    l->sensor_to_ego = dk_pose_from_yaw(0.94, 0.0, 1.84, 0.0);
    l->rate_hz = lidar_hz;
    l->time_offset = 0;
    dk_lidar_model_preset(&l->lidar, DK_LIDAR_32);
    rig->n_sensors = 7;
}

static int name_ok(const char *name)
{
    return memchr(name, '\0', DK_SENSOR_NAME_MAX) != NULL && name[0] != '\0';
}

int dk_rig_find(const dk_rig *rig, const char *name)
{
    if (!rig || !name) return -1;
    int n = rig->n_sensors;
    if (n < 0) n = 0;
    if (n > DK_RIG_MAX_SENSORS) n = DK_RIG_MAX_SENSORS;
    for (int i = 0; i < n; i++)
        if (name_ok(rig->sensors[i].name) && strcmp(rig->sensors[i].name, name) == 0) return i;
    return -1;
}

/* The message of a nested validation, without its "function(): " prefix. */
static void nested_message(char *out, size_t cap)
{
    const char *msg = dk_errmsg();
    const char *sep = strstr(msg, "(): ");
    snprintf(out, cap, "%s", sep ? sep + 4 : msg);
}

int dk_rig_validate(dk_rig *rig)
{
    if (!rig) return dk__error(DK_EINVAL, __func__, "rig is NULL");
    if (rig->n_sensors < 0 || rig->n_sensors > DK_RIG_MAX_SENSORS)
        return dk__error(DK_EINVAL, __func__, "n_sensors = %d outside [0, %d]", rig->n_sensors,
                         DK_RIG_MAX_SENSORS);
    for (int i = 0; i < rig->n_sensors; i++) {
        dk_rig_sensor *s = &rig->sensors[i];
        if (!name_ok(s->name))
            return dk__error(DK_EINVAL, __func__, "sensor %d: name is empty or not terminated", i);
        const char *nm = s->name;
        for (int j = 0; j < i; j++)
            if (strcmp(rig->sensors[j].name, nm) == 0)
                return dk__error(DK_EINVAL, __func__, "sensor %d: name \"%s\" repeats sensor %d", i,
                                 nm, j);
        if (!(s->rate_hz > 0) || !isfinite(s->rate_hz))
            return dk__error(DK_EINVAL, __func__, "sensor %d (%s): rate_hz = %g must be > 0", i, nm,
                             s->rate_hz);
        if (!isfinite(s->time_offset))
            return dk__error(DK_EINVAL, __func__, "sensor %d (%s): time_offset is not finite", i,
                             nm);
        const dk_pose *p = &s->sensor_to_ego;
        double qn = 0;
        for (int k = 0; k < 4; k++) {
            if (!isfinite(p->q[k]))
                return dk__error(DK_EINVAL, __func__, "sensor %d (%s): sensor_to_ego.q[%d] is not "
                                 "finite", i, nm, k);
            qn += p->q[k] * p->q[k];
        }
        if (fabs(sqrt(qn) - 1.0) > 1e-6)
            return dk__error(DK_EINVAL, __func__, "sensor %d (%s): sensor_to_ego.q has norm %.9g, "
                             "not 1", i, nm, sqrt(qn));
        for (int k = 0; k < 3; k++)
            if (!isfinite(p->t[k]))
                return dk__error(DK_EINVAL, __func__, "sensor %d (%s): sensor_to_ego.t[%d] is not "
                                 "finite", i, nm, k);
        char sub[DK_ERRMSG_MAX];
        switch (s->kind) {
        case DK_SENSOR_CAMERA:
            if (dk_camera_validate(&s->camera) != DK_OK) {
                nested_message(sub, sizeof sub);
                return dk__error(DK_EINVAL, __func__, "sensor %d (%s): camera: %s", i, nm, sub);
            }
            if (!(s->readout_time >= 0) || !isfinite(s->readout_time))
                return dk__error(DK_EINVAL, __func__, "sensor %d (%s): readout_time = %g must be "
                                 "finite and >= 0", i, nm, s->readout_time);
            break;
        case DK_SENSOR_LIDAR:
            if (dk_lidar_model_validate(&s->lidar) != DK_OK) {
                nested_message(sub, sizeof sub);
                return dk__error(DK_EINVAL, __func__, "sensor %d (%s): lidar: %s", i, nm, sub);
            }
            break;
        default:
            return dk__error(DK_EINVAL, __func__, "sensor %d (%s): kind = %d is not a "
                             "dk_sensor_kind", i, nm, (int)s->kind);
        }
    }
    return DK_OK;
}
