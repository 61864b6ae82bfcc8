#include "cli.h"

int sim_lidar(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return CLI_USAGE;
}
