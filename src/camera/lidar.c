/*
 * Spinning-lidar scan patterns: presets and per-beam ray directions.
 *
 * Presets (beam 0 is the lowest beam; elevations ascend with the index;
 * azimuth offsets are zero; the sweep starts facing the sensor's +x axis):
 *   DK_LIDAR_32   Velodyne HDL-32E as mounted on the nuScenes car: 32 beams
 *                 evenly from -30.67 to +10.67 deg (1.333 deg apart, the
 *                 sensor's published layout), 1084 columns (~0.33 deg), 20 Hz,
 *                 clockwise seen from above (nuScenes' LIDAR_TOP spins CW,
 *                 so the sweep passes CAM_FRONT, then CAM_FRONT_RIGHT, ...),
 *                 1 m .. 100 m (the HDL-32E data sheet quotes 80-100 m).
 *   DK_LIDAR_64   HDL-64E-like: 64 beams spread evenly over -24.9 .. +2.0 deg
 *                 (the real sensor has two blocks with different spacing; even
 *                 spacing over the same span is close enough for simulation),
 *                 2048 columns, 10 Hz, clockwise, 1 m .. 120 m.
 *   DK_LIDAR_128  generic 128-beam sensor: -25 .. +15 deg evenly, 3600 columns
 *                 (0.1 deg), 10 Hz, clockwise, 0.5 m .. 200 m.
 */
#include <math.h>
#include <string.h>

#include "drivekit/camera.h"
#include "internal.h"

#define DEG (3.14159265358979323846 / 180.0)

static void fill_even(dk_lidar_model *m, int n_beams, double lo_deg, double hi_deg)
{
    m->n_beams = n_beams;
    for (int b = 0; b < n_beams; b++)
        m->elevation[b] = (lo_deg + (hi_deg - lo_deg) * b / (n_beams - 1)) * DEG;
}

int dk_lidar_model_preset(dk_lidar_model *m, dk_lidar_preset preset)
{
    if (!m) return dk__error(DK_EINVAL, __func__, "m is NULL");
    dk_lidar_model t;
    memset(&t, 0, sizeof t);
    t.direction = -1;
    t.azimuth_start = 0;
    switch (preset) {
    case DK_LIDAR_32:
        fill_even(&t, 32, -30.67, 10.67);
        t.n_columns = 1084;
        t.spin_hz = 20;
        t.min_range = 1.0;
        t.max_range = 100.0;
        break;
    case DK_LIDAR_64:
        fill_even(&t, 64, -24.9, 2.0);
        t.n_columns = 2048;
        t.spin_hz = 10;
        t.min_range = 1.0;
        t.max_range = 120.0;
        break;
    case DK_LIDAR_128:
        fill_even(&t, 128, -25.0, 15.0);
        t.n_columns = 3600;
        t.spin_hz = 10;
        t.min_range = 0.5;
        t.max_range = 200.0;
        break;
    default:
        return dk__error(DK_EINVAL, __func__, "unknown preset %d (use 32, 64 or 128)", (int)preset);
    }
    *m = t;
    return DK_OK;
}

int dk_lidar_model_validate(const dk_lidar_model *m)
{
    if (!m) return dk__error(DK_EINVAL, __func__, "m is NULL");
    if (m->n_beams < 1 || m->n_beams > DK_LIDAR_MAX_BEAMS)
        return dk__error(DK_EINVAL, __func__, "n_beams = %d outside [1, %d]", m->n_beams,
                         DK_LIDAR_MAX_BEAMS);
    if (m->n_columns < 1 || m->n_columns > 1000000)
        return dk__error(DK_EINVAL, __func__, "n_columns = %d outside [1, 1000000]", m->n_columns);
    if (!(m->spin_hz > 0) || !isfinite(m->spin_hz))
        return dk__error(DK_EINVAL, __func__, "spin_hz = %g must be finite and > 0", m->spin_hz);
    if (m->direction != 1 && m->direction != -1)
        return dk__error(DK_EINVAL, __func__, "direction = %d must be +1 (CCW) or -1 (CW)",
                         m->direction);
    if (!isfinite(m->azimuth_start))
        return dk__error(DK_EINVAL, __func__, "azimuth_start is not finite");
    if (!isfinite(m->min_range) || !isfinite(m->max_range) || !(m->min_range >= 0) ||
        !(m->min_range < m->max_range))
        return dk__error(DK_EINVAL, __func__,
                         "min_range = %g, max_range = %g: need 0 <= min_range < max_range, finite",
                         m->min_range, m->max_range);
    for (int b = 0; b < m->n_beams; b++) {
        if (!isfinite(m->elevation[b]))
            return dk__error(DK_EINVAL, __func__, "elevation[%d] is not finite", b);
        if (!isfinite(m->azimuth_offset[b]))
            return dk__error(DK_EINVAL, __func__, "azimuth_offset[%d] is not finite", b);
    }
    return DK_OK;
}

void dk_lidar_ray(const dk_lidar_model *m, int beam, int column, double dir[3], double *time)
{
    DK__ASSERT(m && beam >= 0 && beam < m->n_beams && beam < DK_LIDAR_MAX_BEAMS);
    double az = m->azimuth_start +
                m->direction * (2.0 * 3.14159265358979323846) * column / m->n_columns +
                m->azimuth_offset[beam];
    double el = m->elevation[beam];
    if (dir) {
        double ce = cos(el);
        dir[0] = ce * cos(az);
        dir[1] = ce * sin(az);
        dir[2] = sin(el);
    }
    if (time) *time = column / (m->n_columns * m->spin_hz);
}
