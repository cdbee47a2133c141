/* Stand-in for the CUDA backend in builds without CUDA (CMake compiles this
 * file instead of src/backends/backend_cuda.c when nvcc is not found): every entry
 * point fails with a message that says how to get a CUDA build. */
#include "backends/backend_cuda.h"

#include "backends/backend.h"
#include "base/error.h"

#define VAE_NO_CUDA_MESSAGE "this build has no CUDA backend (configure with nvcc present or -DVAE_CUDA=ON)"

vae_status vae_backend_create_cuda(vae_backend **out, vae_precision precision) {
    (void)precision;
    if (out != NULL) *out = NULL;
    return vae_error(VAE_ERROR_DEVICE, VAE_NO_CUDA_MESSAGE);
}

int vae_backend_cuda_available(void) { return 0; }

vae_status vae_cuda_graph_capture_begin(vae_backend *backend) {
    (void)backend;
    return vae_error(VAE_ERROR_DEVICE, "CUDA graph capture: " VAE_NO_CUDA_MESSAGE);
}

vae_status vae_cuda_graph_capture_end(vae_backend *backend, void **graph_exec) {
    (void)backend;
    if (graph_exec != NULL) *graph_exec = NULL;
    return vae_error(VAE_ERROR_DEVICE, "CUDA graph capture: " VAE_NO_CUDA_MESSAGE);
}

vae_status vae_cuda_graph_launch(vae_backend *backend, void *graph_exec) {
    (void)backend;
    (void)graph_exec;
    return vae_error(VAE_ERROR_DEVICE, "CUDA graph launch: " VAE_NO_CUDA_MESSAGE);
}

void vae_cuda_graph_destroy(void *graph_exec) { (void)graph_exec; }

void vae_cuda_set_device_index(int index) { (void)index; }
int vae_cuda_backend_device(vae_backend *backend) { (void)backend; return -1; }
void *vae_cuda_backend_stream(vae_backend *backend) { (void)backend; return NULL; }
