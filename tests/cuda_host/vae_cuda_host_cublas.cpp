// A host cuBLAS subset (issue 23) on OpenBLAS: the functions of cublas_v2.h
// that src/backends/backend_cuda.c calls, with cuBLAS's names and C linkage.
// Column-major, as cuBLAS. Each call's arguments are checked as cuBLAS's
// documentation states them (leading dimensions, and every matrix inside one
// live device allocation of the host runtime, vae_cuda_host_cudart.cpp);
// a bad one is CUBLAS_STATUS_INVALID_VALUE with a message. The products run
// on the handle's stream: at once, or recorded while it captures, with alpha
// and beta read at the call (host pointer mode) as cuBLAS does.
//
// Precision as the GPU's: under CUBLAS_TF32_TENSOR_OP_MATH (or a
// CUBLAS_COMPUTE_32F_FAST_TF32 GemmEx) float operands are rounded to TF32
// (10 mantissa bits, to nearest with ties away, as cvt.rna.tf32.f32); bf16
// operands widen exactly to float; accumulation is in float.
#include "vae_cuda_host_runtime.h"

#include <cblas.h>
#include <cublas_v2.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

struct cublasContext {
    cudaStream_t stream = nullptr;
    cublasMath_t math = CUBLAS_DEFAULT_MATH;
};

namespace {

cublasStatus_t refuse_call(const std::string &message) {
    vae_cuda_host::refuse(cudaErrorInvalidValue, message);
    return CUBLAS_STATUS_INVALID_VALUE;
}

float tf32(float value) {
    uint32_t bits;
    std::memcpy(&bits, &value, sizeof bits);
    if ((bits & 0x7f800000u) != 0x7f800000u) bits = (bits + 0x1000u) & 0xffffe000u; // not inf or NaN
    std::memcpy(&value, &bits, sizeof value);
    return value;
}

float from_bfloat16(uint16_t half) {
    const uint32_t bits = (uint32_t)half << 16;
    float value;
    std::memcpy(&value, &bits, sizeof value);
    return value;
}

enum class Operand { kFloat, kFloatAsTf32, kBfloat16 };

// A stored matrix [rows, columns] (column-major, leading dimension ld) as
// float, packed (ld = rows), converted as the GPU converts it.
std::vector<float> as_float(const void *matrix, Operand type, int rows, int columns, int ld) {
    std::vector<float> packed((size_t)rows * (size_t)columns);
    for (int j = 0; j < columns; ++j)
        for (int i = 0; i < rows; ++i) {
            const size_t from = (size_t)j * (size_t)ld + (size_t)i;
            float value = type == Operand::kBfloat16 ? from_bfloat16(static_cast<const uint16_t *>(matrix)[from])
                                                     : static_cast<const float *>(matrix)[from];
            if (type == Operand::kFloatAsTf32) value = tf32(value);
            packed[(size_t)j * (size_t)rows + (size_t)i] = value;
        }
    return packed;
}

bool valid_operation(cublasOperation_t op) { return op == CUBLAS_OP_N || op == CUBLAS_OP_T; }

// One matrix argument: its leading dimension and its memory.
cublasStatus_t check_matrix(const char *function, const char *name, const void *matrix, int rows, int columns,
                            int ld, size_t element_bytes) {
    if (ld < (rows > 1 ? rows : 1))
        return refuse_call(std::string(function) + ": ld" + name + " " + std::to_string(ld) + " is less than its " +
                           std::to_string(rows) + " rows");
    if (rows == 0 || columns == 0) return CUBLAS_STATUS_SUCCESS;
    const size_t bytes = ((size_t)(columns - 1) * (size_t)ld + (size_t)rows) * element_bytes;
    if (!vae_cuda_host::is_device_accessible(matrix, bytes)) {
        char where[64];
        std::snprintf(where, sizeof where, "%p", matrix);
        return refuse_call(std::string(function) + ": " + name + " " + where + " (" + std::to_string(bytes) +
                           " bytes) is not in one live device allocation");
    }
    return CUBLAS_STATUS_SUCCESS;
}

// C = alpha op(A) op(B) + beta C, checked, then run or recorded.
cublasStatus_t gemm(const char *function, cublasHandle_t handle, cublasOperation_t op_a, cublasOperation_t op_b, int m,
                    int n, int k, const float *alpha, const void *a, Operand a_type, int lda, const void *b,
                    Operand b_type, int ldb, const float *beta, float *c, int ldc) {
    if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!valid_operation(op_a) || !valid_operation(op_b))
        return refuse_call(std::string(function) + ": only CUBLAS_OP_N and CUBLAS_OP_T are modelled");
    if (m < 0 || n < 0 || k < 0)
        return refuse_call(std::string(function) + ": a negative dimension (m " + std::to_string(m) + ", n " +
                           std::to_string(n) + ", k " + std::to_string(k) + ")");
    if (alpha == nullptr || beta == nullptr) return refuse_call(std::string(function) + ": alpha or beta is NULL");
    const int a_rows = op_a == CUBLAS_OP_N ? m : k, a_columns = op_a == CUBLAS_OP_N ? k : m;
    const int b_rows = op_b == CUBLAS_OP_N ? k : n, b_columns = op_b == CUBLAS_OP_N ? n : k;
    const size_t a_bytes = a_type == Operand::kBfloat16 ? 2 : 4, b_bytes = b_type == Operand::kBfloat16 ? 2 : 4;
    cublasStatus_t status = check_matrix(function, "A", a, a_rows, a_columns, lda, a_bytes);
    if (status == CUBLAS_STATUS_SUCCESS) status = check_matrix(function, "B", b, b_rows, b_columns, ldb, b_bytes);
    if (status == CUBLAS_STATUS_SUCCESS) status = check_matrix(function, "C", c, m, n, ldc, sizeof(float));
    if (status != CUBLAS_STATUS_SUCCESS) return status;
    if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
    const float alpha_value = *alpha, beta_value = *beta; // host pointer mode: read now, as cuBLAS does
    vae_cuda_host::Work work = [=] {
        // beta 0: C is not read (cuBLAS's rule; fresh memory may hold NaN).
        if (beta_value == 0.0f)
            for (int j = 0; j < n; ++j) std::memset(c + (size_t)j * (size_t)ldc, 0, (size_t)m * sizeof(float));
        if (k == 0) {
            if (beta_value != 0.0f)
                for (int j = 0; j < n; ++j)
                    for (int i = 0; i < m; ++i) c[(size_t)j * (size_t)ldc + (size_t)i] *= beta_value;
            return;
        }
        const std::vector<float> a_float = as_float(a, a_type, a_rows, a_columns, lda);
        const std::vector<float> b_float = as_float(b, b_type, b_rows, b_columns, ldb);
        cblas_sgemm(CblasColMajor, op_a == CUBLAS_OP_N ? CblasNoTrans : CblasTrans,
                    op_b == CUBLAS_OP_N ? CblasNoTrans : CblasTrans, m, n, k, alpha_value, a_float.data(), a_rows,
                    b_float.data(), b_rows, beta_value, c, ldc);
    };
    if (vae_cuda_host::stream_is_capturing(handle->stream)) {
        vae_cuda_host::record_work(handle->stream, std::move(work));
    } else {
        work();
    }
    return CUBLAS_STATUS_SUCCESS;
}

} // namespace

