/* PNG pictures through libpng, written atomically (io/atomic_file.h): no
 * half-written picture is ever left under the final name. */
#define _POSIX_C_SOURCE 200809L

#include "vae/output.h"
#include "base/error.h"
#include "io/atomic_file.h"
#include "io/image_png.h"

#include <errno.h>
#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The grid's background (margins and empty cells): a light grey, 224 of 255,
 * so that white digits stay distinguishable from the margin. */
#define PNG_GRID_MARGIN_GREY 224
/* Far below libpng's own limits; a bigger picture is a usage mistake. */
#define PNG_MAX_SIDE 65536

/* Where the encoded bytes go: the atomic file, or (to_memory) a growing
 * buffer (the TensorBoard event file's image summaries). */
typedef struct png_write_context {
    vae_atomic_file file; /* its error_number: errno of a failed write, 0 if none */
    int to_memory;
    unsigned char *memory;
    size_t memory_size, memory_capacity;
    char message[256];    /* libpng's message */
    jmp_buf jump;
} png_write_context;

static void on_png_error(png_structp png, png_const_charp message) {
    png_write_context *context = png_get_error_ptr(png);
    snprintf(context->message, sizeof context->message, "%s", message ? message : "libpng error");
    longjmp(context->jump, 1);
}

static void on_png_warning(png_structp png, png_const_charp message) {
    (void)png;
    (void)message; /* warnings do not stop the write */
}

/* Appends to the memory buffer, doubling it; 0, or -1 when out of memory. */
static int append_to_memory(png_write_context *context, const unsigned char *bytes, size_t length) {
    if (length > SIZE_MAX / 2 - context->memory_size) return -1;
    if (context->memory_size + length > context->memory_capacity) {
        size_t capacity = context->memory_capacity ? context->memory_capacity : 4096;
        while (capacity < context->memory_size + length) capacity *= 2;
        unsigned char *grown = realloc(context->memory, capacity);
        if (!grown) return -1;
        context->memory = grown;
        context->memory_capacity = capacity;
    }
    memcpy(context->memory + context->memory_size, bytes, length);
    context->memory_size += length;
    return 0;
}

static void on_png_write(png_structp png, png_bytep bytes, size_t length) {
    png_write_context *context = png_get_io_ptr(png);
    if (context->to_memory) {
        if (append_to_memory(context, bytes, length) != 0) png_error(png, "out of memory for the encoded picture");
        return;
    }
    if (vae_atomic_file_write(&context->file, bytes, length) != 0) png_error(png, "write failed");
}

static void on_png_flush(png_structp png) {
    png_write_context *context = png_get_io_ptr(png);
    if (context->to_memory) return;
    errno = 0;
    if (fflush(context->file.stream) != 0) {
        vae_atomic_file_fail(&context->file, errno);
        png_error(png, "flush failed");
    }
}

/* Encodes the PNG into an open file; returns 0, or 1 with context filled. */
static int encode_png(png_write_context *context, const unsigned char *pixels, int width, int height,
                      int color_type, int channels) {
    /* Everything the error path needs is set before setjmp and never changed
     * after it; the one local changed later is volatile. */
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, context, on_png_error, on_png_warning);
    if (!png) {
        snprintf(context->message, sizeof context->message, "out of memory creating the PNG writer");
        return 1;
    }
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        snprintf(context->message, sizeof context->message, "out of memory creating the PNG info");
        return 1;
    }
    volatile int failed = 1;
    if (setjmp(context->jump) == 0) {
        png_set_write_fn(png, context, on_png_write, on_png_flush);
        png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8, color_type, PNG_INTERLACE_NONE,
                     PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
        png_write_info(png, info);
        size_t stride = (size_t)width * (size_t)channels;
        for (int row = 0; row < height; ++row) png_write_row(png, pixels + (size_t)row * stride);
        png_write_end(png, info);
        failed = 0;
    }
    png_destroy_write_struct(&png, &info);
    return failed;
}

static vae_status write_png_file(const char *path, const unsigned char *pixels, int width, int height,
                                 int color_type, int channels) {
    png_write_context context;
    memset(&context, 0, sizeof context);
    VAE_TRY(vae_atomic_file_open(&context.file, path, "PNG"));
    if (encode_png(&context, pixels, width, height, color_type, channels) && !context.file.error_number) {
        /* libpng failed on its own (not a write): its message says why. */
        vae_status status = vae_error(VAE_ERROR_IO, "%s: cannot write the PNG: %s", path, context.message);
        vae_atomic_file_abort(&context.file);
        return status;
    }
    return vae_atomic_file_commit(&context.file);
}

static unsigned char grey_level(float value) {
    if (!(value > 0.0f)) return 0;   /* also NaN */
    if (value >= 1.0f) return 255;
    return (unsigned char)lroundf(value * 255.0f);
}

/* The grid's pixels (malloc'd, interleaved channels) and size; path names
 * the picture in messages. */
