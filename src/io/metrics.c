#include "io/metrics.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "io/atomic_file.h"
#include "vae/output.h"

struct vae_metrics {
    FILE *file;
    char path[VAE_PATH_MAX + 64];
};

vae_status vae_metrics_open(vae_metrics **out, const char *path, int append) {
    *out = NULL;
    vae_metrics *metrics = calloc(1, sizeof *metrics);
    if (!metrics) return vae_error(VAE_ERROR_OUT_OF_MEMORY, "metrics: out of memory");
    snprintf(metrics->path, sizeof metrics->path, "%s", path);
    vae_status status = vae_append_file_open(&metrics->file, path, append, "metrics");
    if (status != VAE_OK) {
        free(metrics);
        return status;
    }
    *out = metrics;
    return VAE_OK;
}

/* JSON has no NaN or infinity: such values are written as null. */
static int append_number(char *buffer, size_t size, size_t used, const char *key, double value) {
    if (used >= size) return (int)used;
    int n = isfinite(value) ? snprintf(buffer + used, size - used, ",\"%s\":%.9g", key, value)
                            : snprintf(buffer + used, size - used, ",\"%s\":null", key);
    return n < 0 ? (int)used : (int)(used + (size_t)n);
}

void vae_metrics_format(const vae_metrics_record *r, char *buffer, size_t size) {
    int used = snprintf(buffer, size, "{\"kind\":\"%s\"", r->kind);
    if (r->split) used += snprintf(buffer + used, size - (size_t)used, ",\"split\":\"%s\"", r->split);
    if (r->objective) used += snprintf(buffer + used, size - (size_t)used, ",\"objective\":\"%s\"", r->objective);
    used += snprintf(buffer + used, size - (size_t)used, ",\"epoch\":%ld,\"step\":%ld", r->epoch, r->step);
    used = append_number(buffer, size, (size_t)used, "loss", r->loss);
    used = append_number(buffer, size, (size_t)used, "elbo", r->elbo);
    used = append_number(buffer, size, (size_t)used, "reconstruction", r->reconstruction);
    used = append_number(buffer, size, (size_t)used, "kl", r->kl);
    if (!isnan(r->beta)) used = append_number(buffer, size, (size_t)used, "beta", r->beta);
    if (!isnan(r->lr)) used = append_number(buffer, size, (size_t)used, "lr", r->lr);
    if (!isnan(r->grad_norm)) used = append_number(buffer, size, (size_t)used, "grad_norm", r->grad_norm);
    if (!isnan(r->samples_per_second))
        used = append_number(buffer, size, (size_t)used, "samples_per_s", r->samples_per_second);
    used = append_number(buffer, size, (size_t)used, "seconds", r->seconds);
    if (r->skipped_steps >= 0) used = append_number(buffer, size, (size_t)used, "skipped_steps", (double)r->skipped_steps);
    if (r->iwae_k > 0) {
        used = append_number(buffer, size, (size_t)used, "log_likelihood", r->log_likelihood);
        used = append_number(buffer, size, (size_t)used, "iwae_k", r->iwae_k);
    }
    if (r->active_units >= 0) used = append_number(buffer, size, (size_t)used, "active_units", r->active_units);
    if ((size_t)used + 2 < size) { buffer[used] = '}'; buffer[used + 1] = '\0'; }
}

vae_status vae_metrics_write(vae_metrics *metrics, const vae_metrics_record *record) {
    char line[1024];
    vae_metrics_format(record, line, sizeof line);
    return vae_append_file_write_line(metrics->file, metrics->path, line, "metrics");
}

vae_status vae_metrics_sync(vae_metrics *metrics) {
    if (!metrics) return VAE_OK;
    return vae_append_file_sync(metrics->file, metrics->path, "metrics");
}

vae_status vae_metrics_close(vae_metrics *metrics) {
    if (!metrics) return VAE_OK;
    vae_status status = VAE_OK;
    errno = 0;
    if (fclose(metrics->file) != 0) status = vae_file_write_error(metrics->path, "metrics", errno);
    free(metrics);
    return status;
}

/* The "step" of a metrics line, or -1. */
static long line_step(const char *line) {
    const char *key = strstr(line, "\"step\":");
    if (!key) return -1;
    return strtol(key + 7, NULL, 10);
}

