// A host NCCL subset over MPI (issue 23): the functions of the toolkit's
// nccl.h that src/distributed/nccl_allreduce.c calls, with NCCL's names and
// C linkage, so that the CUDA backend's data-parallel path runs under
// `mpirun -np N` on the host execution target, without GPUs or libnccl.
//
// The ranks of a communicator are the processes of MPI_COMM_WORLD (MPI is
// already up: distributed_mpi.c initialises it). A unique id carries a magic,
// the world size and a random nonce; ncclCommInitRank checks its arguments,
// then every rank agrees (one MPI_Allreduce) that all ranks accepted theirs
// and hold the same id before it makes the communicator's own MPI
// communicator, so a bad argument on one rank is refused on every rank
// instead of leaving the others waiting. ncclAllReduce checks that both
// buffers are device allocations of the host CUDA runtime (as the copies and
// launches do) and becomes stream work: it runs at once on a stream that is
// not capturing, and during a capture it is recorded with its argument
// values and runs again at every cudaGraphLaunch, like a kernel node. The
// reduction is MPI_Reduce to rank 0 then MPI_Bcast, so every rank holds the
// same bits whatever algorithm the MPI library picks (NCCL's ring gives all
// ranks the same result too); ncclAvg is the sum divided by the rank count.
// A collective that fails while replayed (work returns nothing) is kept as
// the communicator's asynchronous error, which ncclCommGetAsyncError reports.
//
// Threads: distributed_mpi.c asks for MPI_THREAD_FUNNELED, so only the
// thread that made a communicator calls MPI for it. nccl_allreduce.c's
// watchdog polls ncclCommGetAsyncError and may call ncclCommAbort from its
// own thread: both are safe there (the registry has a mutex, the error is
// atomic), and an abort from another thread only retires the communicator
// (no MPI call; the process is about to end).
//
// VAE_CUDA_HOST_NCCL_FAULT injects a failure, for tests of the callers'
// error paths (fault_requested below).

// MPI's C API only (Open MPI and MPICH otherwise pull in C++ bindings that
// need their own library).
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#include <nccl.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include "vae_cuda_host_runtime.h"

struct ncclComm {
    MPI_Comm mpi = MPI_COMM_NULL;
    int rank = 0;
    int size = 1;
    std::thread::id owner; // the thread that may call MPI for it
    std::atomic<int> async_error{ncclSuccess};
    std::atomic<bool> retired{false}; // destroyed or aborted: recorded work no longer runs
};

namespace {

constexpr char kIdMagic[16] = "vae_host_nccl_1";

// What ncclGetUniqueId writes into ncclUniqueId::internal.
struct IdContents {
    char magic[sizeof kIdMagic];
    uint64_t nonce;
    int32_t world_size;
};
static_assert(sizeof(IdContents) <= NCCL_UNIQUE_ID_BYTES, "the id's contents fit ncclUniqueId");

using CommPointer = std::shared_ptr<ncclComm>;

// Live communicators by handle; recorded work holds its own reference, so a
// graph replayed after ncclCommDestroy finds a retired one, not freed memory.
// Communicators aborted from another thread stay here (reachable) until exit.
std::mutex registry_mutex;
std::map<const ncclComm *, CommPointer> live_comms;
std::vector<CommPointer> abandoned_comms;
std::string last_error_text;
char last_error_copy[1024];

ncclResult_t fail(ncclResult_t result, const std::string &message) {
    std::lock_guard<std::mutex> lock(registry_mutex);
    last_error_text = message;
    std::fprintf(stderr, "vae_cuda_host nccl: %s\n", message.c_str());
    return result;
}

std::string mpi_message(int code) {
    char text[MPI_MAX_ERROR_STRING];
    int length = 0;
    if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) return "MPI error code " + std::to_string(code);
    return std::string(text, (size_t)length);
}

ncclResult_t mpi_failure(const char *call, int code) {
    return fail(ncclSystemError, std::string(call) + " failed: " + mpi_message(code));
}

