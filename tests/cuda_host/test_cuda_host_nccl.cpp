// The host NCCL subset over MPI (vae_cuda_host_nccl.cpp) itself, run by
// ctest under `mpirun -np 2` (every rank runs every test, so the
// collectives pair up; any world size works): sums, averages, maxima in
// place and out of place with the same bits on every rank, a captured
// all-reduce that runs at each graph launch with its recorded arguments,
// the refusals (bad ranks and ids on every rank at once, unmodelled types
// and reductions, host pointers, buffers past their allocation, dead
// communicators) with their messages, and an abort from another thread (the
// watchdog's).
#include <gtest/gtest.h>

#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#include <nccl.h>

#include <cuda_runtime_api.h>

#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

int world_rank() {
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    return rank;
}

int world_size() {
    int size = 1;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    return size;
}

// Rank 0's id on every rank, as nccl_allreduce.c gets it.
ncclUniqueId shared_id() {
    ncclUniqueId id;
    std::memset(&id, 0, sizeof id);
    if (world_rank() == 0) { EXPECT_EQ(ncclGetUniqueId(&id), ncclSuccess); }
    EXPECT_EQ(MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD), MPI_SUCCESS);
    return id;
}

ncclComm_t make_comm() {
    ncclComm_t comm = nullptr;
    EXPECT_EQ(ncclCommInitRank(&comm, world_size(), shared_id(), world_rank()), ncclSuccess)
        << ncclGetLastError(nullptr);
    return comm;
}

