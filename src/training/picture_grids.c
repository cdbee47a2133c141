/* Picture layouts on top of vae_png_write_grid. */
#include "training/picture_grids.h"

#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "vae/output.h"

/* Empty cells take the grid's margin grey (224 of 255, src/io/image_png.c), so
 * that a partial last block looks like no picture at all. */
#define EMPTY_CELL_VALUE (224.0f / 255.0f)

vae_status vae_write_comparison_grid(const char *path, const float *inputs, const float *reconstructions, int count,
                                     int rows, int cols, int columns) {
    return vae_write_image_comparison_grid(path, inputs, reconstructions, count, 1, rows, cols, columns);
}

/* The comparison grid's cells (malloc'd into *out_grid): blocks of a row of
 * inputs over the row of their reconstructions. */
static vae_status comparison_cells(const char *name, const float *inputs, const float *reconstructions, int count,
                                   int channels, int rows, int cols, int *columns, float **out_grid, int *out_cells) {
    *out_grid = NULL;
    if (!inputs || !reconstructions || count < 1 || channels < 1 || rows < 1 || cols < 1 || *columns < 1)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT,
                         "%s: bad comparison grid (%d pictures of %dx%dx%d, %d columns): expected positive sizes",
                         name ? name : "", count, channels, rows, cols, *columns);
    if (*columns > count) *columns = count;
    size_t dim = (size_t)channels * (size_t)rows * (size_t)cols;
    int blocks = (count + *columns - 1) / *columns;
    size_t cells = (size_t)blocks * 2 * (size_t)*columns;
    float *grid = malloc(sizeof(float) * cells * dim);
    if (!grid) return vae_error(VAE_ERROR_OUT_OF_MEMORY, "%s: out of memory for the picture", name);
    for (size_t i = 0; i < cells * dim; ++i) grid[i] = EMPTY_CELL_VALUE;
    for (int i = 0; i < count; ++i) {
        size_t block = (size_t)(i / *columns), column = (size_t)(i % *columns);
        size_t input_cell = block * 2 * (size_t)*columns + column;
        size_t reconstruction_cell = input_cell + (size_t)*columns;
        memcpy(grid + input_cell * dim, inputs + (size_t)i * dim, sizeof(float) * dim);
        memcpy(grid + reconstruction_cell * dim, reconstructions + (size_t)i * dim, sizeof(float) * dim);
    }
    *out_grid = grid;
    *out_cells = (int)cells;
    return VAE_OK;
}

vae_status vae_write_image_comparison_grid(const char *path, const float *inputs, const float *reconstructions,
                                           int count, int channels, int rows, int cols, int columns) {
    float *grid = NULL;
    int cells = 0;
    VAE_TRY(comparison_cells(path, inputs, reconstructions, count, channels, rows, cols, &columns, &grid, &cells));
    vae_status status = vae_png_write_image_grid(path, grid, cells, channels, rows, cols, columns, VAE_GRID_MARGIN);
    free(grid);
    return status;
}

vae_status vae_encode_image_comparison_grid(const char *name, const float *inputs, const float *reconstructions,
                                            int count, int channels, int rows, int cols, int columns,
                                            vae_png_bytes *out) {
    memset(out, 0, sizeof *out);
    float *grid = NULL;
    int cells = 0;
    VAE_TRY(comparison_cells(name, inputs, reconstructions, count, channels, rows, cols, &columns, &grid, &cells));
    vae_status status =
        vae_png_encode_image_grid(name, grid, cells, channels, rows, cols, columns, VAE_GRID_MARGIN, out);
    free(grid);
    return status;
}
