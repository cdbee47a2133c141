/* libFuzzer target: any byte string given to the checkpoint parser must be
 * refused or accepted cleanly, never read out of bounds or leak. */
#include <stddef.h>
#include <stdint.h>

#include "io/checkpoint.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    vae_checkpoint checkpoint;
    if (vae_checkpoint_parse(data, size, "fuzz", &checkpoint) == VAE_OK) {
        /* Touch every value so that a tensor pointing outside storage is seen. */
        volatile float sink = 0.0f;
        for (int i = 0; i < checkpoint.tensor_count; ++i) {
            const vae_checkpoint_tensor *tensor = &checkpoint.tensors[i];
            int64_t count = 1;
            for (int d = 0; d < tensor->rank; ++d) count *= tensor->shape[d];
            for (int64_t k = 0; k < count; ++k) sink += tensor->data[k];
        }
        (void)sink;
    }
    vae_checkpoint_free(&checkpoint);
    return 0;
}
