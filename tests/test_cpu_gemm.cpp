// The CPU backend's GEMMs (src/backends/cpu_gemm.c) by each library the build
// has, against the product in double: every transpose, beta 0 and 1, leading
// dimensions wider than the rows, the layers' shapes and odd ones, the
// degenerate k = 0; and the choice VAE_CPU_GEMM makes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "test_support.h"

extern "C" {
#include "backends/backend.h"
#include "backends/cpu_gemm.h"
#include "base/error.h"
}

namespace {

struct Shape {
    int m, n, k;
};

// C[m, n] (leading dimension ldc) = op(A) op(B) + beta C in double, and the
// sum of the terms' magnitudes (for a tolerance that float rounding respects).
void reference_gemm(bool transpose_a, bool transpose_b, const Shape &shape, const std::vector<float> &a, int lda,
                    const std::vector<float> &b, int ldb, float beta, const std::vector<float> &c_before, int ldc,
                    std::vector<double> &c, std::vector<double> &magnitude) {
    c.assign((size_t)shape.m * ldc, 0.0);
    magnitude.assign((size_t)shape.m * ldc, 0.0);
    for (int i = 0; i < shape.m; ++i)
        for (int j = 0; j < shape.n; ++j) {
            double sum = (double)beta * c_before[(size_t)i * ldc + j], size = std::fabs(sum);
            for (int p = 0; p < shape.k; ++p) {
                double left = transpose_a ? a[(size_t)p * lda + i] : a[(size_t)i * lda + p];
                double right = transpose_b ? b[(size_t)j * ldb + p] : b[(size_t)p * ldb + j];
                sum += left * right;
                size += std::fabs(left * right);
            }
            c[(size_t)i * ldc + j] = sum;
            magnitude[(size_t)i * ldc + j] = size;
        }
}

void check_library(vae_cpu_gemm_library library) {
    vae_cpu_gemm gemm{};
    gemm.precision = VAE_PRECISION_FP32;
    gemm.library = library;
    uint64_t seed = 1;
    const Shape shapes[] = {{128, 784, 400}, {400, 784, 128}, {128, 40, 400}, {1, 1, 1},
                            {3, 5, 7},       {17, 33, 65},    {129, 2, 257},  {5, 6, 0}};
    for (const Shape &shape : shapes)
        for (int transpose_a = 0; transpose_a < 2; ++transpose_a)
            for (int transpose_b = 0; transpose_b < 2; ++transpose_b)
                for (float beta : {0.0f, 1.0f}) {
                    SCOPED_TRACE(::testing::Message() << "m " << shape.m << " n " << shape.n << " k " << shape.k
                                                      << " A^T " << transpose_a << " B^T " << transpose_b << " beta "
                                                      << beta);
                    // Stored A is [m, k] or [k, m], B [k, n] or [n, k]; every row 3 floats wider.
                    const int a_rows = transpose_a ? shape.k : shape.m, a_columns = transpose_a ? shape.m : shape.k;
                    const int b_rows = transpose_b ? shape.n : shape.k, b_columns = transpose_b ? shape.k : shape.n;
                    const int lda = a_columns + 3, ldb = b_columns + 3, ldc = shape.n + 3;
                    std::vector<float> a = vae_test::random_normal((size_t)a_rows * lda + 1, seed++);
                    std::vector<float> b = vae_test::random_normal((size_t)b_rows * ldb + 1, seed++);
                    std::vector<float> c = vae_test::random_normal((size_t)shape.m * ldc, seed++);
                    const std::vector<float> c_before = c;
                    std::vector<double> expected, magnitude;
                    reference_gemm(transpose_a, transpose_b, shape, a, lda, b, ldb, beta, c_before, ldc, expected,
                                   magnitude);
                    ASSERT_EQ(vae_cpu_gemm_run(&gemm, transpose_a, transpose_b, shape.m, shape.n, shape.k, a.data(),
                                               lda, b.data(), ldb, beta, c.data(), ldc),
                              VAE_OK)
                        << vae_last_error();
                    for (int i = 0; i < shape.m; ++i)
                        for (int j = 0; j < ldc; ++j) {
                            const size_t at = (size_t)i * ldc + j;
                            if (j >= shape.n) {
                                // Past the row's n values: the padding is never written.
                                ASSERT_EQ(vae_test::float_bits(c[at]), vae_test::float_bits(c_before[at]))
                                    << "padding written at row " << i << " column " << j;
                                continue;
                            }
                            // fp32 sums of k terms: rounding grows as sqrt(k) ulps of the
                            // magnitude (at k = 784 about 0.014 against values near 28: a
                            // planted transpose or a dropped beta is off by the values).
                            ASSERT_NEAR(c[at], expected[at], 1e-6 * std::sqrt(shape.k + 1.0) * magnitude[at])
                                << "row " << i << " column " << j;
                        }
                }
    vae_cpu_gemm_release(&gemm);
}

TEST(CpuGemm, OpenBlasMatchesTheProductInDouble) { check_library(VAE_CPU_GEMM_OPENBLAS); }

TEST(CpuGemm, OneDnnMatchesTheProductInDouble) {
    if (!vae_cpu_gemm_library_available(VAE_CPU_GEMM_ONEDNN)) GTEST_SKIP() << "built without oneDNN";
    check_library(VAE_CPU_GEMM_ONEDNN);
}

// The two libraries on the same operands agree to float rounding, and are
// two libraries: their blockings sum in other orders, so some value differs
// in its last bits (a dispatch that ignored gemm.library would give the same
// bits twice).
TEST(CpuGemm, TheLibrariesAgree) {
    if (!vae_cpu_gemm_library_available(VAE_CPU_GEMM_ONEDNN)) GTEST_SKIP() << "built without oneDNN";
    vae_cpu_gemm openblas{}, onednn{};
    openblas.library = VAE_CPU_GEMM_OPENBLAS;
    onednn.library = VAE_CPU_GEMM_ONEDNN;
    const int m = 128, n = 512, k = 784;
    std::vector<float> a = vae_test::random_normal((size_t)m * k, 40), b = vae_test::random_normal((size_t)n * k, 41);
    std::vector<float> c_openblas((size_t)m * n), c_onednn((size_t)m * n);
    ASSERT_EQ(vae_cpu_gemm_run(&openblas, 0, 1, m, n, k, a.data(), k, b.data(), k, 0.0f, c_openblas.data(), n),
              VAE_OK);
    ASSERT_EQ(vae_cpu_gemm_run(&onednn, 0, 1, m, n, k, a.data(), k, b.data(), k, 0.0f, c_onednn.data(), n), VAE_OK);
    EXPECT_LT(vae_test::relative_error(c_onednn, c_openblas), 1e-5);
    EXPECT_NE(std::memcmp(c_onednn.data(), c_openblas.data(), c_onednn.size() * sizeof(float)), 0)
        << "oneDNN's product has OpenBLAS's bits: did oneDNN run?";
}

class ScopedVariable {
  public:
    ScopedVariable(const char *name, const char *value) : name_(name) {
        const char *before = std::getenv(name);
        had_ = before != nullptr;
        if (had_) before_ = before;
        if (value) setenv(name, value, 1);
        else unsetenv(name);
    }
    ~ScopedVariable() {
        if (had_) setenv(name_.c_str(), before_.c_str(), 1);
        else unsetenv(name_.c_str());
    }

