/* Library-internal error reporting: set a message, return the status. */
#ifndef VAE_ERROR_H
#define VAE_ERROR_H
#include "vae/vae.h"

#if defined(__GNUC__)
#define VAE_PRINTF_LIKE(a, b) __attribute__((format(printf, a, b)))
#else
#define VAE_PRINTF_LIKE(a, b)
#endif

/* Records the message for vae_last_error() and returns status. */
vae_status vae_error(vae_status status, const char *format, ...) VAE_PRINTF_LIKE(2, 3);
/* Prefixes the current message with more context ("loading X: <old>"). */
vae_status vae_error_context(vae_status status, const char *format, ...) VAE_PRINTF_LIKE(2, 3);
void vae_error_clear(void);

#define VAE_TRY(expr) do { vae_status vae_try_status_ = (expr); if (vae_try_status_ != VAE_OK) return vae_try_status_; } while (0)

#endif
