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
#include "vae/distributed.h" /* init, rank, size, broadcast, agree: the part programs use */

/* Rank among the processes on this node (MPI_COMM_TYPE_SHARED). */
int vae_distributed_local_rank(void);

/* In-place sums over all ranks of host arrays. */
vae_status vae_distributed_sum_doubles(double *values, size_t count);
/* In-place maximum over all ranks. */
vae_status vae_distributed_max_double(double *value);
/* 1 on every rank when flag is non-zero on any rank. */
vae_status vae_distributed_any(int flag, int *result);
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

#endif
