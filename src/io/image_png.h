/* PNG pictures through libpng. */
#ifndef VAE_IMAGE_PNG_H
#define VAE_IMAGE_PNG_H
#include "vae/vae.h"

/* Writes count grey images (each rows*cols values in [0,1], clamped) as a
 * grid with grid_columns columns and a margin of margin pixels around and
 * between images (margin colour: white-ish grey, as the PyTorch example). */
vae_status vae_png_write_grid(const char *path, const float *images, int count, int rows, int cols,
                              int grid_columns, int margin);
/* Writes an RGB image (height*width*3 bytes). */
vae_status vae_png_write_rgb(const char *path, const unsigned char *pixels, int width, int height);

#endif