  private:
    std::string name_, before_;
    bool had_ = false;
};

// The backend's device line (or the error) under VAE_CPU_GEMM = setting; the
// library its GEMMs run into *library.
std::string device_line(const char *setting, vae_status *status, vae_cpu_gemm_library *library = nullptr) {
    ScopedVariable variable("VAE_CPU_GEMM", setting);
    vae_backend *backend = nullptr;
    *status = vae_backend_create_cpu(&backend);
    if (*status != VAE_OK) return vae_last_error();
    std::string line = backend->device_name;
    if (library) *library = vae_cpu_backend_gemm(backend)->library;
    vae_backend_destroy(backend);
    return line;
}

TEST(CpuGemm, TheEnvironmentChoosesTheLibraryAndTheDeviceLineSaysWhich) {
    const bool onednn = vae_cpu_gemm_library_available(VAE_CPU_GEMM_ONEDNN);
    __builtin_cpu_init();
    const bool avx512 = __builtin_cpu_supports("avx512f");
    vae_status status;
    vae_cpu_gemm_library library;
    std::string line = device_line(nullptr, &status, &library);
    ASSERT_EQ(status, VAE_OK) << line;
    EXPECT_EQ(library, onednn && avx512 ? VAE_CPU_GEMM_ONEDNN : VAE_CPU_GEMM_OPENBLAS);
    const char *automatic = !onednn  ? "GEMMs: OpenBLAS (built without oneDNN)"
                            : avx512 ? "GEMMs: oneDNN "
                                     : "GEMMs: OpenBLAS (no AVX-512, where oneDNN is no faster)";
    EXPECT_NE(line.find(automatic), std::string::npos) << line;
    EXPECT_EQ(line, device_line("auto", &status)) << "auto is the default";
    line = device_line("openblas", &status, &library);
    ASSERT_EQ(status, VAE_OK) << line;
    EXPECT_EQ(library, VAE_CPU_GEMM_OPENBLAS);
    EXPECT_NE(line.find("GEMMs: OpenBLAS (VAE_CPU_GEMM=openblas)"), std::string::npos) << line;
    line = device_line("onednn", &status, &library);
    if (onednn) {
        ASSERT_EQ(status, VAE_OK) << line;
        EXPECT_EQ(library, VAE_CPU_GEMM_ONEDNN);
        EXPECT_NE(line.find("(VAE_CPU_GEMM=onednn)"), std::string::npos) << line;
    } else {
        EXPECT_EQ(status, VAE_ERROR_INVALID_ARGUMENT);
        EXPECT_NE(line.find("no oneDNN"), std::string::npos) << line;
    }
    line = device_line("mkl", &status);
    EXPECT_EQ(status, VAE_ERROR_INVALID_ARGUMENT);
    EXPECT_NE(line.find("VAE_CPU_GEMM=mkl: expected auto, onednn or openblas"), std::string::npos) << line;
}

}  // namespace
