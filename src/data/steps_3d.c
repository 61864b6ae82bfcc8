/* src/data: steps_3d (in progress). */
#include "data_impl.h"

typedef int dk__data_steps_3d_unused;
