/* The vae commands that draw pictures of a trained model and export its
 * latent space: reconstruct, interpolate, manifold, scatter, encode. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_common.h"
#include "vae/latent.h"
#include "vae/output.h"
#include "vae/vae.h"

#define DEFAULT_RECONSTRUCT_COUNT 32
#define DEFAULT_INTERPOLATE_STEPS 10
#define DEFAULT_MANIFOLD_SIDE 20
#define DEFAULT_SCATTER_COUNT 5000
#define MAX_MANIFOLD_SIDE 1000
#define MAX_INTERPOLATE_STEPS 1000

/* The scatter plot: a white square, a 1-pixel black frame around the plot
 * area, dots as small discs coloured by label. */
#define SCATTER_SIDE 800
#define SCATTER_INSET 20
#define SCATTER_DOT_RADIUS 2
#define SCATTER_RANGE_PADDING 0.05

/* Ten colours that stay apart on white, one per label modulo 10. */
static const unsigned char scatter_palette[10][3] = {
    {200, 30, 30},  {30, 110, 200}, {40, 160, 60},  {240, 140, 20}, {140, 60, 180},
    {0, 170, 170},  {220, 80, 160}, {120, 80, 40},  {120, 120, 120}, {170, 170, 0}};

static const char *reconstruct_usage =
    "usage: vae reconstruct --checkpoint FILE --out FILE.png [--split train|validation|test] [--n 32]\n"
    "                       [--device cpu|cuda|auto] [--quiet]\n"
    "Writes the first N examples of the split (rows of 8) with, below each row, their\n"
    "reconstructions (the decoded latent means).\n";
static const char *interpolate_usage =
    "usage: vae interpolate --checkpoint FILE --out FILE.png [--split train|validation|test] [--pairs 8]\n"
    "                       [--steps 10] [--device cpu|cuda|auto] [--quiet]\n"
    "For consecutive pairs of examples (0 and 1, 2 and 3, ...), one row per pair: the first input,\n"
    "STEPS pictures decoded along the straight line between the two latent means (endpoints\n"
    "included), and the second input.\n";
static const char *manifold_usage =
    "usage: vae manifold --checkpoint FILE --out FILE.png [--n 20] [--device cpu|cuda|auto] [--quiet]\n"
    "For a model with latent_dim = 2: decodes an N x N grid over the latent plane at the normal\n"
    "quantiles of probabilities evenly spaced from 0.05 to 0.95 (the first latent dimension grows\n"
    "to the right, the second upwards).\n";
static const char *scatter_usage =
    "usage: vae scatter --checkpoint FILE --out FILE.png [--split train|validation|test] [--n 5000]\n"
    "                   [--dims i,j] [--device cpu|cuda|auto] [--quiet]\n"
    "Plots the latent means of the first N examples of a labelled split, latent dimensions i and j\n"
    "(default 0,1), as dots coloured by label (800x800 PNG).\n";
static const char *encode_usage =
    "usage: vae encode --checkpoint FILE --out FILE.npy [--split train|validation|test]\n"
    "                  [--logvar FILE.npy] [--labels FILE.npy] [--device cpu|cuda|auto] [--quiet]\n"
    "Writes the latent means of every example of the split as a float32 [N, latent_dim] .npy file,\n"
    "and with --logvar their log-variances, with --labels the int32 labels [N].\n";

/* Parses, checks --checkpoint and --out, loads the trainer. Returns -1 when
 * the command should go on, else the exit code. */
static int open_checkpoint(int argc, char **argv, const char *usage, const char *command, cli_options *o,
                           vae_trainer **trainer) {
    int parsed = cli_parse_options(argc, argv, usage, o);
    if (parsed) return parsed < 0 ? 0 : parsed;
    if (!o->checkpoint_path || !o->out) {
        char message[128];
        snprintf(message, sizeof message, "%s needs --checkpoint FILE and --out FILE", command);
        return cli_usage_error(usage, message, NULL);
    }
    vae_status status = cli_load_checkpoint(o, trainer);
    if (status != VAE_OK) return cli_fail(status);
    return -1;
}

/* The image shape, or 2 after a message when the data are not images. */
static int image_shape(vae_trainer *trainer, const cli_options *o, int *channels, int *rows, int *cols) {
    vae_trainer_image_shape(trainer, rows, cols);
    *channels = vae_trainer_image_channels(trainer);
    if (*rows > 0 && *cols > 0 && *channels > 0) return 0;
    fprintf(stderr, "vae: error: %s: the model's data are not images (no image shape)\n", o->checkpoint_path);
    return 2;
}

