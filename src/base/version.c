/* The library's version, from the generated vae/version.h (project(VERSION)
 * in the top CMakeLists.txt). */
#include "vae/vae.h"

const char *vae_version(void) { return VAE_VERSION_STRING; }
