/* The gradient all-reduce on GPUs: NCCL over the flat gradient buffer, on
 * the CUDA backend's stream, so that it is captured into the step's CUDA
 * graph with everything else (no host synchronisation per step). The
 * communicator's unique id comes from rank 0 by MPI_Bcast.
 *
 * A watchdog thread guards against a rank that died: NCCL collectives never
 * time out by themselves, and a process blocked behind one (in a graph
 * launch with a full queue, or in a synchronising read) cannot return an
 * error. It polls ncclCommGetAsyncError and the trainer's heartbeat; on an
 * asynchronous error, or when collectives are outstanding and the host
 * made no progress for the timeout, it aborts the communicator
 * (ncclCommAbort) and ends the process through the fatal handler, which
 * ends the job under mpirun (and each rank's own watchdog ends it under
 * srun). */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cuda_runtime_api.h>
#include <nccl.h>

#include "backends/backend_cuda.h"
#include "distributed/distributed.h"
#include "distributed/distributed_internal.h"

#define DEFAULT_TIMEOUT_SECONDS 50.0
#define WATCHDOG_PERIOD_NS 200000000L

static struct {
    ncclComm_t comm;
    int device;
    int ready;
    pthread_t watchdog;
    int watchdog_running;
    atomic_int stop;
    atomic_int outstanding;      /* collectives enqueued since the host last saw the device idle */
    atomic_llong last_beat_ms;   /* monotonic milliseconds of the last heartbeat */
    double timeout_seconds;
} nccl;

