/* PNG pictures encoded into memory, for the TensorBoard event file's image
 * summaries (the files themselves: vae/output.h). */
#ifndef VAE_IMAGE_PNG_H
#define VAE_IMAGE_PNG_H

#include <stddef.h>

#include "vae/vae.h"

typedef struct vae_png_bytes {
    unsigned char *data; /* the whole PNG file; malloc'd, the caller frees it */
    size_t size;
    int width, height, channels;
} vae_png_bytes;

/* The picture vae_png_write_image_grid writes, byte for byte, into memory;
 * name stands for the picture in messages. */
vae_status vae_png_encode_image_grid(const char *name, const float *images, int count, int channels, int rows,
                                     int cols, int grid_columns, int margin, vae_png_bytes *out);

#endif
