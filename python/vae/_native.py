"""The engine's C API (include/vae/vae.h, vae/arrays.h) through cffi in ABI mode.

ABI mode: the declarations below are parsed by cffi at import and the shared
library libvae.so, installed beside this file, is opened with dlopen; nothing
is compiled for Python. cffi releases the GIL for the duration of every call
into the library, so a training run (vae_trainer_train) or an evaluation
leaves other Python threads running.

Only what the package uses is declared. Structs whose layout the package
does not need stay opaque (a vae_config is vae_config_size() bytes); enums
are declared as int, their C size.
"""
import os

import cffi

_DECLARATIONS = """
typedef int vae_status;
typedef struct vae_config vae_config;
typedef struct vae_trainer vae_trainer;
typedef struct vae_train_options {
    const char *out_dir;
    int resume;
    int force;
    int quiet;
    int max_steps;
} vae_train_options;

const char *vae_version(void);
const char *vae_last_error(void);
const char *vae_status_name(vae_status status);

size_t vae_config_size(void);
void vae_config_defaults(vae_config *config);
vae_status vae_config_load_file(vae_config *config, const char *path);
vae_status vae_config_set(vae_config *config, const char *assignment);
int vae_config_fit_warmup_to_overrides(vae_config *config, const vae_config *before, char *note, size_t note_size);
vae_status vae_config_validate(const vae_config *config);
vae_status vae_config_to_string(const vae_config *config, char **out_text);

vae_status vae_trainer_create(vae_trainer **out, const vae_config *config, int device);
vae_status vae_trainer_load(vae_trainer **out, const char *checkpoint_path, int device);
void vae_trainer_destroy(vae_trainer *trainer);
vae_status vae_trainer_train(vae_trainer *trainer, const vae_train_options *options);
void vae_request_stop(void);
vae_status vae_trainer_save(vae_trainer *trainer, const char *checkpoint_path);
vae_status vae_trainer_sample(vae_trainer *trainer, int count, uint64_t seed, float *images);
vae_status vae_trainer_sample_at_temperature(vae_trainer *trainer, int count, uint64_t seed, float temperature,
                                             float *images);
vae_status vae_trainer_decode(vae_trainer *trainer, const float *z, int count, float *images);
uint64_t vae_trainer_step(const vae_trainer *trainer);
const vae_config *vae_trainer_config(const vae_trainer *trainer);
const char *vae_trainer_device_name(const vae_trainer *trainer);

int vae_trainer_input_dim(const vae_trainer *trainer);
int vae_trainer_latent_dim(const vae_trainer *trainer);
vae_status vae_trainer_encode_inputs(vae_trainer *trainer, const float *inputs, long count, float *mu,
                                     float *logvar);
vae_status vae_trainer_evaluate_inputs(vae_trainer *trainer, const float *inputs, long count, int iwae_k,
                                       double *elbo, double *iwae);

void free(void *pointer);
"""

# vae_device_kind (vae/vae.h)
DEVICES = {"cpu": 0, "cuda": 1, "auto": 2}

ffi = cffi.FFI()
ffi.cdef(_DECLARATIONS)


def _library_path():
    # VAE_LIBRARY overrides the installed copy (a build tree's libvae.so).
    return os.environ.get("VAE_LIBRARY") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "libvae.so")


# free() (declared above) resolves to the C library's through libvae.so's
# dependencies: the strings vae_config_to_string allocates go back to it.
lib = ffi.dlopen(_library_path())


class VaeError(RuntimeError):
    """A failure the engine reported: str(error) is vae_last_error()'s message;
    status is the vae_status value (vae/vae.h), status_name its name
    (vae_status_name: "invalid argument", "I/O error", ...)."""

    def __init__(self, status, status_name, message):
        super().__init__(message)
        self.status = status
        self.status_name = status_name


def check(status):
    """Raises VaeError with the engine's message unless status is VAE_OK.
    vae_last_error() is per thread, and this runs on the thread that made the call."""
    if status != 0:
        message = ffi.string(lib.vae_last_error()).decode("utf-8", "replace")
        name = ffi.string(lib.vae_status_name(status)).decode("ascii", "replace")
        raise VaeError(status, name, message or name)