static vae_status render_grid(const char *path, const float *images, int count, int channels, int rows, int cols,
                              int grid_columns, int margin, unsigned char **out_pixels, int *out_width,
                              int *out_height) {
    *out_pixels = NULL;
    if (!images || count < 1 || rows < 1 || cols < 1 || grid_columns < 1 || margin < 0)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT,
                         "%s: bad grid (count %d, image %dx%d, %d columns, margin %d): expected positive sizes",
                         path, count, rows, cols, grid_columns, margin);
    if (channels != 1 && channels != 3)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT,
                         "%s: images of %d channels cannot be drawn (a PNG grid takes 1 channel, grey, or 3, RGB)",
                         path, channels);
    /* As torchvision's make_grid: no empty columns when there are few images. */
    int columns = grid_columns < count ? grid_columns : count;
    int grid_rows = (count + columns - 1) / columns;
    int64_t width = (int64_t)margin + (int64_t)columns * ((int64_t)cols + margin);
    int64_t height = (int64_t)margin + (int64_t)grid_rows * ((int64_t)rows + margin);
    if (width > PNG_MAX_SIDE || height > PNG_MAX_SIDE)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "%s: grid of %lldx%lld pixels, larger than %d per side", path,
                         (long long)width, (long long)height, PNG_MAX_SIDE);
    size_t stride = (size_t)width * (size_t)channels;
    unsigned char *pixels = malloc(stride * (size_t)height);
    if (!pixels) return vae_error(VAE_ERROR_OUT_OF_MEMORY, "%s: out of memory for the picture", path);
    memset(pixels, PNG_GRID_MARGIN_GREY, stride * (size_t)height);
    size_t plane = (size_t)rows * (size_t)cols;
    for (int image = 0; image < count; ++image) {
        size_t top = (size_t)margin + (size_t)(image / columns) * (size_t)(rows + margin);
        size_t left = (size_t)margin + (size_t)(image % columns) * (size_t)(cols + margin);
        const float *values = images + (size_t)image * (size_t)channels * plane;
        /* channel planes (NCHW) to interleaved pixels */
        for (int r = 0; r < rows; ++r)
            for (int c = 0; c < cols; ++c)
                for (int k = 0; k < channels; ++k)
                    pixels[(top + (size_t)r) * stride + (left + (size_t)c) * (size_t)channels + (size_t)k] =
                        grey_level(values[(size_t)k * plane + (size_t)r * cols + c]);
    }
    *out_pixels = pixels;
    *out_width = (int)width;
    *out_height = (int)height;
    return VAE_OK;
}

vae_status vae_png_write_image_grid(const char *path, const float *images, int count, int channels, int rows,
                                    int cols, int grid_columns, int margin) {
    if (!path || !path[0]) return vae_error(VAE_ERROR_INVALID_ARGUMENT, "PNG grid: empty path");
    unsigned char *pixels = NULL;
    int width = 0, height = 0;
    VAE_TRY(render_grid(path, images, count, channels, rows, cols, grid_columns, margin, &pixels, &width, &height));
    vae_status status = write_png_file(path, pixels, width, height,
                                       channels == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_GRAY, channels);
    free(pixels);
    return status;
}

vae_status vae_png_encode_image_grid(const char *name, const float *images, int count, int channels, int rows,
                                     int cols, int grid_columns, int margin, vae_png_bytes *out) {
    memset(out, 0, sizeof *out);
    if (!name) name = "PNG grid";
    unsigned char *pixels = NULL;
    int width = 0, height = 0;
    VAE_TRY(render_grid(name, images, count, channels, rows, cols, grid_columns, margin, &pixels, &width, &height));
    png_write_context context;
    memset(&context, 0, sizeof context);
    context.to_memory = 1;
    int failed = encode_png(&context, pixels, width, height,
                            channels == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_GRAY, channels);
    free(pixels);
    if (failed) {
        free(context.memory);
        return vae_error(VAE_ERROR_OUT_OF_MEMORY, "%s: cannot encode the PNG: %s", name, context.message);
    }
    *out = (vae_png_bytes){.data = context.memory, .size = context.memory_size, .width = width, .height = height,
                           .channels = channels};
    return VAE_OK;
}

vae_status vae_png_write_grid(const char *path, const float *images, int count, int rows, int cols,
                              int grid_columns, int margin) {
    return vae_png_write_image_grid(path, images, count, 1, rows, cols, grid_columns, margin);
}

vae_status vae_png_write_rgb(const char *path, const unsigned char *pixels, int width, int height) {
    if (!path || !path[0]) return vae_error(VAE_ERROR_INVALID_ARGUMENT, "PNG: empty path");
    if (!pixels || width < 1 || height < 1 || width > PNG_MAX_SIDE || height > PNG_MAX_SIDE)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "%s: bad picture %dx%d, expected 1..%d per side", path, width,
                         height, PNG_MAX_SIDE);
    return write_png_file(path, pixels, width, height, PNG_COLOR_TYPE_RGB, 3);
}