template <typename T> T *device_copy(const std::vector<T> &values) {
    void *device = nullptr;
    EXPECT_EQ(cudaMalloc(&device, values.size() * sizeof(T)), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(device, values.data(), values.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
    return static_cast<T *>(device);
}

template <typename T> std::vector<T> host_copy(const T *device, size_t count) {
    std::vector<T> values(count);
    EXPECT_EQ(cudaMemcpy(values.data(), device, count * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return values;
}

// Whether every rank holds these bytes.
bool same_on_every_rank(const void *bytes, size_t size) {
    std::vector<unsigned char> root(static_cast<const unsigned char *>(bytes),
                                    static_cast<const unsigned char *>(bytes) + size);
    EXPECT_EQ(MPI_Bcast(root.data(), (int)size, MPI_BYTE, 0, MPI_COMM_WORLD), MPI_SUCCESS);
    int mine = std::memcmp(root.data(), bytes, size) == 0, all = 0;
    EXPECT_EQ(MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD), MPI_SUCCESS);
    return all == 1;
}

TEST(CudaHostNccl, AllReduceSumsAveragesAndMaximaOnEveryRank) {
    const int rank = world_rank(), size = world_size();
    ncclComm_t comm = make_comm();
    ASSERT_NE(comm, nullptr);
    const int count = 7;
    // Rank r holds (r + 1) * (i + 1) + 0.1: sums in any order round alike
    // closely enough for a relative check, exactly for two ranks.
    std::vector<float> mine(count);
    for (int i = 0; i < count; ++i) mine[(size_t)i] = (float)((rank + 1) * (i + 1)) + 0.1f;
    float *averaged = device_copy(mine);
    ASSERT_EQ(ncclAllReduce(averaged, averaged, count, ncclFloat, ncclAvg, comm, nullptr), ncclSuccess);
    std::vector<float> average = host_copy(averaged, count);
    for (int i = 0; i < count; ++i) {
        double expected = 0;
        for (int r = 0; r < size; ++r) expected += (double)((float)((r + 1) * (i + 1)) + 0.1f);
        EXPECT_NEAR(average[(size_t)i], expected / size, 1e-6 * expected) << i;
    }
    EXPECT_TRUE(same_on_every_rank(average.data(), average.size() * sizeof(float)));

    // Out of place: the send buffer stays.
    std::vector<int32_t> integers = {rank, 10 * rank, -rank, 1};
    int32_t *send = device_copy(integers);
    int32_t *receive = device_copy(std::vector<int32_t>(4, -7));
    ASSERT_EQ(ncclAllReduce(send, receive, 4, ncclInt32, ncclSum, comm, nullptr), ncclSuccess);
    const int rank_sum = size * (size - 1) / 2;
    EXPECT_EQ(host_copy(receive, 4), (std::vector<int32_t>{rank_sum, 10 * rank_sum, -rank_sum, size}));
    EXPECT_EQ(host_copy(send, 4), integers);

    double *largest = device_copy(std::vector<double>{(double)rank, -(double)rank});
    ASSERT_EQ(ncclAllReduce(largest, largest, 2, ncclDouble, ncclMax, comm, nullptr), ncclSuccess);
    EXPECT_EQ(host_copy(largest, 2), (std::vector<double>{(double)(size - 1), 0.0}));

    ncclResult_t async = ncclInternalError;
    EXPECT_EQ(ncclCommGetAsyncError(comm, &async), ncclSuccess);
    EXPECT_EQ(async, ncclSuccess);
    EXPECT_EQ(ncclCommDestroy(comm), ncclSuccess);
    for (void *pointer : {(void *)averaged, (void *)send, (void *)receive, (void *)largest})
        EXPECT_EQ(cudaFree(pointer), cudaSuccess);
}

// As nccl_allreduce.c runs it: captured into a graph on the backend's
// stream, then each cudaGraphLaunch all-reduces what the buffer holds then.
TEST(CudaHostNccl, CapturedAllReduceRunsAtEveryGraphLaunch) {
    const int rank = world_rank(), size = world_size();
    ncclComm_t comm = make_comm();
    ASSERT_NE(comm, nullptr);
    cudaStream_t stream = nullptr;
    ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
    float *values = device_copy(std::vector<float>{(float)(rank + 1), 1.0f});

    ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
    ASSERT_EQ(ncclAllReduce(values, values, 2, ncclFloat, ncclSum, comm, stream), ncclSuccess);
    cudaGraph_t graph = nullptr;
    ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
    EXPECT_EQ(host_copy(values, 2), (std::vector<float>{(float)(rank + 1), 1.0f})) << "captured, not run";
    cudaGraphExec_t executable = nullptr;
    ASSERT_EQ(cudaGraphInstantiate(&executable, graph, 0), cudaSuccess);

    const float rank_sum = (float)(size * (size + 1) / 2);
    ASSERT_EQ(cudaGraphLaunch(executable, stream), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    EXPECT_EQ(host_copy(values, 2), (std::vector<float>{rank_sum, (float)size}));
    ASSERT_EQ(cudaGraphLaunch(executable, stream), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    EXPECT_EQ(host_copy(values, 2), (std::vector<float>{rank_sum * (float)size, (float)(size * size)}));

    // A graph replayed after its communicator is gone runs no collective
    // (and does not crash): the buffer stays.
    EXPECT_EQ(ncclCommDestroy(comm), ncclSuccess);
    ASSERT_EQ(cudaGraphLaunch(executable, stream), cudaSuccess);
    EXPECT_EQ(host_copy(values, 2), (std::vector<float>{rank_sum * (float)size, (float)(size * size)}));
    EXPECT_EQ(cudaGraphExecDestroy(executable), cudaSuccess);
    EXPECT_EQ(cudaGraphDestroy(graph), cudaSuccess);
    EXPECT_EQ(cudaStreamDestroy(stream), cudaSuccess);
    EXPECT_EQ(cudaFree(values), cudaSuccess);
}

void expect_refused(ncclResult_t result, ncclResult_t expected, const char *message_part) {
    EXPECT_EQ(result, expected) << ncclGetErrorString(result);
    const std::string message = ncclGetLastError(nullptr);
    EXPECT_NE(message.find(message_part), std::string::npos)
        << "\"" << message << "\" lacks \"" << message_part << "\"";
}

TEST(CudaHostNccl, RefusesBadInitArgumentsOnEveryRank) {
    const int rank = world_rank(), size = world_size();
    ncclComm_t comm = reinterpret_cast<ncclComm_t>(&comm);
    expect_refused(ncclCommInitRank(&comm, size, shared_id(), size), ncclInvalidArgument, "is outside [0,");
    EXPECT_EQ(comm, nullptr);
    expect_refused(ncclCommInitRank(&comm, size + 1, shared_id(), rank), ncclInvalidArgument, "nranks = ");
    ncclUniqueId zeros;
    std::memset(&zeros, 0, sizeof zeros);
    expect_refused(ncclCommInitRank(&comm, size, zeros, rank), ncclInvalidArgument,
                   "did not come from ncclGetUniqueId");
    expect_refused(ncclCommInitRank(nullptr, size, shared_id(), rank), ncclInvalidArgument, "comm is NULL");
    if (size >= 2) {
        // One rank's mistake is every rank's refusal (none waits for it).
        expect_refused(ncclCommInitRank(&comm, size, shared_id(), rank == 1 ? -1 : rank), ncclInvalidArgument,
                       rank == 1 ? "rank -1 is outside" : "another rank refused its arguments");
        // Each rank made its own id instead of receiving rank 0's.
        ncclUniqueId own;
        ASSERT_EQ(ncclGetUniqueId(&own), ncclSuccess);
        expect_refused(ncclCommInitRank(&comm, size, own, rank), ncclInvalidArgument, "different unique ids");
        // Every rank says it is rank 0.
        expect_refused(ncclCommInitRank(&comm, size, shared_id(), 0), ncclInvalidArgument,
                       "two processes gave the same rank");
    }
    EXPECT_EQ(comm, nullptr);
    // The ranks are still in step: a good communicator follows.
    comm = make_comm();
    ASSERT_NE(comm, nullptr);
    EXPECT_EQ(ncclCommDestroy(comm), ncclSuccess);
}

TEST(CudaHostNccl, RefusesWhatItDoesNotModelAndHostPointers) {
    ncclComm_t comm = make_comm();
    ASSERT_NE(comm, nullptr);
    float *values = device_copy(std::vector<float>(8, 1.0f));
    std::vector<float> host(8, 1.0f);
    expect_refused(ncclAllReduce(host.data(), host.data(), 8, ncclFloat, ncclSum, comm, nullptr), ncclInvalidArgument,
                   "sendbuff");
    expect_refused(ncclAllReduce(values, host.data(), 8, ncclFloat, ncclSum, comm, nullptr), ncclInvalidArgument,
                   "recvbuff");
    expect_refused(ncclAllReduce(values, values, 9, ncclFloat, ncclSum, comm, nullptr), ncclInvalidArgument,
                   "not device memory");
    expect_refused(ncclAllReduce(values, values + 1, 4, ncclFloat, ncclSum, comm, nullptr), ncclInvalidArgument,
                   "overlap");
    expect_refused(ncclAllReduce(values, values, 8, ncclFloat16, ncclSum, comm, nullptr), ncclInvalidArgument,
                   "data type 6");
    expect_refused(ncclAllReduce(values, values, 8, ncclBfloat16, ncclSum, comm, nullptr), ncclInvalidArgument,
                   "data type 9");
    expect_refused(ncclAllReduce(values, values, 2, ncclInt32, ncclAvg, comm, nullptr), ncclInvalidArgument,
                   "ncclAvg on integers");
    expect_refused(ncclAllReduce(values, values, 8, ncclFloat, (ncclRedOp_t)17, comm, nullptr), ncclInvalidArgument,
                   "reduction 17");
    expect_refused(ncclAllReduce(values, values, 8, ncclFloat, ncclSum, nullptr, nullptr), ncclInvalidArgument,
                   "is not a live communicator");
    // Nothing ran: the buffer is as it was, the communicator still works.
    ncclResult_t async = ncclInternalError;
    EXPECT_EQ(ncclCommGetAsyncError(comm, &async), ncclSuccess);
    EXPECT_EQ(async, ncclSuccess);
    ASSERT_EQ(ncclAllReduce(values, values, 8, ncclFloat, ncclAvg, comm, nullptr), ncclSuccess);
    EXPECT_EQ(host_copy(values, 8), std::vector<float>(8, 1.0f));
    EXPECT_EQ(ncclCommDestroy(comm), ncclSuccess);
    expect_refused(ncclAllReduce(values, values, 8, ncclFloat, ncclSum, comm, nullptr), ncclInvalidArgument,
                   "is not a live communicator");
    expect_refused(ncclCommDestroy(comm), ncclInvalidArgument, "destroyed twice?");
    expect_refused(ncclCommGetAsyncError(comm, &async), ncclInvalidArgument, "is not a live communicator");
    EXPECT_EQ(cudaFree(values), cudaSuccess);
    EXPECT_STREQ(ncclGetErrorString(ncclInvalidArgument), "invalid argument (run with NCCL_DEBUG=WARN for details)");
}

// nccl_allreduce.c's watchdog aborts from its own thread: the communicator
// is retired there without an MPI call, and refused afterwards.
TEST(CudaHostNccl, AnAbortFromAnotherThreadRetiresTheCommunicator) {
    ncclComm_t comm = make_comm();
    ASSERT_NE(comm, nullptr);
    ncclResult_t aborted = ncclInternalError;
    std::thread watchdog([&] {
        ncclResult_t async = ncclInternalError;
        EXPECT_EQ(ncclCommGetAsyncError(comm, &async), ncclSuccess);
        EXPECT_EQ(async, ncclSuccess);
        aborted = ncclCommAbort(comm);
    });
    watchdog.join();
    EXPECT_EQ(aborted, ncclSuccess);
    float *values = device_copy(std::vector<float>(2, 1.0f));
    expect_refused(ncclAllReduce(values, values, 2, ncclFloat, ncclSum, comm, nullptr), ncclInvalidArgument,
                   "is not a live communicator");
    EXPECT_EQ(cudaFree(values), cudaSuccess);
}

} // namespace

int main(int argc, char **argv) {
    testing::InitGoogleTest(&argc, argv);
    int provided = 0;
    // As distributed_mpi.c: only the main thread calls MPI.
    if (MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) return 2;
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    const int result = RUN_ALL_TESTS();
    MPI_Finalize();
    return result;
}
