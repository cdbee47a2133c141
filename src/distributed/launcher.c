/* Launcher detection from the environment (see launcher.h). */
#include "distributed/launcher.h"

#include <stdlib.h>
#include <string.h>

static const char *const launcher_variables[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE",
                                                 "SLURM_STEP_NUM_TASKS"};

static const char *found_variable(int *count) {
    const char *forced = getenv("VAE_DISTRIBUTED");
    if (forced && strcmp(forced, "0") == 0) return NULL;
    for (size_t i = 0; i < sizeof launcher_variables / sizeof launcher_variables[0]; ++i) {
        const char *text = getenv(launcher_variables[i]);
        if (!text || !text[0]) continue;
        char *end = NULL;
        long value = strtol(text, &end, 10);
        if (*end != '\0' || value < 1 || value > 1000000) continue;
        *count = (int)value;
        return launcher_variables[i];
    }
    if (forced && strcmp(forced, "1") == 0) {
        *count = -1;
        return "VAE_DISTRIBUTED";
    }
    return NULL;
}

int vae_launcher_process_count(void) {
    int count = 0;
    return found_variable(&count) ? count : 0;
}

const char *vae_launcher_variable(void) {
    int count = 0;
    return found_variable(&count);
}