/* min(wanted, the split's size); an empty split gives wanted, so that the
 * library's error names the split and its size. */
static long examples_available(vae_trainer *trainer, const cli_options *o, long wanted, vae_status *status) {
    long size = 0;
    *status = vae_trainer_split_size(trainer, o->split, &size);
    return size > 0 && size < wanted ? size : wanted;
}

static vae_status out_of_memory(const char *command) {
    return cli_error(VAE_ERROR_OUT_OF_MEMORY, "%s: out of memory", command);
}

static int finish(vae_trainer *trainer, vae_status status, const cli_options *o, const char *what) {
    if (status == VAE_OK && !o->quiet) fprintf(stderr, "vae: wrote %s to %s\n", what, o->out);
    vae_trainer_destroy(trainer);
    return status == VAE_OK ? 0 : cli_fail(status);
}

int cli_command_reconstruct(int argc, char **argv) {
    cli_options o;
    vae_trainer *trainer = NULL;
    int code = open_checkpoint(argc, argv, reconstruct_usage, "reconstruct", &o, &trainer);
    if (code >= 0) return code;
    int channels, rows, cols;
    if (image_shape(trainer, &o, &channels, &rows, &cols)) { vae_trainer_destroy(trainer); return 2; }
    vae_status status;
    long count = examples_available(trainer, &o, o.count_given ? o.count : DEFAULT_RECONSTRUCT_COUNT, &status);
    size_t values = (size_t)count * (size_t)channels * (size_t)rows * (size_t)cols;
    float *inputs = malloc(sizeof(float) * values), *reconstructions = malloc(sizeof(float) * values);
    if (status == VAE_OK && (!inputs || !reconstructions)) status = out_of_memory("reconstruct");
    if (status == VAE_OK) status = vae_trainer_reconstruct(trainer, o.split, 0, (int)count, inputs, reconstructions);
    if (status == VAE_OK)
        status = vae_write_image_comparison_grid(o.out, inputs, reconstructions, (int)count, channels, rows, cols,
                                           VAE_COMPARISON_COLUMNS);
    free(inputs);
    free(reconstructions);
    char what[64];
    snprintf(what, sizeof what, "%ld inputs and reconstructions", count);
    return finish(trainer, status, &o, what);
}

int cli_command_interpolate(int argc, char **argv) {
    cli_options o;
    vae_trainer *trainer = NULL;
    int code = open_checkpoint(argc, argv, interpolate_usage, "interpolate", &o, &trainer);
    if (code >= 0) return code;
    int channels, rows, cols;
    if (image_shape(trainer, &o, &channels, &rows, &cols)) { vae_trainer_destroy(trainer); return 2; }
    int steps = o.steps_given ? o.steps : DEFAULT_INTERPOLATE_STEPS;
    if (steps < 2 || steps > MAX_INTERPOLATE_STEPS) {
        vae_trainer_destroy(trainer);
        return cli_usage_error(interpolate_usage, "--steps counts both endpoints: it must be in 2..1000", NULL);
    }
    int cells = steps + 2;
    size_t values = (size_t)o.pairs * (size_t)cells * (size_t)channels * (size_t)rows * (size_t)cols;
    float *images = malloc(sizeof(float) * values);
    vae_status status = images ? VAE_OK : out_of_memory("interpolate");
    if (status == VAE_OK) status = vae_trainer_interpolate(trainer, o.split, 0, o.pairs, steps, images);
    if (status == VAE_OK)
        status = vae_png_write_image_grid(o.out, images, o.pairs * cells, channels, rows, cols, cells, VAE_GRID_MARGIN);
    free(images);
    char what[64];
    snprintf(what, sizeof what, "%d interpolations of %d steps", o.pairs, steps);
    return finish(trainer, status, &o, what);
}