cublasStatus_t cublasCreate_v2(cublasHandle_t *handle) {
    if (handle == nullptr) return refuse_call("cublasCreate: handle is NULL");
    *handle = new cublasContext;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy_v2(cublasHandle_t handle) {
    if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
    delete handle;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream_v2(cublasHandle_t handle, cudaStream_t stream) {
    if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
    handle->stream = stream;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t handle, void *workspace, size_t bytes) {
    if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (bytes > 0 && !vae_cuda_host::is_device_memory(workspace, bytes))
        return refuse_call("cublasSetWorkspace: the workspace is not in one live cudaMalloc allocation");
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
    if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
    const unsigned int base = (unsigned int)mode & ~(unsigned int)CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION;
    if (base != CUBLAS_DEFAULT_MATH && base != CUBLAS_TF32_TENSOR_OP_MATH && base != CUBLAS_PEDANTIC_MATH)
        return refuse_call("cublasSetMathMode: mode " + std::to_string((int)mode) + " is not modelled");
    handle->math = mode;
    return CUBLAS_STATUS_SUCCESS;
}

const char *cublasGetStatusString(cublasStatus_t status) {
    switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "the operation completed successfully";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "the resource allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "an unsupported value or parameter was passed to the function";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "the functionality requested is not supported";
    default: return "unknown error";
    }
}

cublasStatus_t cublasSgemm_v2(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                              int k, const float *alpha, const float *A, int lda, const float *B, int ldb,
                              const float *beta, float *C, int ldc) {
    const Operand operand =
        handle != nullptr && (handle->math & 0xf) == CUBLAS_TF32_TENSOR_OP_MATH ? Operand::kFloatAsTf32 : Operand::kFloat;
    return gemm("cublasSgemm", handle, transa, transb, m, n, k, alpha, A, operand, lda, B, operand, ldb, beta, C, ldc);
}

cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                            int k, const void *alpha, const void *A, cudaDataType Atype, int lda, const void *B,
                            cudaDataType Btype, int ldb, const void *beta, void *C, cudaDataType Ctype, int ldc,
                            cublasComputeType_t computeType, cublasGemmAlgo_t algo) {
    (void)algo; // any algorithm gives float accumulation here
    if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (Ctype != CUDA_R_32F) return refuse_call("cublasGemmEx: only float C (CUDA_R_32F) is modelled");
    if (computeType != CUBLAS_COMPUTE_32F && computeType != CUBLAS_COMPUTE_32F_FAST_TF32 &&
        computeType != CUBLAS_COMPUTE_32F_PEDANTIC)
        return refuse_call("cublasGemmEx: compute type " + std::to_string((int)computeType) + " is not modelled");
    const bool tf32_math = computeType == CUBLAS_COMPUTE_32F_FAST_TF32 ||
                           (computeType == CUBLAS_COMPUTE_32F && (handle->math & 0xf) == CUBLAS_TF32_TENSOR_OP_MATH);
    Operand operands[2];
    const cudaDataType types[2] = {Atype, Btype};
    for (int i = 0; i < 2; ++i) {
        if (types[i] == CUDA_R_16BF) {
            operands[i] = Operand::kBfloat16;
        } else if (types[i] == CUDA_R_32F) {
            operands[i] = tf32_math ? Operand::kFloatAsTf32 : Operand::kFloat;
        } else {
            return refuse_call("cublasGemmEx: operand type " + std::to_string((int)types[i]) +
                               " is not modelled (CUDA_R_32F and CUDA_R_16BF are)");
        }
    }
    // Mixed bf16 and float operands are no cuBLAS combination.
    if ((operands[0] == Operand::kBfloat16) != (operands[1] == Operand::kBfloat16))
        return refuse_call("cublasGemmEx: A and B types differ (no such cuBLAS combination)");
    return gemm("cublasGemmEx", handle, transa, transb, m, n, k, static_cast<const float *>(alpha), A, operands[0], lda,
                B, operands[1], ldb, static_cast<const float *>(beta), static_cast<float *>(C), ldc);
}
