/* vae-engine public C API: the files the engine makes for people and other
 * programs: PNG pictures, NumPy .npy arrays, and the JSON line of an
 * evaluation. Files are written atomically: a temporary file beside the
 * target, fsynced and renamed over it, so that a reader or a crash never
 * sees half a file; a failure (disk full, missing or unwritable folder)
 * names the file and leaves an earlier file under that name untouched. */
#ifndef VAE_OUTPUT_H
#define VAE_OUTPUT_H

#include <stdint.h>

#include "vae/vae.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Columns of a comparison grid (as the PyTorch VAE example: 8 per row). */
#define VAE_COMPARISON_COLUMNS 8
/* Pixels between pictures in all grids. */
#define VAE_GRID_MARGIN 2

/* Writes count grey images (each rows*cols values in [0,1], clamped) as a
 * grid with grid_columns columns and a margin of margin pixels around and
 * between images (margin colour: a light grey, as the PyTorch example). */
vae_status vae_png_write_grid(const char *path, const float *images, int count, int rows, int cols,
                              int grid_columns, int margin);
/* The same for images of `channels` planes each (channels-first, as the
 * model's rows): 1 writes grey, 3 writes RGB; other counts are refused. */
vae_status vae_png_write_image_grid(const char *path, const float *images, int count, int channels, int rows,
                                    int cols, int grid_columns, int margin);
/* Writes an RGB image (height*width*3 bytes, row by row). */
vae_status vae_png_write_rgb(const char *path, const unsigned char *pixels, int width, int height);
/* Writes inputs and reconstructions ([count, rows*cols] each, in [0,1]) as
 * a PNG grid of `columns` pictures per row: a row of inputs, the row of their
 * reconstructions below it, then the next inputs, and so on. A last partial
 * block is padded with empty cells. */
vae_status vae_write_comparison_grid(const char *path, const float *inputs, const float *reconstructions, int count,
                                     int rows, int cols, int columns);
/* The same for images of 1 (grey) or 3 (RGB) channel planes. */
vae_status vae_write_image_comparison_grid(const char *path, const float *inputs, const float *reconstructions,
                                           int count, int channels, int rows, int cols, int columns);

/* NumPy .npy files (format version 1.0, little-endian, C order) that
 * numpy.load reads: float32 '<f4' of shape (rows, cols) ... */
vae_status vae_npy_write_f32(const char *path, const float *values, long rows, long cols);
/* ... and int32 '<i4' of shape (count,). */
vae_status vae_npy_write_i32(const char *path, const int32_t *values, long count);

/* One JSON object (no newline) describing an evaluation of split at step:
 * the fields of a metrics.jsonl "eval" line (elbo, reconstruction, kl,
 * active_units, and log_likelihood with iwae_k when K > 0), then "points" and
 * "kl_per_dimension". *out_text is malloc'd; the caller frees it. */
vae_status vae_eval_result_to_json(const vae_eval_result *result, const char *split, uint64_t step, char **out_text);

#ifdef __cplusplus
}
#endif
#endif
