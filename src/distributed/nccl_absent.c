/* Builds without NCCL (no CUDA, or no nccl.h/libnccl in the toolkit): the
 * CUDA backend cannot train with more than one process. */
#include "distributed/distributed_internal.h"

#include "base/error.h"

vae_status vae_nccl_prepare(vae_backend *backend) {
    (void)backend;
    return vae_error(VAE_ERROR_DEVICE,
                     "data-parallel training on CUDA needs NCCL, and this build has none (NCCL comes with the CUDA "
                     "toolkit: reconfigure where nccl.h and libnccl are found)");
}

vae_status vae_nccl_mean(vae_backend *backend, float *values, size_t count) {
    (void)backend; (void)values; (void)count;
    return vae_error(VAE_ERROR_DEVICE, "data-parallel training on CUDA needs NCCL, and this build has none");
}

void vae_nccl_heartbeat(void) {}
void vae_nccl_device_idle(void) {}
void vae_nccl_finalize(void) {}
