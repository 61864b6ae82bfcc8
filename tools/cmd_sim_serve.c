#include "cli.h"

int sim_serve(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return CLI_USAGE;
}
