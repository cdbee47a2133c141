/* Picture layouts shared by the CLI and the training loop's epoch images. */
#ifndef VAE_PICTURE_GRIDS_H
#define VAE_PICTURE_GRIDS_H

#include "vae/vae.h"

/* Columns of a comparison grid (as the PyTorch VAE example: 8 per row). */
#define VAE_COMPARISON_COLUMNS 8
/* Pixels between pictures in all grids. */
#define VAE_GRID_MARGIN 2

/* Writes inputs and reconstructions ([count, rows*cols] each, in [0,1]) as
 * a PNG grid of `columns` pictures per row: a row of inputs, the row of their
 * reconstructions below it, then the next inputs, and so on. A last partial
 * block is padded with empty cells. */
vae_status vae_write_comparison_grid(const char *path, const float *inputs, const float *reconstructions, int count,
                                     int rows, int cols, int columns);

#endif
