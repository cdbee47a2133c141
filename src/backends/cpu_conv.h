/* The CPU backend's convolution entries (src/backends/cpu_conv.c), placed in
 * its table by backend_cpu.c; see vae_backend_ops (backend.h) for what they
 * compute. */
#ifndef VAE_CPU_CONV_H
#define VAE_CPU_CONV_H

#include "backends/backend.h"

vae_status vae_cpu_conv2d_forward(vae_backend *backend, const vae_conv_geometry *geometry, int batch, const float *x,
                                  const float *weight, const float *bias, float *y, float *workspace);
vae_status vae_cpu_conv2d_backward(vae_backend *backend, const vae_conv_geometry *geometry, int batch,
                                   const float *x, const float *weight, const float *dy, float *dx, float *dweight,
                                   float *dbias, float *workspace);
vae_status vae_cpu_conv_transpose2d_forward(vae_backend *backend, const vae_conv_geometry *geometry, int batch,
                                            const float *x, const float *weight, const float *bias, float *y,
                                            float *workspace);
vae_status vae_cpu_conv_transpose2d_backward(vae_backend *backend, const vae_conv_geometry *geometry, int batch,
                                             const float *x, const float *weight, const float *dy, float *dx,
                                             float *dweight, float *dbias, float *workspace);

#endif
