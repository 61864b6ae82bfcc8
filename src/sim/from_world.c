/* src/sim: from_world (in progress). */
#include "drivekit/sim.h"

typedef int dk__sim_from_world_unused;