#define MPI_OR_FAIL(call)                                                                                              \
    do {                                                                                                               \
        const int mpi_code_ = (call);                                                                                  \
        if (mpi_code_ != MPI_SUCCESS) return mpi_failure(#call, mpi_code_);                                            \
    } while (0)

ncclResult_t require_mpi(const char *function) {
    int initialised = 0, finalised = 0;
    if (MPI_Initialized(&initialised) != MPI_SUCCESS || !initialised || MPI_Finalized(&finalised) != MPI_SUCCESS ||
        finalised)
        return fail(ncclInvalidUsage, std::string(function) +
                                          ": MPI is not running (the host NCCL subset connects ranks over MPI: "
                                          "start the processes with mpirun)");
    return ncclSuccess;
}

// VAE_CUDA_HOST_NCCL_FAULT names a failure to inject (tests of the callers'
// error paths): "unique_id" makes ncclGetUniqueId fail,
// "all_reduce_rank_1" the third all-reduce that rank 1 runs.
bool fault_requested(const char *name) {
    const char *fault = std::getenv("VAE_CUDA_HOST_NCCL_FAULT");
    return fault != nullptr && std::strcmp(fault, name) == 0;
}

CommPointer find_comm(const ncclComm *comm) {
    std::lock_guard<std::mutex> lock(registry_mutex);
    auto it = live_comms.find(comm);
    return it == live_comms.end() ? nullptr : it->second;
}

uint64_t fresh_nonce() {
    static std::atomic<uint64_t> counter{0};
    timespec now{};
    clock_gettime(CLOCK_REALTIME, &now);
    uint64_t value = (uint64_t)now.tv_sec * 1000000007ull ^ (uint64_t)now.tv_nsec ^ ((uint64_t)getpid() << 32) ^
                     (++counter * 0x9e3779b97f4a7c15ull);
    // SplitMix64's finaliser: nearby clocks and pids give unrelated ids.
    value = (value ^ (value >> 30)) * 0xbf58476d1ce4e5b9ull;
    value = (value ^ (value >> 27)) * 0x94d049bb133111ebull;
    return value ^ (value >> 31);
}

bool element_type(ncclDataType_t type, MPI_Datatype *mpi, size_t *bytes) {
    switch (type) {
    case ncclInt8: *mpi = MPI_INT8_T, *bytes = 1; return true;
    case ncclUint8: *mpi = MPI_UINT8_T, *bytes = 1; return true;
    case ncclInt32: *mpi = MPI_INT32_T, *bytes = 4; return true;
    case ncclUint32: *mpi = MPI_UINT32_T, *bytes = 4; return true;
    case ncclInt64: *mpi = MPI_INT64_T, *bytes = 8; return true;
    case ncclUint64: *mpi = MPI_UINT64_T, *bytes = 8; return true;
    case ncclFloat32: *mpi = MPI_FLOAT, *bytes = 4; return true;
    case ncclFloat64: *mpi = MPI_DOUBLE, *bytes = 8; return true;
    default: return false; // half, bfloat16, fp8: MPI has no such types
    }
}

bool reduction(ncclRedOp_t op, MPI_Op *mpi) {
    switch (op) {
    case ncclSum:
    case ncclAvg: *mpi = MPI_SUM; return true;
    case ncclProd: *mpi = MPI_PROD; return true;
    case ncclMax: *mpi = MPI_MAX; return true;
    case ncclMin: *mpi = MPI_MIN; return true;
    default: return false; // ncclRedOpCreatePreMulSum's operators are not modelled
    }
}

template <typename T> void divide(void *values, size_t count, int size) {
    T *v = static_cast<T *>(values);
    const T divisor = (T)size;
    for (size_t i = 0; i < count; ++i) v[i] /= divisor;
}

// MPI counts are ints: large buffers go in pieces.
constexpr size_t kPiece = (size_t)1 << 30;

// The collective itself, on the owning thread: rank 0 reduces and
// broadcasts, so every rank receives the same bytes.
ncclResult_t all_reduce_now(ncclComm &comm, const void *send, void *receive, size_t count, ncclDataType_t type,
                            ncclRedOp_t op) {
    MPI_Datatype mpi_type;
    MPI_Op mpi_op;
    size_t bytes = 0;
    (void)element_type(type, &mpi_type, &bytes);
    (void)reduction(op, &mpi_op);
    for (size_t done = 0; done < count; done += kPiece) {
        const int piece = (int)(count - done < kPiece ? count - done : kPiece);
        const char *from = static_cast<const char *>(send) + done * bytes;
        char *to = static_cast<char *>(receive) + done * bytes;
        if (comm.rank == 0) {
            if (from != to) std::memcpy(to, from, (size_t)piece * bytes);
            MPI_OR_FAIL(MPI_Reduce(MPI_IN_PLACE, to, piece, mpi_type, mpi_op, 0, comm.mpi));
            if (op == ncclAvg && type == ncclFloat32) divide<float>(to, (size_t)piece, comm.size);
            if (op == ncclAvg && type == ncclFloat64) divide<double>(to, (size_t)piece, comm.size);
        } else {
            MPI_OR_FAIL(MPI_Reduce(from, nullptr, piece, mpi_type, mpi_op, 0, comm.mpi));
        }
        MPI_OR_FAIL(MPI_Bcast(to, piece, mpi_type, 0, comm.mpi));
    }
    return ncclSuccess;
}

// A stream's all-reduce, run now or replayed from a graph.
void run_all_reduce(const CommPointer &comm, const void *send, void *receive, size_t count, ncclDataType_t type,
                    ncclRedOp_t op) {
    if (comm->retired) {
        (void)fail(ncclInvalidUsage,
                   "ncclAllReduce replayed from a graph after its communicator was destroyed or aborted");
        return;
    }
    if (comm->async_error.load() != ncclSuccess) return; // a failed communicator runs nothing more
    if (std::this_thread::get_id() != comm->owner) {
        comm->async_error.store(fail(ncclInvalidUsage, "ncclAllReduce ran on a thread other than the one that "
                                                       "created the communicator (MPI is MPI_THREAD_FUNNELED)"));
        return;
    }
    // A fault for the tests: this rank's third collective fails as a lost
    // peer connection does, leaving the other ranks waiting in MPI.
    static int collectives_run = 0;
    if (comm->rank == 1 && fault_requested("all_reduce_rank_1") && ++collectives_run == 3) {
        comm->async_error.store(fail(ncclRemoteError, "ncclAllReduce: connection to a peer lost (fault injected by "
                                                      "VAE_CUDA_HOST_NCCL_FAULT=all_reduce_rank_1)"));
        return;
    }
    const ncclResult_t result = all_reduce_now(*comm, send, receive, count, type, op);
    if (result != ncclSuccess) comm->async_error.store(result);
}

bool ranges_overlap(const void *a, const void *b, size_t bytes) {
    const uintptr_t x = reinterpret_cast<uintptr_t>(a), y = reinterpret_cast<uintptr_t>(b);
    return x < y + bytes && y < x + bytes;
}

std::string describe(const void *pointer, size_t bytes) {
    char text[96];
    std::snprintf(text, sizeof text, "%p (%zu bytes)", pointer, bytes);
    return text;
}

std::string describe_comm(const ncclComm *comm) {
    char text[64];
    std::snprintf(text, sizeof text, "communicator %p", static_cast<const void *>(comm));
    return text;
}

} // namespace

