/* Picks a backend for --device cpu|cuda|auto. */
#include <stdio.h>

#include "backends/backend.h"
#include "base/error.h"

vae_status vae_backend_create(vae_backend **out, vae_device_kind device, vae_precision precision) {
    if (device == VAE_DEVICE_CPU) return vae_backend_create_cpu(out);
    if (device == VAE_DEVICE_CUDA) return vae_backend_create_cuda(out, precision);
    if (vae_backend_cuda_available()) {
        vae_status status = vae_backend_create_cuda(out, precision);
        if (status == VAE_OK) return VAE_OK;
    }
    return vae_backend_create_cpu(out);
}
