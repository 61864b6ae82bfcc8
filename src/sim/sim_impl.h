/* Internal interfaces shared by the src/sim files. */
#ifndef DK_SIM_IMPL_H
#define DK_SIM_IMPL_H

#include "drivekit/sim.h"

/* Frees the scene's actor tracks (dk_scene_destroy). */
void dk__scene_actors_free(struct dk_scene_actors *a);

/* Every tracked actor's pose at one time, sorted by id: renderers snapshot
   them once per call when all Gaussians share one time. */
typedef struct dk__actor_poses {
    int n;
    int32_t *ids;
    dk_pose *poses;
} dk__actor_poses;

int dk__scene_actor_poses(const dk_scene *s, double t, dk__actor_poses *out);
/* The pose of actor `id`, or NULL when it has no track (static). */
const dk_pose *dk__actor_poses_find(const dk__actor_poses *a, int32_t id);
void dk__actor_poses_free(dk__actor_poses *a);
/* Pose of actor `id` at time t written to *tmp and returned, or NULL when the
   actor has no track: for per-row / per-column times (rolling shutter, lidar
   spin). Thread-safe for concurrent readers. */
const dk_pose *dk__scene_track_pose_at(const dk_scene *s, int32_t id, double t, dk_pose *tmp);

#endif
