/* Shared by the files of src/distributed/: the NCCL gradient path
 * (nccl_allreduce.c, or nccl_absent.c in builds without NCCL) and the
 * process-ending hook of its watchdog. */
#ifndef VAE_DISTRIBUTED_INTERNAL_H
#define VAE_DISTRIBUTED_INTERNAL_H

#include <stddef.h>

#include "backends/backend.h"

/* Creates the NCCL communicator for the CUDA backend's GPU (unique id from
 * rank 0 by vae_distributed_broadcast) and starts its watchdog. */
vae_status vae_nccl_prepare(vae_backend *backend);
/* ncclAllReduce(ncclAvg) in place on the backend's stream. */
vae_status vae_nccl_mean(vae_backend *backend, float *values, size_t count);
void vae_nccl_heartbeat(void);
void vae_nccl_device_idle(void);
/* Stops the watchdog and destroys the communicator. */
void vae_nccl_finalize(void);

/* Calls the installed fatal handler (never returns). */
void vae_distributed_fatal(int exit_code, const char *message);

#endif
