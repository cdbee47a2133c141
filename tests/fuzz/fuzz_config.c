/* libFuzzer target: any byte string given to the INI config parser must be
 * refused or accepted cleanly, and an accepted config must write out and
 * load back unchanged. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vae/vae.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1); /* the parser takes NUL-terminated text */
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    vae_config config;
    vae_config_defaults(&config);
    if (vae_config_load_string(&config, text, "fuzz") == VAE_OK) {
        char *written = NULL;
        if (vae_config_to_string(&config, &written) == VAE_OK) {
            vae_config reloaded;
            vae_config_defaults(&reloaded);
            if (vae_config_load_string(&reloaded, written, "fuzz (written)") != VAE_OK ||
                memcmp(&reloaded, &config, sizeof config) != 0)
                abort(); /* a written config must read back to the same values */
        }
        free(written);
        (void)vae_config_validate(&config);
    }
    free(text);
    return 0;
}
