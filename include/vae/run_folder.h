/* vae-engine public C API: a run folder belongs to one run.
 *
 * vae_trainer_train claims its output folder itself; a program (the `vae`
 * command) may claim it earlier, to refuse at once before loading data.
 * Claims are counted per process: a second claim of a folder this process
 * already holds succeeds (and needs its own release); a claim by another
 * process is refused while the first holder lives.
 *
 * The lock is flock(2) on DIR/.lock, which holds the holder's pid as text.
 * The kernel drops the lock when the holder's last descriptor closes, which
 * includes the process dying by any signal (SIGKILL too): a folder is free
 * again at once, with no stale lock to clean up. */
#ifndef VAE_RUN_FOLDER_H
#define VAE_RUN_FOLDER_H

#include "vae/vae.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The name of the lock file inside a run folder. */
#define VAE_RUN_FOLDER_LOCK_NAME ".lock"

typedef enum vae_run_start {
    /* A new run: refuses a folder that already holds DIR/checkpoint.safetensors
     * (VAE_ERROR_INVALID_ARGUMENT, naming the file): a trained model is never
     * replaced by accident. */
    VAE_RUN_START_NEW = 0,
    /* Continues the run whose checkpoint is in the folder. */
    VAE_RUN_START_RESUME = 1,
    /* Starts over: removes the earlier run's checkpoints
     * (checkpoint*.safetensors) and epoch pictures; metrics.jsonl and
     * config.ini are rewritten when training starts. */
    VAE_RUN_START_OVER = 2
} vae_run_start;

typedef struct vae_run_folder vae_run_folder;

/* Creates path (and missing parents), takes its lock and applies start.
 * Another process holding it: VAE_ERROR_BUSY, naming the folder and the
 * holder's pid. Stale temporary files of the engine (a holder killed while
 * writing) are removed once the lock is held. */
vae_status vae_run_folder_claim(const char *path, vae_run_start start, vae_run_folder **out);
/* Drops this claim; the lock goes with the process's last claim. NULL is fine. */
void vae_run_folder_release(vae_run_folder *folder);

#ifdef __cplusplus
}
#endif
#endif
