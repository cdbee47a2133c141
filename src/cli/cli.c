/* The vae command line: train, eval, sample, bench. The only place that
 * decides to exit. Exit codes: 0 success; 2 bad usage, a bad config or a
 * malformed input file, or a run folder that holds a model without --resume or
 * --force; 1 anything else (I/O, device, non-finite values, a run folder in
 * use by another process: a state of the machine, not a mistake in the command). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli_common.h"
#include "vae/blas.h"
#include "vae/distributed.h"
#include "vae/output.h"
#include "vae/run_folder.h"
#include "vae/vae.h"

static const char *program_usage =
    "usage: vae <command> [options]\n"
    "\n"
    "commands:\n"
    "  train        train a model from a config\n"
    "  eval         evaluate a checkpoint on a split (ELBO, IWAE log-likelihood)\n"
    "  sample       decode draws from the prior into a PNG grid\n"
    "  bench        measure training throughput (samples/s)\n"
    "  reconstruct  inputs above their reconstructions, as a PNG grid\n"
    "  interpolate  decoded straight lines between pairs of latent means, as a PNG grid\n"
    "  manifold     the decoded latent plane of a 2-d latent model, as a PNG grid\n"
    "  scatter      latent means coloured by label, as an 800x800 PNG\n"
    "  encode       latent means (and log-variances, labels) of a split into .npy files\n"
    "\n"
    "Run 'vae <command> --help' for a command's options; 'vae --version' prints the version.\n";

static const char *train_usage =
    "usage: vae train --config FILE [--set section.key=value ...] [--device cpu|cuda|auto]\n"
    "                 [--out DIR] [--resume | --force] [--max-steps N] [--quiet]\n"
    "Trains the model; writes DIR/metrics.jsonl, DIR/config.ini and DIR/checkpoint.safetensors\n"
    "(DIR defaults to runs/latest). A folder belongs to one run: a second run on a folder in use\n"
    "is refused (exit 1), and so is a folder that holds a checkpoint (exit 2) unless --resume\n"
    "continues it or --force starts over (removing the earlier run's checkpoints and pictures).\n"
    "A resumed run keeps its stored config; a --config or --set with --resume may change only how long\n"
    "it goes on and how it is watched (train.epochs: more epochs continue a finished run).\n";
static const char *eval_usage =
    "usage: vae eval --checkpoint FILE [--split train|validation|test] [--iwae-k K] [--device cpu|cuda|auto]\n"
    "                [--precision fp32|tf32|bf16]\n"
    "Prints one JSON line: per-sample ELBO, reconstruction term, KL, active units and, with\n"
    "--iwae-k, the importance-weighted log-likelihood estimate with K samples. The GEMMs run in the\n"
    "precision the model trained in (train.precision) unless --precision says otherwise.\n";
static const char *sample_usage =
    "usage: vae sample --checkpoint FILE --out FILE.png [--n 64] [--seed S] [--temperature 1]\n"
    "                  [--groups] [--device cpu|cuda|auto] [--quiet]\n"
    "Decodes N draws from the prior and writes them as a PNG grid; --temperature scales the prior's\n"
    "noise (a hierarchical model samples ancestrally from its top group, every group's noise scaled).\n"
    "--groups (hierarchical models): one row per latent group, top group first, of N pictures that\n"
    "share every other group's noise and redraw that group's: what each group controls.\n";
static const char *bench_usage =
    "usage: vae bench --config FILE [--set section.key=value ...] [--device cpu|cuda|auto]\n"
    "                 [--warmup-steps N] [--steps N]\n"
    "Prints one JSON line with samples_per_s over training steps only, after a warm-up.\n";

static void handle_stop_signal(int signal_number) {
    (void)signal_number;
    vae_request_stop();
}

static void report_device(vae_trainer *trainer, const cli_options *o) {
    if (o->quiet || vae_distributed_rank() != 0) return;
    fprintf(stderr, "vae: device %s\n", vae_trainer_device_name(trainer));
    if (vae_distributed_launched()) fprintf(stderr, "vae: data parallel over %s\n", vae_distributed_description());
}

/* A resumed run keeps the config stored with its checkpoint. A --config or
 * --set given with --resume may change how long the run goes on and how it
 * is watched (vae_trainer_continue_with); anything else that differs is
 * refused, naming the setting, rather than silently ignored. Rerunning the
 * same command resumes. --set alone applies to the stored config. */
