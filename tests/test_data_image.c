/* Tests of src/data: image steps. */
#include "dk_test.h"

const dk_test_case dk_tests_data_image[] = { { NULL, NULL } };
const size_t dk_tests_data_image_count = 0;