int cli_command_manifold(int argc, char **argv) {
    cli_options o;
    vae_trainer *trainer = NULL;
    int code = open_checkpoint(argc, argv, manifold_usage, "manifold", &o, &trainer);
    if (code >= 0) return code;
    int channels, rows, cols;
    if (image_shape(trainer, &o, &channels, &rows, &cols)) { vae_trainer_destroy(trainer); return 2; }
    int latent = vae_trainer_config(trainer)->latent_dim;
    if (latent != 2) {
        fprintf(stderr, "vae: error: %s: manifold draws the latent plane of a model with model.latent_dim = 2; this "
                        "model has latent_dim = %d (use 'vae scatter' or 'vae interpolate')\n",
                o.checkpoint_path, latent);
        vae_trainer_destroy(trainer);
        return 2;
    }
    int side = o.count_given ? o.count : DEFAULT_MANIFOLD_SIDE;
    if (side > MAX_MANIFOLD_SIDE) {
        vae_trainer_destroy(trainer);
        return cli_usage_error(manifold_usage, "--n for manifold is the grid side: at most 1000", NULL);
    }
    float *images = malloc(sizeof(float) * (size_t)side * (size_t)side * (size_t)channels * (size_t)rows * (size_t)cols);
    vae_status status = images ? VAE_OK : out_of_memory("manifold");
    if (status == VAE_OK) status = vae_trainer_manifold(trainer, side, images);
    /* No margin: the grid reads as one continuous picture of the plane. */
    if (status == VAE_OK) status = vae_png_write_image_grid(o.out, images, side * side, channels, rows, cols, side, 0);
    free(images);
    char what[64];
    snprintf(what, sizeof what, "a %dx%d latent manifold", side, side);
    return finish(trainer, status, &o, what);
}

static void draw_dot(unsigned char *pixels, int x, int y, const unsigned char colour[3]) {
    for (int dy = -SCATTER_DOT_RADIUS; dy <= SCATTER_DOT_RADIUS; ++dy)
        for (int dx = -SCATTER_DOT_RADIUS; dx <= SCATTER_DOT_RADIUS; ++dx) {
            if (dx * dx + dy * dy > SCATTER_DOT_RADIUS * SCATTER_DOT_RADIUS + 1) continue;
            int px = x + dx, py = y + dy;
            /* Dots stay inside the frame. */
            if (px <= SCATTER_INSET || py <= SCATTER_INSET || px >= SCATTER_SIDE - 1 - SCATTER_INSET ||
                py >= SCATTER_SIDE - 1 - SCATTER_INSET)
                continue;
            memcpy(pixels + ((size_t)py * SCATTER_SIDE + (size_t)px) * 3, colour, 3);
        }
}

/* points [count, 2]; the range of each axis, padded, fills the frame. */
static void render_scatter(const float *points, const int32_t *labels, long count, unsigned char *pixels) {
    memset(pixels, 255, (size_t)SCATTER_SIDE * SCATTER_SIDE * 3);
    int low_edge = SCATTER_INSET, high_edge = SCATTER_SIDE - 1 - SCATTER_INSET;
    for (int i = low_edge; i <= high_edge; ++i) {
        int frame[4][2] = {{i, low_edge}, {i, high_edge}, {low_edge, i}, {high_edge, i}};
        for (int k = 0; k < 4; ++k) memset(pixels + ((size_t)frame[k][1] * SCATTER_SIDE + (size_t)frame[k][0]) * 3, 0, 3);
    }
    double low[2] = {INFINITY, INFINITY}, high[2] = {-INFINITY, -INFINITY};
    for (long i = 0; i < count; ++i)
        for (int a = 0; a < 2; ++a) {
            double v = points[2 * i + a];
            if (!isfinite(v)) continue;
            if (v < low[a]) low[a] = v;
            if (v > high[a]) high[a] = v;
        }
    for (int a = 0; a < 2; ++a) {
        if (!(low[a] <= high[a])) low[a] = -1.0, high[a] = 1.0;   /* no finite point */
        if (high[a] - low[a] < 1e-12) low[a] -= 1.0, high[a] += 1.0; /* one value */
        double padding = SCATTER_RANGE_PADDING * (high[a] - low[a]);
        low[a] -= padding;
        high[a] += padding;
    }
    double span = (double)(high_edge - low_edge);
    for (long i = 0; i < count; ++i) {
        double u = points[2 * i], v = points[2 * i + 1];
        if (!isfinite(u) || !isfinite(v)) continue;
        int x = low_edge + (int)lround((u - low[0]) / (high[0] - low[0]) * span);
        int y = high_edge - (int)lround((v - low[1]) / (high[1] - low[1]) * span); /* up is positive */
        int colour = ((labels[i] % 10) + 10) % 10;
        draw_dot(pixels, x, y, scatter_palette[colour]);
    }
}