static vae_status continue_with_given_config(const cli_options *o, vae_trainer *trainer, const char *checkpoint) {
    if (!o->config_path && o->override_count == 0) return VAE_OK;
    vae_config given = *vae_trainer_config(trainer);
    vae_status status = VAE_OK;
    if (o->config_path) {
        status = cli_load_config(o, &given);
    } else {
        for (int i = 0; status == VAE_OK && i < o->override_count; ++i)
            status = vae_config_set(&given, o->overrides[i]);
    }
    if (status == VAE_OK) status = vae_trainer_continue_with(trainer, &given);
    if (status != VAE_OK) return cli_error(status, "--resume from %s: %s", checkpoint, vae_last_error());
    return VAE_OK;
}

static int command_train(int argc, char **argv) {
    cli_options o;
    int parsed = cli_parse_options(argc, argv, train_usage, &o);
    if (parsed) return parsed < 0 ? 0 : parsed;
    if (!o.config_path && !o.resume) return cli_usage_error(train_usage, "train needs --config FILE", NULL);
    if (o.resume && o.force) return cli_usage_error(train_usage, "--resume and --force contradict each other", NULL);
    const char *out = o.out ? o.out : "runs/latest";
    char checkpoint[4096];
    snprintf(checkpoint, sizeof checkpoint, "%s/checkpoint.safetensors", out);
    /* Rank 0 decides whether there is a checkpoint; every rank reads it. */
    int resume = o.resume && access(checkpoint, F_OK) == 0;
    vae_status status = vae_distributed_broadcast(&resume, sizeof resume, 0);
    if (status != VAE_OK) return cli_fail(status);
    /* The folder first: a folder in use or a finished model is refused at
     * once, before any data are loaded. Rank 0 writes, so rank 0 holds it;
     * the trainer's own claim nests. */
    vae_run_folder *folder = NULL;
    vae_run_start start = resume ? VAE_RUN_START_RESUME : o.force ? VAE_RUN_START_OVER : VAE_RUN_START_NEW;
    status = vae_distributed_agree(vae_distributed_rank() == 0 ? vae_run_folder_claim(out, start, &folder) : VAE_OK);
    if (status != VAE_OK) return cli_fail(status);
    vae_trainer *trainer = NULL;
    if (resume) {
        status = vae_distributed_agree(vae_trainer_load(&trainer, checkpoint, o.device));
        if (status == VAE_OK) status = continue_with_given_config(&o, trainer, checkpoint);
        if (status != VAE_OK) {
            vae_trainer_destroy(trainer);
            vae_run_folder_release(folder);
            return cli_fail(status);
        }
        if (!o.quiet && vae_distributed_rank() == 0)
            fprintf(stderr, "vae: resuming from %s at step %llu (its stored config is used)\n", checkpoint,
                    (unsigned long long)vae_trainer_step(trainer));
    } else {
        if (!o.config_path) {
            vae_run_folder_release(folder);
            return cli_usage_error(train_usage, "--resume found no checkpoint in the output folder and no --config was given:", out);
        }
        if (o.resume && !o.quiet && vae_distributed_rank() == 0)
            fprintf(stderr, "vae: no checkpoint in %s yet: starting from the beginning\n", out);
        vae_config config;
        status = cli_load_config(&o, &config);
        if (status == VAE_OK) status = vae_trainer_create(&trainer, &config, o.device);
        status = vae_distributed_agree(status); /* a bad input on one node stops every rank */
        if (status != VAE_OK) {
            vae_trainer_destroy(trainer);
            vae_run_folder_release(folder);
            return cli_fail(status);
        }
    }
    /* SIGINT and SIGTERM ask the trainer to write a checkpoint and stop. */
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = handle_stop_signal;
    sigemptyset(&action.sa_mask);
    sigaction(SIGINT, &action, NULL);
    sigaction(SIGTERM, &action, NULL);
    report_device(trainer, &o);
    vae_train_options options = {.out_dir = out, .resume = resume, .force = o.force, .quiet = o.quiet,
                                 .max_steps = o.max_steps};
    status = vae_trainer_train(trainer, &options);
    if (status == VAE_OK && !o.quiet && vae_distributed_rank() == 0)
        fprintf(stderr, "vae: wrote %s, %s/metrics.jsonl and %s/config.ini\n", checkpoint, out, out);
    vae_trainer_destroy(trainer);
    int code = status == VAE_OK ? 0 : cli_fail(status);
    vae_run_folder_release(folder);
    return code;
}