vae_status vae_metrics_truncate_after(const char *path, long step) {
    FILE *in = fopen(path, "r");
    if (!in) return errno == ENOENT ? VAE_OK : vae_error(VAE_ERROR_IO, "cannot read %s: %s", path, strerror(errno));
    vae_atomic_file out;
    vae_status status = vae_atomic_file_open(&out, path, "metrics");
    if (status != VAE_OK) {
        fclose(in);
        return status;
    }
    char line[4096];
    while (fgets(line, sizeof line, in)) {
        /* Only whole lines survive: a line cut by a kill has no newline. */
        size_t length = strlen(line);
        if (length == 0 || line[length - 1] != '\n') continue;
        if (line_step(line) <= step) vae_atomic_file_write(&out, line, length);
    }
    int read_failed = ferror(in);
    fclose(in);
    if (read_failed) {
        vae_atomic_file_abort(&out);
        return vae_error(VAE_ERROR_IO, "cannot read %s", path);
    }
    return vae_atomic_file_commit(&out);
}

vae_status vae_eval_result_to_json(const vae_eval_result *result, const char *split, uint64_t step, char **out_text) {
    if (!result || !split || !out_text || result->latent_dim < 0 || (result->latent_dim > 0 && !result->kl_per_dimension))
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "vae_eval_result_to_json: missing result, split or output");
    *out_text = NULL;
    vae_metrics_record record = {
        .kind = "eval", .split = split, .epoch = -1, .step = (long)step, .loss = -result->elbo,
        .elbo = result->elbo, .reconstruction = result->reconstruction, .kl = result->kl, .beta = NAN, .lr = NAN,
        .samples_per_second = NAN, .seconds = result->seconds, .grad_norm = NAN, .skipped_steps = -1,
        .log_likelihood = result->log_likelihood, .iwae_k = result->iwae_k, .active_units = result->active_units};
    char line[1024];
    vae_metrics_format(&record, line, sizeof line);
    /* The record without its closing brace, then the points, the precision and
     * each dimension's KL (at most 16 characters a number). */
    size_t capacity = strlen(line) + 96 + 18 * (size_t)result->latent_dim + 64 + 32 * (size_t)result->group_count;
    char *text = malloc(capacity);
    if (!text) return vae_error(VAE_ERROR_OUT_OF_MEMORY, "vae_eval_result_to_json: out of memory");
    int used = snprintf(text, capacity, "%.*s,\"points\":%ld,\"precision\":\"%s\",\"kl_per_dimension\":[",
                        (int)(strlen(line) - 1), line, result->points, vae_precision_name(result->precision));
    for (int j = 0; j < result->latent_dim && used > 0 && (size_t)used < capacity; ++j) {
        double value = result->kl_per_dimension[j];
        used += isfinite(value) ? snprintf(text + used, capacity - (size_t)used, "%s%.6g", j ? "," : "", value)
                                : snprintf(text + used, capacity - (size_t)used, "%snull", j ? "," : "");
    }
    if (used > 0 && (size_t)used < capacity) used += snprintf(text + used, capacity - (size_t)used, "]");
    /* hierarchical models: each group's KL and active units, data side first */
    if (result->group_count > 0 && used > 0 && (size_t)used < capacity) {
        used += snprintf(text + used, capacity - (size_t)used, ",\"group_kl\":[");
        for (int g = 0; g < result->group_count && used > 0 && (size_t)used < capacity; ++g)
            used += snprintf(text + used, capacity - (size_t)used, "%s%.6g", g ? "," : "", result->group_kl[g]);
        if (used > 0 && (size_t)used < capacity)
            used += snprintf(text + used, capacity - (size_t)used, "],\"group_active_units\":[");
        for (int g = 0; g < result->group_count && used > 0 && (size_t)used < capacity; ++g)
            used += snprintf(text + used, capacity - (size_t)used, "%s%d", g ? "," : "", result->group_active_units[g]);
        if (used > 0 && (size_t)used < capacity) used += snprintf(text + used, capacity - (size_t)used, "]");
    }
    if (used > 0 && (size_t)used + 1 < capacity) {
        text[used] = '}';
        text[used + 1] = '\0';
    } else {
        free(text);
        return vae_error(VAE_ERROR_INTERNAL, "vae_eval_result_to_json: text outgrew its bound");
    }
    *out_text = text;
    return VAE_OK;
}
