/* vae-engine public C API.
 *
 * A trainer is created from a config, trains, evaluates, saves and loads
 * checkpoints and draws samples. Every function returns a vae_status; on
 * failure vae_last_error() says what went wrong and where (file, line, key,
 * expected). The library never exits the process. */
#ifndef VAE_VAE_H
#define VAE_VAE_H

#include <stddef.h>
#include <stdint.h>

#include "vae/version.h" /* VAE_VERSION_MAJOR, _MINOR, _PATCH, VAE_VERSION_STRING (generated) */

#ifdef __cplusplus
extern "C" {
#endif

typedef enum vae_status {
    VAE_OK = 0,
    VAE_ERROR_INVALID_ARGUMENT = 1, /* bad config value, bad usage */
    VAE_ERROR_BAD_INPUT = 2,        /* malformed or truncated file */
    VAE_ERROR_IO = 3,               /* file missing, unreadable, unwritable, disk full */
    VAE_ERROR_OUT_OF_MEMORY = 4,
    VAE_ERROR_DEVICE = 5,           /* CUDA / cuBLAS / cuRAND failure or no usable GPU */
    VAE_ERROR_NUMERIC = 6,          /* non-finite loss or gradients */
    VAE_ERROR_INTERRUPTED = 7,      /* stopped by a signal after saving */
    VAE_ERROR_INTERNAL = 8,
    VAE_ERROR_BUSY = 9              /* the run folder is held by another process (vae/run_folder.h) */
} vae_status;

/* The library's version, "MAJOR.MINOR.PATCH": the VAE_VERSION_STRING it was
 * built with (a program may compare it with the header it compiled against). */
const char *vae_version(void);

/* The message of the last failure on this thread ("" if none). */
const char *vae_last_error(void);
const char *vae_status_name(vae_status status);

/* ------------------------------------------------------------------ config */

#define VAE_MAX_HIDDEN_LAYERS 16
#define VAE_MAX_LAYER_SPECS 16
#define VAE_MAX_LATENT_GROUPS 8  /* model.latent_groups */
#define VAE_PATH_MAX 1024

/* The choices a config makes. The values are stable: checkpoints store the
 * config as INI text (names, not numbers), but the kernels and the CPU
 * backend switch on these values. */
typedef enum vae_binarize { VAE_BINARIZE_NONE = 0, VAE_BINARIZE_STATIC = 1, VAE_BINARIZE_DYNAMIC = 2 } vae_binarize;
typedef enum vae_activation {
    VAE_ACTIVATION_RELU = 0,
    VAE_ACTIVATION_TANH = 1,
    VAE_ACTIVATION_SOFTPLUS = 2,
    VAE_ACTIVATION_GELU = 3,
    VAE_ACTIVATION_IDENTITY = 4 /* not a config choice: the model's output layers */
} vae_activation;
typedef enum vae_likelihood {
    VAE_LIKELIHOOD_BERNOULLI = 0,     /* D logits */
    VAE_LIKELIHOOD_GAUSSIAN = 1,      /* D means then D log-variances (2D outputs) */
    VAE_LIKELIHOOD_GAUSSIAN_FIXED = 2 /* D means, one fixed log-variance */
} vae_likelihood;
typedef enum vae_lr_schedule { VAE_LR_CONSTANT = 0, VAE_LR_COSINE = 1 } vae_lr_schedule;
typedef enum vae_optimizer { VAE_OPTIMIZER_ADAM = 0, VAE_OPTIMIZER_ADAMW = 1 } vae_optimizer;
typedef enum vae_device_kind { VAE_DEVICE_CPU = 0, VAE_DEVICE_CUDA = 1, VAE_DEVICE_AUTO = 2 } vae_device_kind;
/* GEMM precision. fp32: full float GEMMs. tf32 (CUDA only; the CPU computes
 * fp32): tensor cores on operands cuBLAS rounds to TF32. bf16: mixed
 * precision, every GEMM's operands rounded to bfloat16 (the fp32 parameters
 * stay the master copy), float accumulation; the CPU backend emulates the same
 * rounding, so it stays the GPU's reference. */
typedef enum vae_precision { VAE_PRECISION_FP32 = 0, VAE_PRECISION_TF32 = 1, VAE_PRECISION_BF16 = 2 } vae_precision;
/* Where the training set lives on the CUDA backend: in device memory when it
 * fits (auto), or always in page-locked host memory that the gather kernel
 * reads over the bus (host). */
typedef enum vae_data_placement { VAE_DATA_AUTO = 0, VAE_DATA_HOST = 1 } vae_data_placement;
typedef enum vae_nonfinite_policy { VAE_NONFINITE_STOP = 0, VAE_NONFINITE_SKIP = 1 } vae_nonfinite_policy;
/* What training minimises (docs/ARCHITECTURE.md, "The model"): the ELBO with
 * the closed-form KL, or the importance-weighted bound of Burda et al. (2015)
 * over the model.samples draws of each point. */
typedef enum vae_objective { VAE_OBJECTIVE_ELBO = 0, VAE_OBJECTIVE_IWAE = 1 } vae_objective;

/* One layer of a [model] encoder or decoder list (configs/README.md):
 * "conv C kK [sS] [pP]", "convt C kK [sS] [pP]", "dense N", "dense CxHxW". */
typedef enum vae_layer_kind {
    VAE_LAYER_DENSE = 0,
    VAE_LAYER_CONV = 1,          /* nn.Conv2d */
    VAE_LAYER_CONV_TRANSPOSE = 2 /* nn.ConvTranspose2d (output_padding 0, dilation 1) */
} vae_layer_kind;
typedef struct vae_layer_spec {
    vae_layer_kind kind;
    int outputs;      /* dense: width (C*H*W for CxHxW); conv, convt: output channels, 0 for "out"
                         (the image's channels, x2 for likelihood gaussian; only a decoder's last layer) */
    int kernel_size, stride, padding;                          /* conv, convt (square); 0 for dense */
    int unflatten_channels, unflatten_height, unflatten_width; /* dense CxHxW; 0 otherwise */
} vae_layer_spec;

/* Every key of the INI schema (configs/README.md) has a field here. */
typedef struct vae_config {
    /* [data] */
    char data_path[VAE_PATH_MAX];    /* folder with IDX files, or .npy files */
    vae_binarize binarize;
    float binarize_threshold;        /* static binarisation: x > threshold */
    int validation_size;             /* training examples held out for validation */
    int train_limit;                 /* 0: all; else the first N training examples */
    int test_limit;                  /* 0: all; else the first N test examples */
    vae_data_placement data_on_device;
    /* [model] */
    int latent_dim;
    int hidden[VAE_MAX_HIDDEN_LAYERS];         /* encoder widths, input side first */
    int hidden_count;
    int decoder_hidden[VAE_MAX_HIDDEN_LAYERS]; /* decoder widths, latent side first */
    int decoder_hidden_count;                  /* default: encoder's reversed */
    /* Layer lists (model.encoder, model.decoder), exclusive with hidden and
     * decoder_hidden: a count of 0 means the widths above are used. The
     * encoder's list is followed by the dense head (2 x latent_dim); the
     * decoder's by a dense output layer unless it ends with a conv/convt "out". */
    vae_layer_spec encoder_layers[VAE_MAX_LAYER_SPECS];
    int encoder_layer_count;
    vae_layer_spec decoder_layers[VAE_MAX_LAYER_SPECS];
    int decoder_layer_count;
    vae_activation activation;       /* hidden layers */
    vae_likelihood likelihood;
    float gaussian_fixed_logvar;     /* for likelihood gaussian_fixed */
    int samples;                     /* L, reparameterised samples per point */
    float beta;                      /* KL weight */
    int kl_warmup_steps;             /* linear warm-up of beta; 0 = none */
    float init_scale;                /* 0: PyTorch's nn.Linear default init */
    vae_objective objective;         /* elbo (default) or iwae */
    /* Hierarchical latents (model.latent_groups): group sizes, data side
     * first (z_1 .. z_L, z_L the top); 0 groups: one latent of latent_dim.
     * latent_dim is then their sum. */
    int latent_groups[VAE_MAX_HIDDEN_LAYERS];
    int latent_group_count;
    int hierarchy_width;             /* H: the deterministic state of the hierarchy */
    int residual_posterior;          /* 1: q = p + posterior network's output (NVAE's residual normal) */
    float free_bits;                 /* nats per group and row below which its KL gets no gradient; 0 = off */
    /* [train] */
    int epochs;
    int batch_size;
    uint64_t seed;
    float lr;
    float lr_min;                    /* cosine schedule's floor */
    vae_lr_schedule lr_schedule;
    int warmup_steps;                /* learning-rate warm-up */
    vae_optimizer optimizer;
    float adam_beta1, adam_beta2, adam_epsilon, weight_decay;
    float grad_clip;                 /* global-norm clip; 0 = off */
    float skip_grad_norm;            /* skip steps whose gradient norm exceeds it; 0 = off */
    int log_every_steps;
    int eval_every_epochs;           /* 0 = only at the end */
    int eval_batch_size;
    vae_precision precision;         /* GEMMs; tf32 is CUDA only */
    vae_nonfinite_policy nonfinite_policy;
    float logvar_clamp;              /* 0 = off; else clamp encoder logvar to +-value */
    /* [checkpoint] */
    int checkpoint_every_steps;      /* 0 = only at the end */
    int checkpoint_keep;             /* numbered checkpoints kept besides the latest */
    /* [output] */
    int image_every_epochs;          /* sample/reconstruction grids; 0 = off */
    int tensorboard;                 /* TensorBoard event files in the run folder: 1 = on (default), 0 = off */
} vae_config;

/* Fills every field with the documented default (configs/README.md). */
void vae_config_defaults(vae_config *config);
/* Reads an INI file over the current values. Unknown sections or keys and
 * out-of-range values are errors naming the file, line and key. */
vae_status vae_config_load_file(vae_config *config, const char *path);
/* Applies one "section.key=value" override (as from --set). */
vae_status vae_config_set(vae_config *config, const char *assignment);
/* After --set overrides of a config file (before: the file alone): when the
 * overrides shortened a run of known length (data.train_limit > 0) below the
 * learning-rate warm-up that the file's own run holds, and none set
 * train.warmup_steps, cuts warmup_steps to the run's steps and returns 1
 * (note: what changed, for a warning); else 0. A warm-up too long in the file
 * itself, or set too long by an override, is left to vae_config_validate. */
int vae_config_fit_warmup_to_overrides(vae_config *config, const vae_config *before, char *note, size_t note_size);
/* Checks the whole config for consistency (after all overrides). */
vae_status vae_config_validate(const vae_config *config);
/* Writes the resolved config as INI that vae_config_load_file reads back. */
vae_status vae_config_write_file(const vae_config *config, const char *path);
/* The same INI text into a malloc'd string (caller frees). */
vae_status vae_config_to_string(const vae_config *config, char **out_text);
/* Parses INI text (name is used in error messages). */
vae_status vae_config_load_string(vae_config *config, const char *text, const char *name);
/* The first key, in the order a config is written, whose written value
 * differs between a and b: returns 1 with "section.key" in key and the two
 * values in a_value and b_value (each truncated to its size); 0 when every
 * key writes alike. */
int vae_config_first_difference(const vae_config *a, const vae_config *b, char *key, size_t key_size, char *a_value,
                                char *b_value, size_t value_size);
/* The config's name of a precision ("fp32", "tf32", "bf16"); "unknown" out of range. */
const char *vae_precision_name(vae_precision precision);

/* ----------------------------------------------------------------- trainer */

typedef struct vae_trainer vae_trainer;

/* The device is chosen when the trainer is created (vae_trainer_create,
 * vae_trainer_load); these options are about one run. */
typedef struct vae_train_options {
    const char *out_dir;             /* metrics.jsonl, config.ini, checkpoint.safetensors; the
                                        run claims it (vae/run_folder.h) for its duration */
    int resume;                      /* the trainer came from out_dir's checkpoint: keep
                                        metrics.jsonl lines up to its step */
    int force;                       /* not resuming and out_dir holds a checkpoint: start over
                                        (removes the earlier run's files) instead of refusing */
    int quiet;                       /* no progress lines on stderr */
    int max_steps;                   /* 0: train.epochs; else stop after this many steps */
} vae_train_options;

typedef struct vae_eval_result {
    double elbo;            /* per-sample ELBO, nats */
    double reconstruction;  /* per-sample E_q[log p(x|z)] */
    double kl;              /* per-sample KL(q || p) */
    double log_likelihood;  /* IWAE estimate (when asked for) */
    int iwae_k;
    int active_units;
    int latent_dim;
    /* [latent_dim] mean KL of each latent dimension over the split; owned by
     * the trainer, valid until its next evaluation or destruction. */
    const double *kl_per_dimension;
    long points;
    double seconds;
    vae_precision precision; /* of the GEMMs the evaluation ran */
    /* Hierarchical models (model.latent_groups; else group_count 0): per
     * group, data side first, its mean KL from its prior and its active
     * units (the variance over the data of the posterior mean above 0.01;
     * below the top group, of the first sample's mean whitened by its
     * conditional prior, (mu_q - mu_p) / sigma_p). active_units and
     * kl_per_dimension count every group's dimensions the same way. */
    int group_count;
    double group_kl[VAE_MAX_LATENT_GROUPS];
    int group_active_units[VAE_MAX_LATENT_GROUPS];
} vae_eval_result;

/* Builds the model and backend for a config; loads the data. */
vae_status vae_trainer_create(vae_trainer **out, const vae_config *config, vae_device_kind device);
/* Creates a trainer from a checkpoint's stored config and weights. */
vae_status vae_trainer_load(vae_trainer **out, const char *checkpoint_path, vae_device_kind device);
/* vae_trainer_load with the GEMM precision given instead of the stored one
 * (an fp32 evaluation of a model trained in bf16); the trainer's config
 * says the precision it runs. */
vae_status vae_trainer_load_with_precision(vae_trainer **out, const char *checkpoint_path, vae_device_kind device,
                                           vae_precision precision);
void vae_trainer_destroy(vae_trainer *trainer);
vae_status vae_trainer_train(vae_trainer *trainer, const vae_train_options *options);
/* split: "train", "validation" or "test". iwae_k 0: ELBO only. */
vae_status vae_trainer_evaluate(vae_trainer *trainer, const char *split, int iwae_k, vae_eval_result *result);
vae_status vae_trainer_save(vae_trainer *trainer, const char *checkpoint_path);
/* Decodes count draws from the prior into images in [0,1], [count, D]. */
vae_status vae_trainer_sample(vae_trainer *trainer, int count, uint64_t seed, float *images);
/* The same at a temperature: the prior's noise is scaled by it (0.8: fewer,
 * cleaner modes; 1: vae_trainer_sample). A hierarchical model samples
 * ancestrally from the top group, each group's noise scaled. */
vae_status vae_trainer_sample_at_temperature(vae_trainer *trainer, int count, uint64_t seed, float temperature,
                                             float *images);
/* Latent groups of a hierarchical model (model.latent_groups), 0 for a
 * model with one latent. */
int vae_trainer_latent_group_count(const vae_trainer *trainer);
/* What each group of a hierarchical model controls: images [groups *
 * count, D], row r (r = 0 the top group, then down to the group nearest the
 * data) holds count samples that share every other group's noise (one
 * draw, from seed) and redraw group groups-1-r's; all at the temperature. */
vae_status vae_trainer_sample_groups(vae_trainer *trainer, int count, uint64_t seed, float temperature,
                                     float *images);
/* Decodes count latent vectors (host, [count, latent_dim]) into images. A
 * hierarchical model's latent vector is its groups' standard normal noise,
 * [z_0 | z_1 | ... | z_top] as vae_trainer_encode gives (each group whitened
 * by its conditional prior), sampled ancestrally from the top. */
vae_status vae_trainer_decode(vae_trainer *trainer, const float *z, int count, float *images);
/* For a trainer loaded from a checkpoint, before it trains: takes from config
 * the settings that say how long the run goes on and how it is watched
 * (train.epochs, log_every_steps, eval_every_epochs, eval_batch_size;
 * checkpoint.every_steps, keep; output.image_every_epochs, tensorboard). Every other
 * setting must equal the stored one: otherwise VAE_ERROR_INVALID_ARGUMENT
 * naming the first that differs, and nothing changes. More epochs continue
 * a finished run; with lr_schedule = cosine the rate from there follows the
 * cosine over the new length. */
vae_status vae_trainer_continue_with(vae_trainer *trainer, const vae_config *config);
/* Trains for timed_steps after warmup_steps; samples per second of training. */
vae_status vae_trainer_benchmark(vae_trainer *trainer, int warmup_steps, int timed_steps, double *samples_per_second);
/* Asks every vae_trainer_train running at this moment (any thread) to
 * write a checkpoint and return VAE_ERROR_INTERRUPTED after its current
 * step. The request belongs to those runs: a run that starts afterwards does
 * not see it (it trains normally). Async-signal-safe: the CLI calls it from
 * its SIGINT/SIGTERM handler. */
void vae_request_stop(void);
/* The step the trainer stands at (optimizer steps taken). */
uint64_t vae_trainer_step(const vae_trainer *trainer);
const vae_config *vae_trainer_config(const vae_trainer *trainer);
/* Image shape of the data (rows, cols) for pictures; 0 if not images. */
void vae_trainer_image_shape(const vae_trainer *trainer, int *rows, int *cols);
/* The pictures' channels (1 grey, 3 RGB, as the data's image shape; 1 for
 * data with rows and cols but no channels); 0 if not images. */
int vae_trainer_image_channels(const vae_trainer *trainer);
const char *vae_trainer_device_name(const vae_trainer *trainer);
/* 1 when the training set lives in page-locked host memory read over the bus
 * (it did not fit on the device, or data.on_device = host). */
int vae_trainer_data_in_host_memory(const vae_trainer *trainer);

#ifdef __cplusplus
}
#endif
#endif
