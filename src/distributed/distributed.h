/* Data-parallel training across processes: the communicator the trainer
 * talks to. One process per GPU (or per CPU share), started by mpirun or
 * srun; the world is the processes of one training run.
 *
 * The world is process-wide and set up once by vae_distributed_init (the
 * CLI calls it first thing). MPI is initialised only when a launcher started
 * the process (see launcher.h); otherwise, and in a build without MPI, the
 * world is this process alone (rank 0 of 1) and every operation below is a
 * cheap no-op, so a plain `vae train` and the library's in-process tests run
 * exactly as without this module.
 *
 * Collective operations must be called by every rank in the same order.
 * They return VAE_ERROR_DISTRIBUTED when the transport fails. */
#ifndef VAE_DISTRIBUTED_H
#define VAE_DISTRIBUTED_H

#include <stddef.h>

#include "backends/backend.h"
#include "base/error.h"

/* Initialises the world (MPI under a launcher; binds the CUDA backend to
 * the GPU of the node-local rank). Safe to call more than once. Fails when
 * a launcher started several processes but this build has no MPI (they
 * would each train alone and overwrite each other's files). */
vae_status vae_distributed_init(int *argc, char ***argv);
/* Ends the world (MPI_Finalize; NCCL communicators destroyed). */
void vae_distributed_finalize(void);

/* 1 when the world came from a launcher (MPI is up), even with one process. */
int vae_distributed_launched(void);
int vae_distributed_rank(void);
int vae_distributed_size(void);
/* Rank among the processes on this node (MPI_COMM_TYPE_SHARED). */
int vae_distributed_local_rank(void);
/* Human-readable: "MPI (Open MPI v4.1.4), 2 processes" or "single process". */
const char *vae_distributed_description(void);

/* In-place sums over all ranks of host arrays. */
vae_status vae_distributed_sum_doubles(double *values, size_t count);
/* In-place maximum over all ranks. */
vae_status vae_distributed_max_double(double *value);
/* 1 on every rank when flag is non-zero on any rank. */
vae_status vae_distributed_any(int flag, int *result);
vae_status vae_distributed_broadcast(void *bytes, size_t size, int root);
/* *same = 1 on every rank when every rank holds the same bytes (compares a
 * 64-bit FNV-1a hash of them). */
vae_status vae_distributed_same_everywhere(const void *bytes, size_t size, int *same);
vae_status vae_distributed_barrier(void);

/* A stop request (SIGINT/SIGTERM reach the ranks at different moments)
 * agreed without waiting: each call completes the previous round (an
 * MPI_Iallreduce started by the call before, normally finished long ago)
 * and starts the next with this rank's flag. *stop is 1 on every rank in
 * the same call: one step after any rank saw its flag. Alone: *stop = flag.
 * vae_distributed_stop_finish completes a round still in flight. */
vae_status vae_distributed_stop_poll(int flag, int *stop);
vae_status vae_distributed_stop_finish(void);

/* Every rank calls it with its own status at a point where a rank can fail
 * on its own (a full disk on the writing rank, a bad input on one node):
 * returns, on every rank, the status of the lowest failing rank, with that
 * rank's message as the last error ("rank R: ..."), so that all ranks stop
 * together with the same exit code instead of waiting for each other. */
vae_status vae_distributed_agree(vae_status local);
/* 1 when the last error came from another rank through vae_distributed_agree
 * (the CLI prints such a shared error on rank 0 only). */
int vae_distributed_error_is_shared(void);

/* Prepares the gradient all-reduce for this backend, outside any graph
 * capture: on the CUDA backend under a launcher, the NCCL communicator
 * (unique id by MPI_Bcast) and its watchdog. */
vae_status vae_distributed_prepare(vae_backend *backend);
/* gradients[count] (backend memory) = the mean over ranks of every rank's
 * gradients, identical on every rank: MPI_Allreduce on the CPU backend,
 * ncclAllReduce on the backend's stream on CUDA (asynchronous and allowed
 * inside a graph capture). A no-op when the world was not launched. */
vae_status vae_distributed_mean_gradients(vae_backend *backend, float *gradients, size_t count);

/* The NCCL watchdog (no-ops elsewhere): the trainer beats after each step
 * it enqueues, and says when the host has seen the device finish all
 * enqueued collectives (a synchronising read). While collectives are
 * outstanding and no beat came for the timeout (VAE_NCCL_TIMEOUT seconds,
 * default 50), or when NCCL reports an asynchronous error (a peer died),
 * the watchdog aborts the communicator and ends the process. */
void vae_distributed_heartbeat(void);
void vae_distributed_device_idle(void);

/* What the watchdog calls to end the process after it aborted NCCL (the
 * CLI installs one that prints and exits; default: _exit(code)). */
typedef void (*vae_distributed_fatal_handler)(int exit_code, const char *message);
void vae_distributed_set_fatal_handler(vae_distributed_fatal_handler handler);

#endif