static int command_eval(int argc, char **argv) {
    cli_options o;
    int parsed = cli_parse_options(argc, argv, eval_usage, &o);
    if (parsed) return parsed < 0 ? 0 : parsed;
    if (!o.checkpoint_path) return cli_usage_error(eval_usage, "eval needs --checkpoint FILE", NULL);
    vae_trainer *trainer = NULL;
    vae_status status = vae_distributed_agree(cli_load_checkpoint(&o, &trainer));
    if (status != VAE_OK) {
        vae_trainer_destroy(trainer);
        return cli_fail(status);
    }
    vae_eval_result result;
    /* Sharded over the ranks when launched by mpirun/srun; rank 0 prints. */
    status = vae_trainer_evaluate(trainer, o.split, o.iwae_k, &result);
    char *json = NULL;
    if (status == VAE_OK && vae_distributed_rank() == 0)
        status = vae_eval_result_to_json(&result, o.split, vae_trainer_step(trainer), &json);
    if (status == VAE_OK && json) printf("%s\n", json);
    free(json);
    vae_trainer_destroy(trainer);
    return status == VAE_OK ? 0 : cli_fail(status);
}

static int command_sample(int argc, char **argv) {
    cli_options o;
    int parsed = cli_parse_options(argc, argv, sample_usage, &o);
    if (parsed) return parsed < 0 ? 0 : parsed;
    if (!o.checkpoint_path || !o.out) return cli_usage_error(sample_usage, "sample needs --checkpoint FILE and --out FILE.png", NULL);
    vae_trainer *trainer = NULL;
    vae_status status = vae_trainer_load(&trainer, o.checkpoint_path, o.device);
    if (status != VAE_OK) return cli_fail(status);
    int rows, cols;
    vae_trainer_image_shape(trainer, &rows, &cols);
    int channels = vae_trainer_image_channels(trainer);
    float *images = NULL;
    if (rows <= 0 || cols <= 0 || channels <= 0) {
        fprintf(stderr, "vae: error: %s: the model's data are not images (no image shape)\n", o.checkpoint_path);
        vae_trainer_destroy(trainer);
        return 2;
    }
    int groups = o.groups ? vae_trainer_latent_group_count(trainer) : 1;
    if (o.groups && groups == 0) {
        fprintf(stderr, "vae: error: %s: --groups needs a hierarchical model (model.latent_groups); this one has one "
                        "latent group\n", o.checkpoint_path);
        vae_trainer_destroy(trainer);
        return 2;
    }
    int count = o.groups && !o.count_given ? 8 : o.count, pictures = groups * count;
    images = malloc(sizeof(float) * (size_t)pictures * channels * rows * cols);
    if (!images) status = cli_error(VAE_ERROR_OUT_OF_MEMORY, "sample: out of memory");
    else if (o.groups) status = vae_trainer_sample_groups(trainer, count, o.seed, o.temperature, images);
    else status = vae_trainer_sample_at_temperature(trainer, count, o.seed, o.temperature, images);
    if (status == VAE_OK) {
        int columns = 1;
        while (columns * columns < count) ++columns;
        if (o.groups) columns = count;
        status = vae_png_write_image_grid(o.out, images, pictures, channels, rows, cols, columns, 2);
    }
    if (status == VAE_OK && !o.quiet) fprintf(stderr, "vae: wrote %d samples to %s\n", pictures, o.out);
    free(images);
    vae_trainer_destroy(trainer);
    return status == VAE_OK ? 0 : cli_fail(status);
}

