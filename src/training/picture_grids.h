/* The comparison grid of vae_write_image_comparison_grid (vae/output.h),
 * encoded into memory for the TensorBoard event file. */
#ifndef VAE_PICTURE_GRIDS_H
#define VAE_PICTURE_GRIDS_H

#include "io/image_png.h"

vae_status vae_encode_image_comparison_grid(const char *name, const float *inputs, const float *reconstructions,
                                            int count, int channels, int rows, int cols, int columns,
                                            vae_png_bytes *out);

#endif
