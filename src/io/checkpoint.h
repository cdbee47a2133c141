/* Checkpoints in safetensors format: 8-byte little-endian header length, a
 * JSON header, then raw little-endian tensors. Written to a temporary file,
 * fsynced, renamed and the folder fsynced, so a checkpoint on disk is never
 * half-written. The header's __metadata__ holds string values (config, step,
 * epoch, seed, ...) and a CRC-32 checksum of the data section, checked on
 * load before any byte is trusted. */
#ifndef VAE_CHECKPOINT_H
#define VAE_CHECKPOINT_H

#include <stdint.h>
#include "vae/vae.h"

#define VAE_CHECKPOINT_MAX_RANK 4

typedef struct vae_checkpoint_tensor {
    char name[128];
    int rank;
    int64_t shape[VAE_CHECKPOINT_MAX_RANK];
    const float *data;        /* float32 values (host); writer reads, reader owns */
} vae_checkpoint_tensor;

typedef struct vae_checkpoint_entry {
    char key[64];
    char *value;              /* malloc'd by the reader */
} vae_checkpoint_entry;

typedef struct vae_checkpoint {
    vae_checkpoint_tensor *tensors;
    int tensor_count;
    vae_checkpoint_entry *metadata;
    int metadata_count;
    void *storage_;           /* reader's buffer */
} vae_checkpoint;

/* Writes atomically. metadata: pairs key/value (count pairs). */
vae_status vae_checkpoint_write(const char *path, const vae_checkpoint_tensor *tensors, int tensor_count,
                                const char *const *metadata_keys, const char *const *metadata_values,
                                int metadata_count);
/* Reads and checks everything (sizes, offsets, dtypes, checksum). */
vae_status vae_checkpoint_read(const char *path, vae_checkpoint *out);
/* Same, from memory (fuzzing, tests); name is used in messages. */
vae_status vae_checkpoint_parse(const uint8_t *bytes, size_t size, const char *name, vae_checkpoint *out);
const vae_checkpoint_tensor *vae_checkpoint_find(const vae_checkpoint *checkpoint, const char *name);
const char *vae_checkpoint_metadata(const vae_checkpoint *checkpoint, const char *key);
void vae_checkpoint_free(vae_checkpoint *checkpoint);

#endif
