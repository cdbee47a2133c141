/* CUDA-graph capture and replay of a training step on the CUDA backend's
 * stream, for the trainer. Everything enqueued through the backend's
 * operations between capture_begin and capture_end is recorded (not run);
 * launch replays it. The operations read the step counter from device
 * memory, so one captured step replays correctly at every step. Operations
 * that wait on the host (copy_to_device, copy_to_host, synchronize, alloc,
 * free) must not be called while capturing.
 *
 * Without CUDA (src/backends/backend_cuda_absent.c) these return VAE_ERROR_DEVICE. */
#ifndef VAE_BACKEND_CUDA_H
#define VAE_BACKEND_CUDA_H

#include "backends/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* backend must come from vae_backend_create_cuda. */
vae_status vae_cuda_graph_capture_begin(vae_backend *backend);
/* Ends the capture and instantiates it into *graph_exec (a cudaGraphExec_t). */
vae_status vae_cuda_graph_capture_end(vae_backend *backend, void **graph_exec);
/* Enqueues one replay on the backend's stream (asynchronous). */
vae_status vae_cuda_graph_launch(vae_backend *backend, void *graph_exec);
/* NULL is allowed. */
void vae_cuda_graph_destroy(void *graph_exec);

/* Data-parallel training (src/distributed/): CUDA backends created after
 * this call use GPU index % device count, one GPU per process by its
 * node-local rank (default 0). */
void vae_cuda_set_device_index(int index);
/* The backend's GPU and its stream (a cudaStream_t), for libraries that
 * enqueue work on it (NCCL's all-reduce, captured with the step). */
int vae_cuda_backend_device(vae_backend *backend);
void *vae_cuda_backend_stream(vae_backend *backend);

#ifdef __cplusplus
}
#endif

#endif
