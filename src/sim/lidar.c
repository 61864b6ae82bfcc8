/* src/sim: lidar (in progress). */
#include "drivekit/sim.h"

typedef int dk__sim_lidar_unused;