extern "C" {

const char *ncclGetErrorString(ncclResult_t result) {
    switch (result) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error (run with NCCL_DEBUG=INFO for details)";
    case ncclSystemError: return "unhandled system error (run with NCCL_DEBUG=INFO for details)";
    case ncclInternalError: return "internal error - please report this issue to the NCCL developers";
    case ncclInvalidArgument: return "invalid argument (run with NCCL_DEBUG=WARN for details)";
    case ncclInvalidUsage: return "invalid usage (run with NCCL_DEBUG=WARN for details)";
    case ncclRemoteError: return "remote process exited or there was a network error";
    case ncclInProgress: return "NCCL operation in progress";
    default: return "unknown result code";
    }
}

// The last refusal's message, whichever communicator (as NCCL keeps one).
const char *ncclGetLastError(ncclComm_t comm) {
    (void)comm;
    std::lock_guard<std::mutex> lock(registry_mutex);
    std::snprintf(last_error_copy, sizeof last_error_copy, "%s", last_error_text.c_str());
    return last_error_copy;
}

ncclResult_t ncclGetUniqueId(ncclUniqueId *unique_id) {
    if (unique_id == nullptr) return fail(ncclInvalidArgument, "ncclGetUniqueId: uniqueId is NULL");
    ncclResult_t ready = require_mpi("ncclGetUniqueId");
    if (ready != ncclSuccess) return ready;
    // A fault for the tests: what NCCL returns when its bootstrap finds no
    // usable network interface (NCCL_SOCKET_IFNAME naming none, say).
    if (fault_requested("unique_id"))
        return fail(ncclSystemError, "ncclGetUniqueId: no usable network interface for the bootstrap (fault "
                                     "injected by VAE_CUDA_HOST_NCCL_FAULT=unique_id)");
    IdContents contents{};
    std::memcpy(contents.magic, kIdMagic, sizeof kIdMagic);
    contents.nonce = fresh_nonce();
    int world_size = 0;
    MPI_OR_FAIL(MPI_Comm_size(MPI_COMM_WORLD, &world_size));
    contents.world_size = world_size;
    std::memset(unique_id, 0, sizeof *unique_id);
    std::memcpy(unique_id->internal, &contents, sizeof contents);
    return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId comm_id, int rank) {
    ncclResult_t ready = require_mpi("ncclCommInitRank");
    if (ready != ncclSuccess) return ready;
    if (comm != nullptr) *comm = nullptr;
    int world_rank = 0, world_size = 0;
    MPI_OR_FAIL(MPI_Comm_rank(MPI_COMM_WORLD, &world_rank));
    MPI_OR_FAIL(MPI_Comm_size(MPI_COMM_WORLD, &world_size));
    IdContents id{};
    std::memcpy(&id, comm_id.internal, sizeof id);

    // This rank's verdict on its own arguments; nothing returns before the
    // agreement below, so that every rank takes part in it.
    std::string problem;
    if (comm == nullptr) {
        problem = "comm is NULL";
    } else if (std::memcmp(id.magic, kIdMagic, sizeof kIdMagic) != 0) {
        problem = "the unique id did not come from ncclGetUniqueId (broadcast rank 0's id to every rank)";
    } else if (id.world_size != world_size) {
        problem = "the unique id was made in a world of " + std::to_string(id.world_size) +
                  " processes, this one has " + std::to_string(world_size);
    } else if (nranks != world_size) {
        problem = "nranks = " + std::to_string(nranks) + ", but the host subset's communicators span the " +
                  std::to_string(world_size) + " processes of MPI_COMM_WORLD";
    } else if (rank < 0 || rank >= nranks) {
        problem = "rank " + std::to_string(rank) + " is outside [0, " + std::to_string(nranks) + ")";
    }
    // One round: any rank's refusal, and the smallest and largest nonce
    // (~nonce's maximum is the minimum), which differ when ranks hold
    // different ids (each made its own instead of receiving rank 0's).
    uint64_t verdict[3] = {problem.empty() ? 0u : 1u, id.nonce, ~id.nonce};
    MPI_OR_FAIL(MPI_Allreduce(MPI_IN_PLACE, verdict, 3, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD));
    if (!problem.empty())
        return fail(ncclInvalidArgument, "ncclCommInitRank (process " + std::to_string(world_rank) + "): " + problem);
    if (verdict[0] != 0)
        return fail(ncclInvalidArgument, "ncclCommInitRank (process " + std::to_string(world_rank) +
                                             "): another rank refused its arguments");
    if (verdict[1] != ~verdict[2])
        return fail(ncclInvalidArgument, "ncclCommInitRank (process " + std::to_string(world_rank) +
                                             "): the ranks hold different unique ids (rank 0's id must be "
                                             "broadcast to every rank)");

    // Ordered by the NCCL rank; a rank given twice leaves another missing.
    auto made = std::make_shared<ncclComm>();
    MPI_OR_FAIL(MPI_Comm_split(MPI_COMM_WORLD, 0, rank, &made->mpi));
    int placed = -1, duplicated = 0;
    int mpi_code = MPI_Comm_set_errhandler(made->mpi, MPI_ERRORS_RETURN);
    if (mpi_code == MPI_SUCCESS) mpi_code = MPI_Comm_rank(made->mpi, &placed);
    int mismatch = placed != rank;
    if (mpi_code == MPI_SUCCESS) mpi_code = MPI_Allreduce(&mismatch, &duplicated, 1, MPI_INT, MPI_MAX, made->mpi);
    if (mpi_code != MPI_SUCCESS || duplicated) {
        MPI_Comm_free(&made->mpi);
        if (mpi_code != MPI_SUCCESS) return mpi_failure("ncclCommInitRank: setting up the communicator", mpi_code);
        return fail(ncclInvalidArgument,
                    "ncclCommInitRank (process " + std::to_string(world_rank) + "): two processes gave the same rank");
    }
    made->rank = rank;
    made->size = nranks;
    made->owner = std::this_thread::get_id();
    *comm = made.get();
    std::lock_guard<std::mutex> lock(registry_mutex);
    live_comms[made.get()] = made;
    return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void *sendbuff, void *recvbuff, size_t count, ncclDataType_t datatype, ncclRedOp_t op,
                           ncclComm_t comm, cudaStream_t stream) {
    CommPointer found = find_comm(comm);
    if (!found)
        return fail(ncclInvalidArgument, "ncclAllReduce: " + describe_comm(comm) + " is not a live communicator");
    MPI_Datatype mpi_type;
    MPI_Op mpi_op;
    size_t element_bytes = 0;
    if (!element_type(datatype, &mpi_type, &element_bytes))
        return fail(ncclInvalidArgument, "ncclAllReduce: data type " + std::to_string((int)datatype) +
                                             " is not modelled by the host subset "
                                             "(8-, 32- and 64-bit integers, ncclFloat32 and ncclFloat64 are)");
    if (!reduction(op, &mpi_op))
        return fail(ncclInvalidArgument, "ncclAllReduce: reduction " + std::to_string((int)op) +
                                             " is not modelled by the host subset (sum, prod, max, min, avg are)");
    if (op == ncclAvg && datatype != ncclFloat32 && datatype != ncclFloat64)
        return fail(ncclInvalidArgument, "ncclAllReduce: ncclAvg on integers is not modelled by the host subset");
    if (count > SIZE_MAX / element_bytes)
        return fail(ncclInvalidArgument, "ncclAllReduce: count " + std::to_string(count) + " overflows");
    if (found->async_error.load() != ncclSuccess)
        return fail(ncclInvalidUsage, "ncclAllReduce: the communicator failed earlier (" +
                                          std::string(ncclGetErrorString((ncclResult_t)found->async_error.load())) +
                                          ")");
    if (count == 0) return ncclSuccess;
    const size_t bytes = count * element_bytes;
    for (const auto &[buffer, name] : {std::pair<const void *, const char *>{sendbuff, "sendbuff"},
                                       std::pair<const void *, const char *>{recvbuff, "recvbuff"}})
        if (!vae_cuda_host::is_device_memory(buffer, bytes))
            return fail(ncclInvalidArgument, std::string("ncclAllReduce: ") + name + " " + describe(buffer, bytes) +
                                                 " is not device memory (not in one live cudaMalloc allocation)");
    if (sendbuff != recvbuff && ranges_overlap(sendbuff, recvbuff, bytes))
        return fail(ncclInvalidArgument, "ncclAllReduce: sendbuff and recvbuff overlap without being equal");
    if (std::this_thread::get_id() != found->owner)
        return fail(ncclInvalidUsage, "ncclAllReduce: called from a thread other than the communicator's "
                                      "(MPI is MPI_THREAD_FUNNELED here)");
    vae_cuda_host::Work work = [found, sendbuff, recvbuff, count, datatype, op] {
        run_all_reduce(found, sendbuff, recvbuff, count, datatype, op);
    };
    if (vae_cuda_host::stream_is_capturing(stream)) {
        vae_cuda_host::record_work(stream, std::move(work));
        return ncclSuccess;
    }
    work(); // run now: its failure is this call's (the message is kept)
    return (ncclResult_t)found->async_error.load();
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t *async_error) {
    if (async_error == nullptr) return fail(ncclInvalidArgument, "ncclCommGetAsyncError: asyncError is NULL");
    CommPointer found = find_comm(comm);
    if (!found)
        return fail(ncclInvalidArgument,
                    "ncclCommGetAsyncError: " + describe_comm(comm) + " is not a live communicator");
    *async_error = (ncclResult_t)found->async_error.load();
    return ncclSuccess;
}

