/* The parts of the world that do not depend on MPI: the fatal handler the
 * NCCL watchdog calls. */
#include <stdio.h>
#include <unistd.h>

#include "distributed/distributed.h"
#include "distributed/distributed_internal.h"

static void default_fatal_handler(int exit_code, const char *message) {
    fprintf(stderr, "vae: error: %s\n", message);
    fflush(stderr);
    _exit(exit_code);
}

static vae_distributed_fatal_handler fatal_handler = default_fatal_handler;

void vae_distributed_set_fatal_handler(vae_distributed_fatal_handler handler) {
    fatal_handler = handler ? handler : default_fatal_handler;
}

void vae_distributed_fatal(int exit_code, const char *message) {
    fatal_handler(exit_code, message);
    _exit(exit_code); /* a handler that returns still ends the process */
}