static int command_bench(int argc, char **argv) {
    cli_options o;
    int parsed = cli_parse_options(argc, argv, bench_usage, &o);
    if (parsed) return parsed < 0 ? 0 : parsed;
    if (!o.config_path) return cli_usage_error(bench_usage, "bench needs --config FILE", NULL);
    vae_config config;
    vae_status status = cli_load_config(&o, &config);
    vae_trainer *trainer = NULL;
    if (status == VAE_OK) status = vae_trainer_create(&trainer, &config, o.device);
    status = vae_distributed_agree(status);
    if (status != VAE_OK) {
        vae_trainer_destroy(trainer);
        return cli_fail(status);
    }
    double samples_per_second = 0;
    /* Under mpirun: every rank steps, the rate is global (batch_size is the
     * global batch, timed by the slowest rank); rank 0 prints. */
    status = vae_trainer_benchmark(trainer, o.warmup_steps, o.steps, &samples_per_second);
    if (status == VAE_OK && vae_distributed_rank() == 0) {
        char hidden[256] = "";
        size_t used = 0;
        for (int i = 0; i < config.hidden_count && used + 16 < sizeof hidden; ++i)
            used += (size_t)snprintf(hidden + used, sizeof hidden - used, "%s%d", i ? "," : "", config.hidden[i]);
        printf("{\"framework\":\"vae-engine\",\"device\":\"%s\",\"precision\":\"%s\",\"batch_size\":%d,"
               "\"hidden\":\"%s\",\"latent_dim\":%d,\"steps\":%d,\"warmup_steps\":%d,\"processes\":%d,"
               "\"samples_per_s\":%.1f}\n",
               vae_trainer_device_name(trainer), vae_precision_name(config.precision),
               config.batch_size, hidden, config.latent_dim, o.steps, o.warmup_steps, vae_distributed_size(),
               samples_per_second);
    }
    vae_trainer_destroy(trainer);
    return status == VAE_OK ? 0 : cli_fail(status);
}

/* The NCCL watchdog ends a process whose peer died (it cannot return an
 * error from a blocked collective): print and exit. */
static void exit_from_watchdog(int exit_code, const char *message) {
    fprintf(stderr, "vae: error: %s\n", message);
    fflush(stderr);
    _exit(exit_code);
}

static int run_command(int argc, char **argv) {
    if (argc < 2) { fputs(program_usage, stderr); return 2; }
    const char *command = argv[1];
    if (strcmp(command, "--help") == 0 || strcmp(command, "-h") == 0 || strcmp(command, "help") == 0) {
        fputs(program_usage, stdout);
        return 0;
    }
    if (strcmp(command, "--version") == 0 || strcmp(command, "version") == 0) {
        /* The BLAS and its kernel, so that a fallback to slow kernels shows. */
        char blas[256];
        vae_blas_describe(blas, sizeof blas);
        printf("vae %s\nblas: %s\n", vae_version(), blas);
        return 0;
    }
    if (strcmp(command, "train") == 0) return command_train(argc, argv);
    if (strcmp(command, "eval") == 0) return command_eval(argc, argv);
    if (strcmp(command, "bench") == 0) return command_bench(argc, argv);
    if (vae_distributed_size() > 1) {
        /* The others write one file each: several processes would race. */
        if (vae_distributed_rank() == 0)
            fprintf(stderr, "vae: error: '%s' runs as one process; only train, eval and bench run under mpirun/srun "
                            "with several processes\n", command);
        return 2;
    }
    if (strcmp(command, "sample") == 0) return command_sample(argc, argv);
    if (strcmp(command, "reconstruct") == 0) return cli_command_reconstruct(argc, argv);
    if (strcmp(command, "interpolate") == 0) return cli_command_interpolate(argc, argv);
    if (strcmp(command, "manifold") == 0) return cli_command_manifold(argc, argv);
    if (strcmp(command, "scatter") == 0) return cli_command_scatter(argc, argv);
    if (strcmp(command, "encode") == 0) return cli_command_encode(argc, argv);
    fprintf(stderr, "vae: unknown command '%s'\n\n%s", command, program_usage);
    return 2;
}

int main(int argc, char **argv) {
    /* MPI starts only under a launcher (mpirun, srun): see src/distributed/launcher.h. */
    vae_status status = vae_distributed_init(&argc, &argv);
    if (status != VAE_OK) return cli_fail(status);
    vae_distributed_set_fatal_handler(exit_from_watchdog);
    int exit_code = run_command(argc, argv);
    vae_distributed_finalize();
    return exit_code;
}