int cli_command_scatter(int argc, char **argv) {
    cli_options o;
    vae_trainer *trainer = NULL;
    int code = open_checkpoint(argc, argv, scatter_usage, "scatter", &o, &trainer);
    if (code >= 0) return code;
    int latent = vae_trainer_config(trainer)->latent_dim;
    if (o.dims[0] >= latent || o.dims[1] >= latent) {
        fprintf(stderr, "vae: error: --dims %d,%d: the model's latent dimensions are 0..%d\n", o.dims[0], o.dims[1],
                latent - 1);
        vae_trainer_destroy(trainer);
        return 2;
    }
    int has_labels = 0;
    vae_status status = vae_trainer_split_has_labels(trainer, o.split, &has_labels);
    if (status == VAE_OK && !has_labels) {
        fprintf(stderr, "vae: error: the %s split of %s has no labels; scatter colours the points by label\n",
                o.split, vae_trainer_config(trainer)->data_path);
        vae_trainer_destroy(trainer);
        return 2;
    }
    long count = 0;
    if (status == VAE_OK) count = examples_available(trainer, &o, o.count_given ? o.count : DEFAULT_SCATTER_COUNT, &status);
    float *mu = malloc(sizeof(float) * (size_t)(count > 0 ? count : 1) * (size_t)latent);
    float *points = malloc(sizeof(float) * (size_t)(count > 0 ? count : 1) * 2);
    int32_t *labels = malloc(sizeof(int32_t) * (size_t)(count > 0 ? count : 1));
    unsigned char *pixels = malloc((size_t)SCATTER_SIDE * SCATTER_SIDE * 3);
    if (status == VAE_OK && (!mu || !points || !labels || !pixels)) status = out_of_memory("scatter");
    if (status == VAE_OK) status = vae_trainer_encode(trainer, o.split, 0, count, mu, NULL, labels);
    if (status == VAE_OK) {
        for (long i = 0; i < count; ++i) {
            points[2 * i] = mu[(size_t)i * latent + o.dims[0]];
            points[2 * i + 1] = mu[(size_t)i * latent + o.dims[1]];
        }
        render_scatter(points, labels, count, pixels);
        status = vae_png_write_rgb(o.out, pixels, SCATTER_SIDE, SCATTER_SIDE);
    }
    free(mu);
    free(points);
    free(labels);
    free(pixels);
    char what[96];
    snprintf(what, sizeof what, "a scatter plot of %ld latent means (dimensions %d and %d)", count, o.dims[0], o.dims[1]);
    return finish(trainer, status, &o, what);
}

int cli_command_encode(int argc, char **argv) {
    cli_options o;
    vae_trainer *trainer = NULL;
    int code = open_checkpoint(argc, argv, encode_usage, "encode", &o, &trainer);
    if (code >= 0) return code;
    int latent = vae_trainer_config(trainer)->latent_dim;
    long count = 0;
    vae_status status = vae_trainer_split_size(trainer, o.split, &count);
    size_t allocated = (size_t)(count > 0 ? count : 1);
    float *mu = malloc(sizeof(float) * allocated * (size_t)latent);
    float *logvar = o.logvar_path ? malloc(sizeof(float) * allocated * (size_t)latent) : NULL;
    int32_t *labels = o.labels_path ? malloc(sizeof(int32_t) * allocated) : NULL;
    if (status == VAE_OK && (!mu || (o.logvar_path && !logvar) || (o.labels_path && !labels)))
        status = out_of_memory("encode");
    /* An empty split gets the library's message naming it. */
    if (status == VAE_OK) status = vae_trainer_encode(trainer, o.split, 0, count, mu, logvar, labels);
    if (status == VAE_OK) status = vae_npy_write_f32(o.out, mu, count, latent);
    if (status == VAE_OK && logvar) status = vae_npy_write_f32(o.logvar_path, logvar, count, latent);
    if (status == VAE_OK && labels) status = vae_npy_write_i32(o.labels_path, labels, count);
    free(mu);
    free(logvar);
    free(labels);
    char what[96];
    snprintf(what, sizeof what, "the latent means [%ld, %d] of the %s split", count, latent, o.split);
    return finish(trainer, status, &o, what);
}