static long long milliseconds_now(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

#define NCCL_CHECK(call)                                                                                 \
    do {                                                                                                 \
        ncclResult_t nccl_status_ = (call);                                                              \
        if (nccl_status_ != ncclSuccess)                                                                 \
            return vae_error(VAE_ERROR_DEVICE, "rank %d: %s failed: %s (%s)", vae_distributed_rank(), #call, \
                             ncclGetErrorString(nccl_status_), ncclGetLastError(nccl.comm));             \
    } while (0)

#define CUDA_CHECK(call)                                                                                 \
    do {                                                                                                 \
        cudaError_t cuda_status_ = (call);                                                               \
        if (cuda_status_ != cudaSuccess)                                                                 \
            return vae_error(VAE_ERROR_DEVICE, "rank %d: %s failed: %s", vae_distributed_rank(), #call,  \
                             cudaGetErrorString(cuda_status_));                                          \
    } while (0)

static void watchdog_fail(const char *what) {
    char message[1024];
    snprintf(message, sizeof message,
             "rank %d of %d: %s; aborting the NCCL communicator and ending this process (the last checkpoint is "
             "intact: continue with --resume)",
             vae_distributed_rank(), vae_distributed_size(), what);
    ncclCommAbort(nccl.comm);
    vae_distributed_fatal(1, message);
}

static void *watchdog_main(void *unused) {
    (void)unused;
    (void)cudaSetDevice(nccl.device);
    struct timespec period = {0, WATCHDOG_PERIOD_NS};
    while (!atomic_load(&nccl.stop)) {
        nanosleep(&period, NULL);
        ncclResult_t async = ncclSuccess;
        if (ncclCommGetAsyncError(nccl.comm, &async) != ncclSuccess) continue;
        if (async != ncclSuccess && async != ncclInProgress) {
            char what[512];
            snprintf(what, sizeof what, "NCCL reported an asynchronous error (%s): a peer process has probably died",
                     ncclGetErrorString(async));
            watchdog_fail(what);
        }
        double idle = (double)(milliseconds_now() - atomic_load(&nccl.last_beat_ms)) / 1000.0;
        if (atomic_load(&nccl.outstanding) && idle > nccl.timeout_seconds) {
            char what[512];
            snprintf(what, sizeof what,
                     "no progress for %.0f s with a gradient all-reduce outstanding (VAE_NCCL_TIMEOUT = %.0f s): a "
                     "peer process has probably died or hung",
                     idle, nccl.timeout_seconds);
            watchdog_fail(what);
        }
    }
    return NULL;
}

static vae_status select_device(void) {
    CUDA_CHECK(cudaSetDevice(nccl.device));
    return VAE_OK;
}

/* Collective: every rank reaches the broadcast and the communicator's
 * creation, or all return. A rank that returned early (its device, or rank
 * 0's ncclGetUniqueId, failing) would leave the others waiting in
 * MPI_Bcast or ncclCommInitRank for good. */
vae_status vae_nccl_prepare(vae_backend *backend) {
    if (nccl.ready) return VAE_OK;
    nccl.device = vae_cuda_backend_device(backend);
    VAE_TRY(vae_distributed_agree(select_device()));
    struct {
        int32_t status; /* rank 0's ncclGetUniqueId result */
        ncclUniqueId id;
    } offer;
    memset(&offer, 0, sizeof offer);
    if (vae_distributed_rank() == 0) offer.status = (int32_t)ncclGetUniqueId(&offer.id);
    VAE_TRY(vae_distributed_broadcast(&offer, sizeof offer, 0));
    if (offer.status != ncclSuccess) {
        if (vae_distributed_rank() == 0)
            return vae_error(VAE_ERROR_DEVICE, "rank 0: ncclGetUniqueId failed: %s (%s)",
                             ncclGetErrorString((ncclResult_t)offer.status), ncclGetLastError(NULL));
        return vae_error(VAE_ERROR_DEVICE, "rank %d: rank 0 could not create the NCCL unique id (%s)",
                         vae_distributed_rank(), ncclGetErrorString((ncclResult_t)offer.status));
    }
    NCCL_CHECK(ncclCommInitRank(&nccl.comm, vae_distributed_size(), offer.id, vae_distributed_rank()));
    nccl.timeout_seconds = DEFAULT_TIMEOUT_SECONDS;
    const char *timeout = getenv("VAE_NCCL_TIMEOUT");
    if (timeout && atof(timeout) > 0) nccl.timeout_seconds = atof(timeout);
    atomic_store(&nccl.stop, 0);
    atomic_store(&nccl.outstanding, 0);
    atomic_store(&nccl.last_beat_ms, milliseconds_now());
    if (pthread_create(&nccl.watchdog, NULL, watchdog_main, NULL) != 0) {
        ncclCommDestroy(nccl.comm);
        return vae_error(VAE_ERROR_DEVICE, "rank %d: cannot start the NCCL watchdog thread", vae_distributed_rank());
    }
    nccl.watchdog_running = 1;
    nccl.ready = 1;
    return VAE_OK;
}

vae_status vae_nccl_mean(vae_backend *backend, float *values, size_t count) {
    if (!nccl.ready) return vae_error(VAE_ERROR_INTERNAL, "NCCL all-reduce before vae_distributed_prepare");
    atomic_store(&nccl.outstanding, 1);
    /* ncclAvg: the mean over ranks of each rank's mean over its rows. */
    NCCL_CHECK(ncclAllReduce(values, values, count, ncclFloat, ncclAvg, nccl.comm,
                             (cudaStream_t)vae_cuda_backend_stream(backend)));
    return VAE_OK;
}

void vae_nccl_heartbeat(void) {
    if (nccl.ready) atomic_store(&nccl.last_beat_ms, milliseconds_now());
}

void vae_nccl_device_idle(void) {
    if (!nccl.ready) return;
    atomic_store(&nccl.outstanding, 0);
    atomic_store(&nccl.last_beat_ms, milliseconds_now());
}

void vae_nccl_finalize(void) {
    if (!nccl.ready) return;
    atomic_store(&nccl.stop, 1);
    if (nccl.watchdog_running) pthread_join(nccl.watchdog, NULL);
    nccl.watchdog_running = 0;
    ncclCommDestroy(nccl.comm);
    nccl.ready = 0;
}
