/* metrics.jsonl: one JSON object per log line or evaluation, appended and
 * flushed line by line, synced to disk before each checkpoint
 * (io/atomic_file.h). */
#ifndef VAE_METRICS_H
#define VAE_METRICS_H
#include "vae/vae.h"

typedef struct vae_metrics vae_metrics;

typedef struct vae_metrics_record {
    const char *kind;          /* "train" or "eval" */
    const char *split;         /* eval: the split; NULL for train */
    const char *objective;     /* train: "iwae" when loss is the IWAE loss (model.objective); NULL: left out (elbo) */
    long epoch, step;
    double loss, elbo, reconstruction, kl, beta, lr, samples_per_second, seconds;
    double grad_norm;          /* train: the global gradient norm of the last step (before clipping); NaN: left out */
    long skipped_steps;        /* < 0: left out */
    double log_likelihood;     /* NaN: left out */
    int iwae_k;
    int active_units;          /* < 0: left out */
} vae_metrics_record;

/* append: keep earlier lines (resume); else start the file afresh. */
vae_status vae_metrics_open(vae_metrics **out, const char *path, int append);
vae_status vae_metrics_write(vae_metrics *metrics, const vae_metrics_record *record);
/* fsync: the lines written so far are on disk (the trainer calls it before
 * each checkpoint; io/atomic_file.h says why not after every line). */
vae_status vae_metrics_sync(vae_metrics *metrics);
/* On resume: drops the lines of path whose step is past step (they belong
 * to the interrupted run's lost tail), atomically. A missing file is fine. */
vae_status vae_metrics_truncate_after(const char *path, long step);
/* Closes and reports a failed flush; NULL is fine. */
vae_status vae_metrics_close(vae_metrics *metrics);
/* The same record as one JSON line into buffer (for `vae eval` output). */
void vae_metrics_format(const vae_metrics_record *record, char *buffer, size_t size);

#endif
