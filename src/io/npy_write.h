/* NPY writer (NumPy's .npy format, version 1.0, little-endian, C order):
 * files that numpy.load reads, written to a temporary file, fsynced and
 * renamed so that no half-written file is left under the final name. */
#ifndef VAE_NPY_WRITE_H
#define VAE_NPY_WRITE_H

#include <stdint.h>
#include "vae/vae.h"

/* float32 '<f4', shape (rows, cols). */
vae_status vae_npy_write_f32(const char *path, const float *values, long rows, long cols);
/* int32 '<i4', shape (count,). */
vae_status vae_npy_write_i32(const char *path, const int32_t *values, long count);

#endif
