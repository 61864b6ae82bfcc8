/* Tests of src/data: 3d steps. */
#include "dk_test.h"

const dk_test_case dk_tests_data_3d[] = { { NULL, NULL } };
const size_t dk_tests_data_3d_count = 0;
