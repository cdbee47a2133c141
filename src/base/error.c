#include "base/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char last_error_message[2048];

const char *vae_last_error(void) { return last_error_message; }

void vae_error_clear(void) { last_error_message[0] = '\0'; }

vae_status vae_error(vae_status status, const char *format, ...) {
    va_list args;
    va_start(args, format);
    vsnprintf(last_error_message, sizeof last_error_message, format, args);
    va_end(args);
    return status;
}

vae_status vae_error_context(vae_status status, const char *format, ...) {
    char previous[sizeof last_error_message];
    memcpy(previous, last_error_message, sizeof previous);
    va_list args;
    va_start(args, format);
    int used = vsnprintf(last_error_message, sizeof last_error_message, format, args);
    va_end(args);
    if (used >= 0 && (size_t)used < sizeof last_error_message && previous[0] != '\0')
        snprintf(last_error_message + used, sizeof last_error_message - (size_t)used, ": %s", previous);
    return status;
}

const char *vae_status_name(vae_status status) {
    switch (status) {
    case VAE_OK: return "ok";
    case VAE_ERROR_INVALID_ARGUMENT: return "invalid argument";
    case VAE_ERROR_BAD_INPUT: return "bad input";
    case VAE_ERROR_IO: return "i/o error";
    case VAE_ERROR_OUT_OF_MEMORY: return "out of memory";
    case VAE_ERROR_DEVICE: return "device error";
    case VAE_ERROR_NUMERIC: return "non-finite values";
    case VAE_ERROR_INTERRUPTED: return "interrupted";
    case VAE_ERROR_INTERNAL: return "internal error";
    case VAE_ERROR_BUSY: return "in use";
    }
    return "unknown status";
}
