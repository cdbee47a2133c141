/* The world over MPI (builds with -DVAE_MPI=AUTO|ON and MPI found). MPI is
 * initialised only under a launcher (launcher.h); without one the world is
 * this process alone and nothing here touches MPI. */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <mpi.h>

#include "backends/backend_cuda.h"
#include "distributed/distributed.h"
#include "distributed/distributed_internal.h"
#include "distributed/launcher.h"

static struct {
    int initialised;   /* vae_distributed_init ran */
    int launched;      /* MPI is up (a launcher started us) */
    int we_started_mpi;
    int rank, size, local_rank;
    int error_shared;
    char description[320];
    MPI_Comm stop_comm;        /* a duplicate, so stop rounds never match other collectives */
    MPI_Request stop_request;
    int stop_send, stop_receive;
} world = {0, 0, 0, 0, 1, 0, 0, "single process", MPI_COMM_NULL, MPI_REQUEST_NULL, 0, 0};

/* MPI calls return their error code (the communicator's error handler is
 * MPI_ERRORS_RETURN); this turns one into a status and a message. */
static vae_status mpi_failure(int code, const char *call) {
    char text[MPI_MAX_ERROR_STRING];
    int length = 0;
    if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) snprintf(text, sizeof text, "error code %d", code);
    return vae_error(VAE_ERROR_DEVICE, "rank %d: %s failed: %s", world.rank, call, text);
}

#define MPI_CHECK(call)                                                                                  \
    do {                                                                                                 \
        int mpi_code_ = (call);                                                                          \
        if (mpi_code_ != MPI_SUCCESS) return mpi_failure(mpi_code_, #call);                              \
    } while (0)

vae_status vae_distributed_init(int *argc, char ***argv) {
    if (world.initialised) return VAE_OK;
    world.initialised = 1;
    if (vae_launcher_process_count() == 0) return VAE_OK;
    int already = 0;
    MPI_CHECK(MPI_Initialized(&already));
    if (!already) {
        int provided = 0;
        /* Only the main thread calls MPI (the NCCL watchdog never does). */
        MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided));
        world.we_started_mpi = 1;
    }
    world.launched = 1;
    MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &world.rank));
    MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &world.size));
    MPI_Comm node;
    MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, world.rank, MPI_INFO_NULL, &node));
    int node_size = 1;
    MPI_CHECK(MPI_Comm_rank(node, &world.local_rank));
    MPI_CHECK(MPI_Comm_size(node, &node_size));
    MPI_CHECK(MPI_Comm_free(&node));
    MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &world.stop_comm));
    char version[MPI_MAX_LIBRARY_VERSION_STRING];
    int length = 0;
    MPI_CHECK(MPI_Get_library_version(version, &length));
    version[strcspn(version, ",\n")] = '\0'; /* "Open MPI v4.1.4" */
    snprintf(world.description, sizeof world.description, "MPI (%.200s), %d process%s, %d on this node", version,
             world.size, world.size == 1 ? "" : "es", node_size);
    /* One GPU per process: the node-local rank picks it. */
    vae_cuda_set_device_index(world.local_rank);
    return VAE_OK;
}

void vae_distributed_finalize(void) {
    vae_nccl_finalize();
    if (world.launched) (void)vae_distributed_stop_finish();
    if (world.launched && world.stop_comm != MPI_COMM_NULL) MPI_Comm_free(&world.stop_comm);
    if (world.launched && world.we_started_mpi) {
        int finalized = 0;
        MPI_Finalized(&finalized);
        if (!finalized) MPI_Finalize();
    }
    world.launched = 0;
}

int vae_distributed_launched(void) { return world.launched; }
int vae_distributed_rank(void) { return world.rank; }
int vae_distributed_size(void) { return world.size; }
int vae_distributed_local_rank(void) { return world.local_rank; }
const char *vae_distributed_description(void) { return world.description; }
int vae_distributed_error_is_shared(void) { return world.error_shared; }

/* MPI counts are ints: large arrays go in pieces. */
#define MPI_PIECE ((size_t)1 << 30)

vae_status vae_distributed_sum_doubles(double *values, size_t count) {
    if (!world.launched) return VAE_OK;
    for (size_t done = 0; done < count; done += MPI_PIECE) {
        size_t piece = count - done < MPI_PIECE ? count - done : MPI_PIECE;
        MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, values + done, (int)piece, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD));
    }
    return VAE_OK;
}

vae_status vae_distributed_max_double(double *value) {
    if (!world.launched) return VAE_OK;
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, value, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD));
    return VAE_OK;
}