namespace {

ncclResult_t retire(ncclComm_t comm, const char *function) {
    CommPointer found;
    {
        std::lock_guard<std::mutex> lock(registry_mutex);
        auto it = live_comms.find(comm);
        if (it != live_comms.end()) {
            found = it->second;
            live_comms.erase(it);
        }
    }
    if (!found)
        return fail(ncclInvalidArgument, std::string(function) + ": " + describe_comm(comm) +
                                             " is not a live communicator (destroyed twice?)");
    found->retired = true;
    if (std::this_thread::get_id() != found->owner) {
        // The watchdog's abort: the owner may be inside MPI on it right now,
        // and only it may call MPI; the process ends next.
        std::lock_guard<std::mutex> lock(registry_mutex);
        abandoned_comms.push_back(found);
        return ncclSuccess;
    }
    int finalised = 0;
    if (MPI_Finalized(&finalised) == MPI_SUCCESS && !finalised && found->mpi != MPI_COMM_NULL)
        MPI_OR_FAIL(MPI_Comm_free(&found->mpi));
    return ncclSuccess;
}

} // namespace

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
    if (comm == nullptr) return ncclSuccess; // as NCCL: destroying NULL does nothing
    return retire(comm, "ncclCommDestroy");
}

ncclResult_t ncclCommAbort(ncclComm_t comm) {
    if (comm == nullptr) return ncclSuccess;
    return retire(comm, "ncclCommAbort");
}

} // extern "C"
