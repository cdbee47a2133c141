#define _POSIX_C_SOURCE 200809L
#include "io/event_file.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/error.h"
#include "io/atomic_file.h"
#include "io/record_framing.h"
#include "tensorboard_event.pb-c.h"

/* The format TensorBoard expects in a file's first Event. */
#define EVENT_FILE_VERSION "brain.Event:2"
/* Suffixes tried when the name is taken (two runs started within a second). */
#define EVENT_FILE_NAME_TRIES 100
#define EVENT_FILE_MAX_SCALARS 64

struct vae_event_file {
    FILE *stream;
    char path[VAE_PATH_MAX + 384];
};

static double wall_time_now(void) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (double)now.tv_sec + 1e-9 * (double)now.tv_nsec;
}

/* Packs event and writes it as one record. */
static vae_status write_event(vae_event_file *events, const Vae__Tensorboard__Event *event) {
    size_t size = vae__tensorboard__event__get_packed_size(event);
    uint8_t *bytes = malloc(size ? size : 1);
    if (!bytes) return vae_error(VAE_ERROR_OUT_OF_MEMORY, "%s: out of memory for an event", events->path);
    size_t packed = vae__tensorboard__event__pack(event, bytes);
    vae_status status = packed == size ? vae_record_write(events->stream, events->path, bytes, size)
                                       : vae_error(VAE_ERROR_INTERNAL, "%s: an event packed to %zu bytes, not %zu",
                                                   events->path, packed, size);
    free(bytes);
    return status;
}

/* Writes an Event at step holding a Summary of these values. */
static vae_status write_summary_event(vae_event_file *events, long step, Vae__Tensorboard__Summary__Value **values,
                                      size_t count) {
    Vae__Tensorboard__Summary summary = VAE__TENSORBOARD__SUMMARY__INIT;
    summary.n_value = count;
    summary.value = values;
    Vae__Tensorboard__Event event = VAE__TENSORBOARD__EVENT__INIT;
    event.wall_time = wall_time_now();
    event.step = step;
    event.what_case = VAE__TENSORBOARD__EVENT__WHAT_SUMMARY;
    event.summary = &summary;
    return write_event(events, &event);
}

/* Opens folder/events.out.tfevents.SECONDS.HOST[.N], a name nobody has. */
static vae_status create_file(vae_event_file *events, const char *folder) {
    char host[256];
    if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "localhost");
    host[sizeof host - 1] = '\0';
    /* A host name with a slash would name another folder. */
    for (char *c = host; *c; ++c)
        if (*c == '/') *c = '_';
    long long seconds = (long long)time(NULL);
    for (int attempt = 0; attempt < EVENT_FILE_NAME_TRIES; ++attempt) {
        int length = attempt == 0
                         ? snprintf(events->path, sizeof events->path, "%s/events.out.tfevents.%lld.%s", folder,
                                    seconds, host)
                         : snprintf(events->path, sizeof events->path, "%s/events.out.tfevents.%lld.%s.%d", folder,
                                    seconds, host, attempt);
        if (length < 0 || (size_t)length >= sizeof events->path)
            return vae_error(VAE_ERROR_INVALID_ARGUMENT, "%s: folder name too long for a TensorBoard event file",
                             folder);
        errno = 0;
        events->stream = fopen(events->path, "wbx"); /* C11: fails if the file exists */
        if (events->stream) return VAE_OK;
        if (errno != EEXIST) return vae_file_write_error(events->path, "TensorBoard event file", errno ? errno : EIO);
    }
    return vae_error(VAE_ERROR_IO, "%s: %d TensorBoard event files of this second exist already", folder,
                     EVENT_FILE_NAME_TRIES);
}

vae_status vae_event_file_open(vae_event_file **out, const char *folder) {
    *out = NULL;
    if (!folder || !folder[0]) return vae_error(VAE_ERROR_INVALID_ARGUMENT, "TensorBoard event file: no folder");
    vae_event_file *events = calloc(1, sizeof *events);
    if (!events) return vae_error(VAE_ERROR_OUT_OF_MEMORY, "TensorBoard event file: out of memory");
    vae_status status = create_file(events, folder);
    if (status == VAE_OK) {
        Vae__Tensorboard__Event event = VAE__TENSORBOARD__EVENT__INIT;
        event.wall_time = wall_time_now();
        event.what_case = VAE__TENSORBOARD__EVENT__WHAT_FILE_VERSION;
        event.file_version = (char *)EVENT_FILE_VERSION;
        status = write_event(events, &event);
    }
    if (status != VAE_OK) {
        if (events->stream) fclose(events->stream);
        free(events);
        return status;
    }
    *out = events;
    return VAE_OK;
}

const char *vae_event_file_path(const vae_event_file *events) { return events->path; }

vae_status vae_event_file_write_scalars(vae_event_file *events, long step, const vae_event_scalar *scalars,
                                        int count) {
    if (count < 0 || count > EVENT_FILE_MAX_SCALARS)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "%s: %d scalars in one event, at most %d", events->path, count,
                         EVENT_FILE_MAX_SCALARS);
    Vae__Tensorboard__Summary__Value values[EVENT_FILE_MAX_SCALARS];
    Vae__Tensorboard__Summary__Value *value_pointers[EVENT_FILE_MAX_SCALARS];
    size_t kept = 0;
    for (int i = 0; i < count; ++i) {
        Vae__Tensorboard__Summary__Value *value = &values[kept];
        vae__tensorboard__summary__value__init(value);
        value->tag = (char *)scalars[i].tag;
        value->value_case = VAE__TENSORBOARD__SUMMARY__VALUE__VALUE_SIMPLE_VALUE;
        value->simple_value = (float)scalars[i].value;
        value_pointers[kept++] = value;
    }
    if (kept == 0) return VAE_OK;
    return write_summary_event(events, step, value_pointers, kept);
}

vae_status vae_event_file_write_image(vae_event_file *events, long step, const char *tag, const unsigned char *png,
                                      size_t png_size, int width, int height, int channels) {
    if (!tag || !png || png_size == 0 || width < 1 || height < 1 || (channels != 1 && channels != 3))
        return vae_error(VAE_ERROR_INVALID_ARGUMENT,
                         "%s: bad image summary (%zu bytes, %dx%d, %d channels): expected a PNG of 1 or 3 channels",
                         events->path, png_size, width, height, channels);
    Vae__Tensorboard__Summary__Image image = VAE__TENSORBOARD__SUMMARY__IMAGE__INIT;
    image.height = height;
    image.width = width;
    image.colorspace = channels;
    image.encoded_image_string.data = (uint8_t *)png;
    image.encoded_image_string.len = png_size;
    Vae__Tensorboard__Summary__Value value = VAE__TENSORBOARD__SUMMARY__VALUE__INIT;
    value.tag = (char *)tag;
    value.value_case = VAE__TENSORBOARD__SUMMARY__VALUE__VALUE_IMAGE;
    value.image = &image;
    Vae__Tensorboard__Summary__Value *value_pointer = &value;
    return write_summary_event(events, step, &value_pointer, 1);
}

vae_status vae_event_file_close(vae_event_file *events) {
    if (!events) return VAE_OK;
    vae_status status = VAE_OK;
    errno = 0;
    if (fclose(events->stream) != 0)
        status = vae_file_write_error(events->path, "TensorBoard event file", errno ? errno : EIO);
    free(events);
    return status;
}
