/*
 * drivekit: a C11 toolkit for the autonomous-driving model lifecycle.
 *
 * This is the umbrella header. It carries the version and includes every
 * module header that is part of this build. Each module header is its own
 * manual: an overview with an example, then every type and function with
 * ownership, units and exact error returns.
 *
 *   core.h   status codes + error messages, allocator and arenas, thread pool,
 *            refcounted buffers and tensor views, Philox RNG, JPEG/PNG I/O,
 *            JSON reading/writing, logging and progress reporting.
 *   camera.h camera models (pinhole, OpenCV, fisheye, f-theta), poses, rolling
 *            shutter, lidar scan patterns, sensor rigs.
 *   world.h  scenarios (map, actors, ego, rig), procedural generator, corner-case
 *            edits, camera/lidar rendering, condition videos, nuScenes writer.
 *   video.h  frame-exact on-demand video decoding: index, planner, parallel
 *            GOP decoding, caches, RGB/YUV output.
 *   ragged.h RaggedBatch: batched ops over non-uniform ground truth, batched
 *            Hungarian matching, set losses with backward.
 *   sim.h    Gaussian-splat scenes (3DGS PLY) rendered for every camera model,
 *            with rolling shutter.
 *
 * Conventions shared by every module:
 *   - Public symbols are dk_<module>_<verb>; macros DK_; types dk_<name>.
 *   - Fallible functions return int: 0 (DK_OK) on success, a negative DK_E*
 *     code on failure. dk_status_str() names a code; dk_errmsg() returns the
 *     calling thread's last error message, "function(): what, where".
 *   - Engines are opaque handles made by dk_x_create(&cfg, &out) and released
 *     by NULL-safe dk_x_destroy(). Config structs are filled with defaults by
 *     dk_x_config_init() first, so fields can be added later.
 *   - The library never prints, exits or aborts on bad input; it never owns a
 *     hidden thread. Parallel work runs on an explicit dk_pool.
 */
#ifndef DRIVEKIT_H
#define DRIVEKIT_H

#define DK_VERSION_MAJOR 0
#define DK_VERSION_MINOR 1
#define DK_VERSION_PATCH 0
#define DK_VERSION_HEX ((DK_VERSION_MAJOR << 16) | (DK_VERSION_MINOR << 8) | DK_VERSION_PATCH)
#define DK_VERSION_STRING "0.1.0"

#include "drivekit/core.h"
#include "drivekit/camera.h"
#include "drivekit/world.h"
#include "drivekit/video.h"
#include "drivekit/ragged.h"
#include "drivekit/sim.h"
#include "drivekit/data.h"

#endif /* DRIVEKIT_H */
