/* vae-engine public C API: the processes of one data-parallel training run
 * (one per GPU or CPU share, started by mpirun or srun), as a program that
 * drives the trainer sees them.
 *
 * The world is process-wide and set up once by vae_distributed_init (first
 * thing in main). MPI is used only when a launcher started the process;
 * otherwise, and in a build without MPI, the world is this process alone
 * (rank 0 of 1) and every call below is a cheap no-op. Rank 0 writes the run
 * folder; every rank reads. Collective calls (broadcast, agree) must be made
 * by every rank in the same order. */
#ifndef VAE_PUBLIC_DISTRIBUTED_H
#define VAE_PUBLIC_DISTRIBUTED_H

#include <stddef.h>

#include "vae/vae.h"

#ifdef __cplusplus
extern "C" {
#endif

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
/* Human-readable: "MPI (Open MPI v4.1.4), 2 processes" or "single process". */
const char *vae_distributed_description(void);

/* Collective: root's size bytes into every rank's bytes. */
vae_status vae_distributed_broadcast(void *bytes, size_t size, int root);
/* Collective. Every rank calls it with its own status at a point where a
 * rank can fail on its own (a full disk on the writing rank, a bad input on
 * one node): returns, on every rank, the status of the lowest failing rank,
 * with that rank's message as the last error ("rank R: ..."), so that all
 * ranks stop together with the same exit code instead of waiting for each
 * other. */
vae_status vae_distributed_agree(vae_status local);
/* 1 when the last error came from another rank through vae_distributed_agree
 * (a program prints such a shared error on rank 0 only). */
int vae_distributed_error_is_shared(void);

/* What the NCCL watchdog calls to end the process after it aborted NCCL (a
 * peer died or hung): a program installs one that prints and exits;
 * default: _exit(code). */
typedef void (*vae_distributed_fatal_handler)(int exit_code, const char *message);
void vae_distributed_set_fatal_handler(vae_distributed_fatal_handler handler);

#ifdef __cplusplus
}
#endif
#endif
