/* Gathers this step's batch from the device-resident dataset: row r of the
 * batch is dataset row permutation[vae_gather_slot(...)] (one process:
 * (step % steps_per_epoch) * rows + r; data parallel: the global row),
 * scaled into [0,1] and optionally binarised. The step is read from device
 * memory, so the kernel replays correctly inside a CUDA graph. */
#include "vae_kernels.h"
#include "vae_philox.h"
#include "vae_step_math.h"
#include "vae_curand_philox.h"
#include "vae_cuda_common.cuh"

/* One thread per (batch row, 4 columns): the 4 columns share one Philox
 * block, exactly as the CPU's vae_uniform4(seed, subsequence, column). */
__global__ void gather_batch_kernel(const void *dataset, const int32_t *permutation, int dim, int rows,
                                    vae_gather_settings settings, const vae_step_counter *counter, float *x) {
    const int groups_per_row = (dim + 3) / 4;
    const size_t total = (size_t)rows * (size_t)groups_per_row;
    const uint64_t step = counter->step;
    const uint64_t batch = step % (uint64_t)settings.steps_per_epoch;
    for (size_t item = (size_t)blockIdx.x * blockDim.x + threadIdx.x; item < total;
         item += (size_t)gridDim.x * blockDim.x) {
        const int row = (int)(item / (size_t)groups_per_row);
        const int column0 = (int)(item % (size_t)groups_per_row) * 4;
        const int64_t source_row = permutation[vae_gather_slot(&settings, batch, rows, row)];
        const size_t source_offset = (size_t)source_row * (size_t)dim;

        float uniform[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        if (settings.binarize == VAE_BINARIZE_DYNAMIC)
            vae_curand_uniform4(settings.seed,
                                vae_philox_subsequence(step, settings.random_purpose,
                                                       vae_gather_row_address(&settings, row)),
                                (uint64_t)column0, uniform);
        for (int k = 0; k < 4; ++k) {
            const int column = column0 + k;
            if (column >= dim) break;
            float raw = settings.dtype == VAE_DTYPE_U8
                            ? (float)((const uint8_t *)dataset)[source_offset + column]
                            : ((const float *)dataset)[source_offset + column];
            x[(size_t)row * dim + column] =
                vae_binarize_value(raw * settings.scale, settings.binarize, settings.threshold, uniform[k]);
        }
    }
}

VAE_LAUNCHER cudaError_t vae_launch_gather_batch(const void *dataset, const int32_t *permutation, int dim, int rows,
                                                 vae_gather_settings settings, const vae_step_counter *counter,
                                                 float *x, cudaStream_t stream) {
    size_t total = (size_t)rows * (size_t)((dim + 3) / 4);
    if (total == 0) return cudaSuccess;
    VAE_LAUNCH(gather_batch_kernel, vae_grid_for(total), VAE_BLOCK, 0, stream)(
        dataset, permutation, dim, rows, settings, counter, x);
    return cudaGetLastError();
}
