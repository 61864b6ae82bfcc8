/* Tests of src/sim: world. */
#include "dk_test.h"

const dk_test_case dk_tests_sim_world[] = { { NULL, NULL } };
const size_t dk_tests_sim_world_count = 0;
