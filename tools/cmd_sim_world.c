#include "cli.h"

int sim_from_world(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return CLI_USAGE;
}
