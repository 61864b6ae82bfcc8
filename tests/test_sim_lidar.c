/* Tests of src/sim: lidar. */
#include "dk_test.h"

const dk_test_case dk_tests_sim_lidar[] = { { NULL, NULL } };
const size_t dk_tests_sim_lidar_count = 0;