vae_status vae_distributed_any(int flag, int *result) {
    *result = flag != 0;
    if (!world.launched) return VAE_OK;
    int mine = flag != 0;
    MPI_CHECK(MPI_Allreduce(&mine, result, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
    return VAE_OK;
}

vae_status vae_distributed_broadcast(void *bytes, size_t size, int root) {
    if (!world.launched) return VAE_OK;
    for (size_t done = 0; done < size; done += MPI_PIECE) {
        size_t piece = size - done < MPI_PIECE ? size - done : MPI_PIECE;
        MPI_CHECK(MPI_Bcast((char *)bytes + done, (int)piece, MPI_BYTE, root, MPI_COMM_WORLD));
    }
    return VAE_OK;
}

vae_status vae_distributed_barrier(void) {
    if (!world.launched) return VAE_OK;
    MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
    return VAE_OK;
}

vae_status vae_distributed_same_everywhere(const void *bytes, size_t size, int *same) {
    *same = 1;
    if (!world.launched) return VAE_OK;
    uint64_t hash = 1469598103934665603ull; /* FNV-1a */
    const unsigned char *p = bytes;
    for (size_t i = 0; i < size; ++i) hash = (hash ^ p[i]) * 1099511628211ull;
    uint64_t low = hash, high = hash;
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &low, 1, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD));
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &high, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD));
    *same = low == high;
    return VAE_OK;
}

vae_status vae_distributed_stop_poll(int flag, int *stop) {
    *stop = flag != 0;
    if (!world.launched) return VAE_OK;
    *stop = 0;
    if (world.stop_request != MPI_REQUEST_NULL) {
        MPI_CHECK(MPI_Wait(&world.stop_request, MPI_STATUS_IGNORE));
        *stop = world.stop_receive != 0;
    }
    if (*stop) return VAE_OK; /* every rank stops here: no further round */
    world.stop_send = flag != 0;
    MPI_CHECK(MPI_Iallreduce(&world.stop_send, &world.stop_receive, 1, MPI_INT, MPI_MAX, world.stop_comm,
                             &world.stop_request));
    return VAE_OK;
}

vae_status vae_distributed_stop_finish(void) {
    if (!world.launched || world.stop_request == MPI_REQUEST_NULL) return VAE_OK;
    MPI_CHECK(MPI_Wait(&world.stop_request, MPI_STATUS_IGNORE));
    return VAE_OK;
}

vae_status vae_distributed_agree(vae_status local) {
    if (!world.launched) return local;
    /* The lowest failing rank speaks for all (world.size: none failed). */
    int mine = local != VAE_OK ? world.rank : world.size, first = world.size;
    MPI_CHECK(MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD));
    if (first == world.size) return VAE_OK;
    struct {
        int32_t status;
        char message[2048];
    } verdict;
    memset(&verdict, 0, sizeof verdict);
    if (world.rank == first) {
        verdict.status = (int32_t)local;
        snprintf(verdict.message, sizeof verdict.message, "%s", vae_last_error());
    }
    MPI_CHECK(MPI_Bcast(&verdict, (int)sizeof verdict, MPI_BYTE, first, MPI_COMM_WORLD));
    verdict.message[sizeof verdict.message - 1] = '\0';
    world.error_shared = world.rank != first;
    if (world.rank == first) return local; /* its own message stays as it is */
    return vae_error((vae_status)verdict.status, "rank %d: %s", first, verdict.message);
}

vae_status vae_distributed_prepare(vae_backend *backend) {
    if (!world.launched || strcmp(vae_backend_name(backend), "cuda") != 0) return VAE_OK;
    return vae_nccl_prepare(backend);
}

vae_status vae_distributed_mean_gradients(vae_backend *backend, float *gradients, size_t count) {
    if (!world.launched) return VAE_OK;
    if (strcmp(vae_backend_name(backend), "cuda") == 0) return vae_nccl_mean(backend, gradients, count);
    if (strcmp(vae_backend_name(backend), "cpu") != 0)
        return vae_error(VAE_ERROR_INTERNAL, "data-parallel training: no gradient all-reduce for the %s backend",
                         vae_backend_name(backend));
    /* CPU backend memory is host memory. Open MPI's allreduce algorithms
     * (recursive doubling, ring, Rabenseifner) give every rank the same
     * bytes for a commutative sum; every rank then takes the same Adam step. */
    for (size_t done = 0; done < count; done += MPI_PIECE) {
        size_t piece = count - done < MPI_PIECE ? count - done : MPI_PIECE;
        MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, gradients + done, (int)piece, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD));
    }
    if (world.size > 1) {
        /* Each rank's gradient is the mean over its rows; the mean over the
         * global batch is the mean of the ranks' means (equal shares). */
        const float scale = 1.0f / (float)world.size;
        for (size_t i = 0; i < count; ++i) gradients[i] *= scale;
    }
    return VAE_OK;
}

void vae_distributed_heartbeat(void) {
    if (world.launched) vae_nccl_heartbeat();
}

void vae_distributed_device_idle(void) {
    if (world.launched) vae_nccl_device_idle();
}
