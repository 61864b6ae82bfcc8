/* src/sim: loop (in progress). */
#include "drivekit/sim.h"

typedef int dk__sim_loop_unused;
