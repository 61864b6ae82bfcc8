/* src/data: steps_image (in progress). */
#include "data_impl.h"

typedef int dk__data_steps_image_unused;
