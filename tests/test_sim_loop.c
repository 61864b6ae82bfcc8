/* Tests of src/sim: loop. */
#include "dk_test.h"

const dk_test_case dk_tests_sim_loop[] = { { NULL, NULL } };
const size_t dk_tests_sim_loop_count = 0;
