/* TensorBoard event files: DIR/events.out.tfevents.<seconds>.<host>, one
 * framed record (io/record_framing.h) per Event message (the protobuf-c
 * messages of tensorboard_event.proto). The first Event names the format
 * ("brain.Event:2"); each later one holds a Summary of scalars or of one
 * PNG image. Every write is flushed: a crashed run keeps what it logged. */
#ifndef VAE_EVENT_FILE_H
#define VAE_EVENT_FILE_H

#include <stddef.h>

#include "vae/vae.h"

typedef struct vae_event_file vae_event_file;

typedef struct vae_event_scalar {
    const char *tag;
    double value; /* written as float, TensorBoard's simple_value (NaN and infinities too) */
} vae_event_scalar;

/* Creates a new event file in folder (never appends to an earlier one: a
 * name taken already gets a suffix .1, .2, ...). */
vae_status vae_event_file_open(vae_event_file **out, const char *folder);
/* The file's path (for messages and tests). */
const char *vae_event_file_path(const vae_event_file *events);
/* One Event at step holding the scalars. */
vae_status vae_event_file_write_scalars(vae_event_file *events, long step, const vae_event_scalar *scalars,
                                        int count);
/* One Event at step holding a PNG picture (png: the whole encoded file) of
 * width x height pixels and channels 1 (grey) or 3 (RGB). */
vae_status vae_event_file_write_image(vae_event_file *events, long step, const char *tag, const unsigned char *png,
                                      size_t png_size, int width, int height, int channels);
/* Closes and reports a failed close; NULL is fine. */
vae_status vae_event_file_close(vae_event_file *events);

#endif
