/*
 * Private to src/world: helpers shared by the world's source files.
 */
#ifndef DK_WORLD_IMPL_H
#define DK_WORLD_IMPL_H

#include "drivekit/world.h"
#include "internal.h"

/* ---- Box geometry (scenario.c) ------------------------------------------ */

/* The 8 corners of an actor's box at time t, world frame, in the order of the
 * Cosmos-Drive-Dreams renderer: with the box frame x forward, y left, z up and
 * (l, w, h) its size, corners 0..3 are the bottom face, 4..7 the top face:
 *   0 (+l/2, +w/2, -h/2), 1 (+l/2, -w/2, -h/2), 2 (-l/2, -w/2, -h/2),
 *   3 (-l/2, +w/2, -h/2), 4..7 the same with +h/2.
 * Returns 1 if the actor exists at t. The ego's box (offset from its origin)
 * is handled too. */
int dk__actor_corners(const dk_actor *a, int is_ego, double t, double corners[8][3]);
/* Box-to-world pose of the ego's box at time t. */
dk_pose dk__ego_box_pose(const dk_scenario *s, double t);
/* Is point p (world frame) inside the box pose/size (inclusive)? */
int dk__point_in_box(const dk_pose *box_to_world, const double size[3], const double p[3]);

/* ---- Box surface paint (render.c) ---------------------------------------- */

/* What a box is, for its paint. */
enum { DK__PAINT_BODY = 0, DK__PAINT_POLE, DK__PAINT_SIGN, DK__PAINT_LIGHT };

/* Albedo (RGB, 0..255) of a box at point p (box frame: x forward, y left,
 * z up, metres from the centre) on the face whose outward normal is `sign`
 * (+1 or -1) times box axis `axis`, as the world renderer paints it: wheels,
 * sills and windows of vehicles, heads and trousers, cone stripes, barrier
 * stripes, sign borders, signal lamps. cls is a DK_CLASS_* or -1; col and col2
 * are the base and secondary colours (dk_world_actor_style, or the map
 * layer's). Returns 1 where the point is glass. Also used by src/sim to give
 * scenes built from scenarios the same paint. */
int dk__world_box_paint(int kind, int cls, const float half[3], const float col[3],
                        const float col2[3], int axis, int sign, const float p[3], float out[3]);

/* ---- Scenario internals (scenario.c) ------------------------------------ */

/* Appends without checking anything (the caller validates the whole scenario
 * afterwards) and takes ownership of a->states / e->points, which must come
 * from dk_malloc; on failure (DK_ENOMEM) the caller still owns them. */
int dk__scenario_append_actor(dk_scenario *s, const dk_actor *a);
int dk__scenario_append_map(dk_scenario *s, const dk_map_element *e);
int dk__scenario_append_edit(dk_scenario *s, const dk_edit_record *r);

/* ---- H.264 MP4 writer over libavcodec/libavformat (mp4.c) --------------- */

typedef struct dk__mp4 dk__mp4;

/* Opens `path` for width x height RGB24 frames at `fps`, encoded with libx264
 * (yuv420p, given CRF, preset "veryfast"). Width and height must be even.
 * Returns DK_EUNSUPPORTED when no H.264 encoder exists, DK_EIO on file errors,
 * DK_EINVAL for odd sizes. */
int dk__mp4_open(const char *path, int width, int height, double fps, int crf, dk__mp4 **out);
/* Appends one (height, width, 3) uint8 RGB frame; frames get pts 0, 1, 2, ... */
int dk__mp4_write(dk__mp4 *m, const dk_tensor *rgb);
/* Flushes the encoder, writes the trailer, frees everything (also on error
 * paths: always call it). Returns the first error seen, if any. NULL-safe. */
int dk__mp4_close(dk__mp4 *m);

#endif
