// ELBO and IWAE evaluation against a model whose log-likelihood is known in
// closed form: a linear-Gaussian VAE (no hidden layers, gaussian_fixed
// likelihood), p(z) = N(0, I), p(x|z) = N(W z + b, e^s I), so that
//   p(x) = N(b, W W^T + e^s I).
// The model is written as a checkpoint with chosen weights and evaluated
// through vae_trainer_load + vae_trainer_evaluate on a small .npy dataset.
//
// Two encoders:
//  - a deliberately imperfect one: the ELBO sits strictly below log p(x) and
//    the IWAE estimate climbs towards log p(x) as K grows;
//  - the exact posterior (W has orthogonal columns, so the posterior is a
//    diagonal Gaussian the engine's encoder can express): every importance
//    weight then equals p(x), so the IWAE estimate equals log p(x) for every K
//    up to float32 rounding, and the ELBO matches it up to its Monte Carlo
//    noise. Dropping any term of the estimator (log p(z), log q(z|x), the
//    -log K) breaks that equality.
// Monte Carlo tolerances are computed from the model (see the helpers), not
// guessed.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

extern "C" {
#include "io/checkpoint.h"
}
#include "test_support.h"
#include "vae/vae.h"

namespace {

constexpr int kInputDim = 5;   // D
constexpr int kLatentDim = 2;  // Z
constexpr int kTestPoints = 2000;
constexpr float kDecoderLogvar = -2.0f;  // s: exactly representable
constexpr double kLog2Pi = 1.8378770664093454836;

// Orthogonal columns with entries exact in float32 (dot product exactly 0),
// so W^T W is exactly diagonal and the exact posterior is diagonal.
const float kDecoderWeight[kInputDim][kLatentDim] = {
    {0.5f, 0.25f}, {0.25f, 0.5f}, {-0.25f, 0.5f}, {0.5f, -0.25f}, {0.0f, 0.5f}};
const float kDecoderBias[kInputDim] = {0.5f, 0.4f, 0.6f, 0.5f, 0.45f};

struct Encoder {
    float weight[2 * kLatentDim][kInputDim];  // rows 0..Z-1 mu, Z..2Z-1 logvar
    float bias[2 * kLatentDim];
};

double decoder_variance() { return std::exp((double)kDecoderLogvar); }

// The exact posterior q(z|x) = N(A (x - b), Sigma), Sigma = (I + W^T W / s2)^-1,
// A = Sigma W^T / s2: diagonal because W^T W is.
Encoder exact_posterior_encoder() {
    Encoder e{};
    double s2 = decoder_variance();
    for (int j = 0; j < kLatentDim; ++j) {
        double column_norm = 0.0;
        for (int i = 0; i < kInputDim; ++i) column_norm += (double)kDecoderWeight[i][j] * kDecoderWeight[i][j];
        double sigma = 1.0 / (1.0 + column_norm / s2);
        double bias = 0.0;
        for (int i = 0; i < kInputDim; ++i) {
            double a = sigma * kDecoderWeight[i][j] / s2;
            e.weight[j][i] = (float)a;
            bias -= a * kDecoderBias[i];
            e.weight[kLatentDim + j][i] = 0.0f;
        }
        e.bias[j] = (float)bias;
        e.bias[kLatentDim + j] = (float)std::log(sigma);
    }
    return e;
}

// Reasonable but wrong: means shrunk by 20% and shifted, variances too wide.
Encoder imperfect_encoder() {
    Encoder e = exact_posterior_encoder();
    for (int j = 0; j < kLatentDim; ++j) {
        for (int i = 0; i < kInputDim; ++i) e.weight[j][i] *= 0.8f;
        e.bias[j] += 0.1f;
        e.bias[kLatentDim + j] += 0.4f;
    }
    return e;
}

// ---------------------------------------------------------------- files

void write_npy(const std::string &path, const std::vector<float> &values, int rows, int cols) {
    std::string shape = "(" + std::to_string(rows) + ", " + std::to_string(cols) + ")";
    vae_test::write_file(path, vae_test::npy_file(vae_test::npy_dict("<f4", shape), vae_test::raw_bytes(values)));
}

std::string model_config_text(const std::string &data_folder) {
    vae_config config;
    vae_config_defaults(&config);
    std::string ini = "[data]\npath = " + data_folder +
                      "\nbinarize = none\n"
                      "[model]\nlatent_dim = 2\nhidden =\ndecoder_hidden =\nlikelihood = gaussian_fixed\n"
                      "gaussian_fixed_logvar = -2\n"
                      "[train]\nseed = 7\neval_batch_size = 128\n";
    EXPECT_EQ(vae_config_load_string(&config, ini.c_str(), "test_iwae config"), VAE_OK) << vae_last_error();
    char *text = nullptr;
    EXPECT_EQ(vae_config_to_string(&config, &text), VAE_OK) << vae_last_error();
    std::string result = text ? text : "";
    std::free(text);
    return result;
}

void write_checkpoint(const std::string &path, const std::string &config_text, const Encoder &encoder) {
    vae_checkpoint_tensor tensors[4];
    std::memset(tensors, 0, sizeof tensors);
    std::snprintf(tensors[0].name, sizeof tensors[0].name, "encoder.0.weight");
    tensors[0].rank = 2;
    tensors[0].shape[0] = 2 * kLatentDim;
    tensors[0].shape[1] = kInputDim;
    tensors[0].data = &encoder.weight[0][0];
    std::snprintf(tensors[1].name, sizeof tensors[1].name, "encoder.0.bias");
    tensors[1].rank = 1;
    tensors[1].shape[0] = 2 * kLatentDim;
    tensors[1].data = encoder.bias;
    std::snprintf(tensors[2].name, sizeof tensors[2].name, "decoder.0.weight");
    tensors[2].rank = 2;
    tensors[2].shape[0] = kInputDim;
    tensors[2].shape[1] = kLatentDim;
    tensors[2].data = &kDecoderWeight[0][0];
    std::snprintf(tensors[3].name, sizeof tensors[3].name, "decoder.0.bias");
    tensors[3].rank = 1;
    tensors[3].shape[0] = kInputDim;
    tensors[3].data = kDecoderBias;
    const char *keys[] = {"engine", "config", "step", "epoch", "seed", "skipped_steps", "nonfinite_seen",
                          "input_dim", "image_rows", "image_cols"};
    std::string input_dim = std::to_string(kInputDim);
    const char *values[] = {"test_iwae", config_text.c_str(), "0", "0", "7", "0", "0", input_dim.c_str(), "0", "0"};
    ASSERT_EQ(vae_checkpoint_write(path.c_str(), tensors, 4, keys, values, 10), VAE_OK) << vae_last_error();
}

// ---------------------------------------------------------------- exact math (double)

// log N(x; b, W W^T + s2 I) through a Cholesky factor of the D x D covariance.
double exact_log_likelihood(const float *x) {
    double covariance[kInputDim][kInputDim];
    for (int r = 0; r < kInputDim; ++r)
        for (int c = 0; c < kInputDim; ++c) {
            double sum = r == c ? decoder_variance() : 0.0;
            for (int j = 0; j < kLatentDim; ++j) sum += (double)kDecoderWeight[r][j] * kDecoderWeight[c][j];
            covariance[r][c] = sum;
        }
    double lower[kInputDim][kInputDim] = {};
    for (int r = 0; r < kInputDim; ++r)
        for (int c = 0; c <= r; ++c) {
            double sum = covariance[r][c];
            for (int k = 0; k < c; ++k) sum -= lower[r][k] * lower[c][k];
            lower[r][c] = r == c ? std::sqrt(sum) : sum / lower[c][c];
        }
    double solved[kInputDim], log_determinant = 0.0, quadratic = 0.0;
    for (int r = 0; r < kInputDim; ++r) {
        double sum = (double)x[r] - kDecoderBias[r];
        for (int k = 0; k < r; ++k) sum -= lower[r][k] * solved[k];
        solved[r] = sum / lower[r][r];
        quadratic += solved[r] * solved[r];
        log_determinant += 2.0 * std::log(lower[r][r]);
    }
    return -0.5 * (kInputDim * kLog2Pi + log_determinant + quadratic);
}

struct Posterior {
    double mu[kLatentDim], variance[kLatentDim];
};

Posterior encode(const Encoder &e, const float *x) {
    Posterior q;
    for (int j = 0; j < kLatentDim; ++j) {
        double mu = e.bias[j], logvar = e.bias[kLatentDim + j];
        for (int i = 0; i < kInputDim; ++i) {
            mu += (double)e.weight[j][i] * x[i];
            logvar += (double)e.weight[kLatentDim + j][i] * x[i];
        }
        q.mu[j] = mu;
        q.variance[j] = std::exp(logvar);
    }
    return q;
}

double log_decoder(const float *x, const double *z) {
    double s2 = decoder_variance(), sum = 0.0;
    for (int i = 0; i < kInputDim; ++i) {
        double mean = kDecoderBias[i];
        for (int j = 0; j < kLatentDim; ++j) mean += (double)kDecoderWeight[i][j] * z[j];
        double diff = x[i] - mean;
        sum += -0.5 * (kLog2Pi + kDecoderLogvar + diff * diff / s2);
    }
    return sum;
}

// What the engine's ELBO estimates and how noisy its estimate is.
struct ElboFacts {
    double expected_elbo;       // mean over points of the exact ELBO
    double per_sample_variance; // mean over points of Var_q[log p(x|z)] (one sample)
    double log_weight_variance; // mean over points of Var_q[log p(x,z) - log q(z|x)]
};

// The exact ELBO of a linear-Gaussian model:
//   E_q log p(x|z) = -D/2 (log 2pi + s) - (|r|^2 + sum_j S_j |w_j|^2) / (2 s2), r = x - b - W mu
//   KL = 1/2 sum_j (mu_j^2 + S_j - 1 - log S_j)
// Var_q log p(x|z) = (4 r^T M M^T r + 2 tr((M^T M)^2)) / (4 s2^2), M = W diag(sqrt S)
// (the variance of a Gaussian quadratic form). The importance weight's
// log-variance is estimated by plain Monte Carlo with a seeded generator.
ElboFacts elbo_facts(const Encoder &encoder, const std::vector<float> &data, int points) {
    ElboFacts facts{0, 0, 0};
    double s2 = decoder_variance();
    std::mt19937_64 generator(20240611);
    std::normal_distribution<double> normal(0.0, 1.0);
    for (int n = 0; n < points; ++n) {
        const float *x = &data[(size_t)n * kInputDim];
        Posterior q = encode(encoder, x);
        double residual[kInputDim], spread = 0.0, kl = 0.0;
        for (int i = 0; i < kInputDim; ++i) {
            residual[i] = x[i] - kDecoderBias[i];
            for (int j = 0; j < kLatentDim; ++j) residual[i] -= (double)kDecoderWeight[i][j] * q.mu[j];
        }
        double residual_norm = 0.0;
        for (int i = 0; i < kInputDim; ++i) residual_norm += residual[i] * residual[i];
        for (int j = 0; j < kLatentDim; ++j) {
            double column_norm = 0.0;
            for (int i = 0; i < kInputDim; ++i) column_norm += (double)kDecoderWeight[i][j] * kDecoderWeight[i][j];
            spread += q.variance[j] * column_norm;
            kl += 0.5 * (q.mu[j] * q.mu[j] + q.variance[j] - 1.0 - std::log(q.variance[j]));
        }
        double reconstruction = -0.5 * kInputDim * (kLog2Pi + kDecoderLogvar) - (residual_norm + spread) / (2.0 * s2);
        facts.expected_elbo += reconstruction - kl;

        // M^T r and M^T M for the quadratic-form variance.
        double m_t_r[kLatentDim] = {}, m_t_m[kLatentDim][kLatentDim] = {};
        for (int j = 0; j < kLatentDim; ++j) {
            double scale_j = std::sqrt(q.variance[j]);
            for (int i = 0; i < kInputDim; ++i) m_t_r[j] += scale_j * kDecoderWeight[i][j] * residual[i];
            for (int k = 0; k < kLatentDim; ++k) {
                double scale_k = std::sqrt(q.variance[k]);
                for (int i = 0; i < kInputDim; ++i)
                    m_t_m[j][k] += scale_j * scale_k * kDecoderWeight[i][j] * kDecoderWeight[i][k];
            }
        }
        double linear = 0.0, trace_square = 0.0;
        for (int j = 0; j < kLatentDim; ++j) {
            linear += m_t_r[j] * m_t_r[j];
            for (int k = 0; k < kLatentDim; ++k) trace_square += m_t_m[j][k] * m_t_m[k][j];
        }
        facts.per_sample_variance += (4.0 * linear + 2.0 * trace_square) / (4.0 * s2 * s2);

        const int draws = 64;
        double sum = 0.0, sum_squares = 0.0;
        for (int d = 0; d < draws; ++d) {
            double z[kLatentDim], log_weight = 0.0;
            for (int j = 0; j < kLatentDim; ++j) {
                double eps = normal(generator);
                z[j] = q.mu[j] + std::sqrt(q.variance[j]) * eps;
                log_weight += -0.5 * z[j] * z[j] + 0.5 * (std::log(q.variance[j]) + eps * eps);
            }
            log_weight += log_decoder(x, z);
            sum += log_weight;
            sum_squares += log_weight * log_weight;
        }
        double mean = sum / draws;
        facts.log_weight_variance += (sum_squares - draws * mean * mean) / (draws - 1);
    }
    facts.expected_elbo /= points;
    facts.per_sample_variance /= points;
    facts.log_weight_variance /= points;
    return facts;
}

// ---------------------------------------------------------------- fixture

struct Evaluation {
    int k;
    vae_eval_result result;
};

class LinearGaussianModel : public ::testing::Test {
protected:
    void SetUp() override {
        folder_ = vae_test::temporary_folder("iwae_linear_gaussian");
        // Data in [0, 1]: uniform, deliberately not drawn from the model, so
        // every kind of point is in the test.
        test_ = vae_test::random_uniform((size_t)kTestPoints * kInputDim, 31, 0.0f, 1.0f);
        write_npy(folder_ + "/test.npy", test_, kTestPoints, kInputDim);
        write_npy(folder_ + "/train.npy", vae_test::random_uniform(64 * kInputDim, 32, 0.0f, 1.0f), 64, kInputDim);
        config_text_ = model_config_text(folder_);
        exact_ = 0.0;
        for (int n = 0; n < kTestPoints; ++n) exact_ += exact_log_likelihood(&test_[(size_t)n * kInputDim]);
        exact_ /= kTestPoints;
    }

    std::vector<Evaluation> evaluate(const Encoder &encoder, const std::string &name, const std::vector<int> &ks) {
        std::string path = folder_ + "/" + name + ".safetensors";
        write_checkpoint(path, config_text_, encoder);
        vae_trainer *trainer = nullptr;
        std::vector<Evaluation> out;
        EXPECT_EQ(vae_trainer_load(&trainer, path.c_str(), VAE_DEVICE_CPU), VAE_OK) << vae_last_error();
        if (!trainer) return out;
        for (int k : ks) {
            Evaluation e{k, {}};
            EXPECT_EQ(vae_trainer_evaluate(trainer, "test", k, &e.result), VAE_OK) << vae_last_error();
            EXPECT_EQ(e.result.points, kTestPoints);
            EXPECT_EQ(e.result.iwae_k, k);
            out.push_back(e);
        }
        vae_trainer_destroy(trainer);
        return out;
    }

    std::string folder_, config_text_;
    std::vector<float> test_;
    double exact_ = 0.0;
};

const std::vector<int> kSampleCounts = {1, 10, 100, 1000, 5000};

TEST_F(LinearGaussianModel, ClosedFormLogLikelihoodAgreesWithPlainMonteCarlo) {
    // The Cholesky route against log mean_z p(x|z), z ~ p(z), at a few points:
    // an independent check of the reference the engine is held to.
    ASSERT_TRUE(std::isfinite(exact_));
    std::mt19937_64 generator(5);
    std::normal_distribution<double> normal(0.0, 1.0);
    for (int n = 0; n < 3; ++n) {
        const float *x = &test_[(size_t)n * kInputDim];
        std::vector<double> logs(200000);
        double max_log = -INFINITY;
        for (auto &value : logs) {
            double z[kLatentDim] = {normal(generator), normal(generator)};
            value = log_decoder(x, z);
            max_log = std::max(max_log, value);
        }
        double sum = 0.0;
        for (double value : logs) sum += std::exp(value - max_log);
        EXPECT_NEAR(max_log + std::log(sum / (double)logs.size()), exact_log_likelihood(x), 0.01) << "point " << n;
    }
}

TEST_F(LinearGaussianModel, ImperfectEncoderElboBelowAndIwaeConvergesToLogLikelihood) {
    Encoder encoder = imperfect_encoder();
    ElboFacts facts = elbo_facts(encoder, test_, kTestPoints);
    // (a) the exact ELBO is strictly below log p(x) by a clear margin.
    double gap = exact_ - facts.expected_elbo;
    std::printf("exact log p(x) = %.6f, exact ELBO = %.6f (gap %.4f nats)\n", exact_, facts.expected_elbo, gap);
    ASSERT_GT(gap, 0.05);
    double log_weight_se = std::sqrt(facts.log_weight_variance / kTestPoints);

    std::vector<Evaluation> runs = evaluate(encoder, "imperfect", kSampleCounts);
    ASSERT_EQ(runs.size(), kSampleCounts.size());
    double previous_iwae = -INFINITY, previous_se = 0.0;
    for (const Evaluation &run : runs) {
        const vae_eval_result &r = run.result;
        double elbo_se = std::sqrt(facts.per_sample_variance / ((double)run.k * kTestPoints));
        // The IWAE estimate's spread shrinks like 1/sqrt(K) (delta method);
        // at K = 1 it is that of one log-weight.
        double iwae_se = log_weight_se / std::sqrt((double)run.k);
        std::printf("K=%5d  ELBO %.6f (exact %.6f, se %.1e)  IWAE %.6f  log p(x) %.6f  IWAE - log p(x) = %+.6f\n",
                    run.k, r.elbo, facts.expected_elbo, elbo_se, r.log_likelihood, exact_, r.log_likelihood - exact_);
        ASSERT_TRUE(std::isfinite(r.elbo) && std::isfinite(r.log_likelihood));
        EXPECT_NEAR(r.elbo, r.reconstruction - r.kl, 1e-9);
        // The engine's ELBO estimates the exact ELBO (5 standard errors).
        EXPECT_NEAR(r.elbo, facts.expected_elbo, 5.0 * elbo_se + 1e-4) << "K=" << run.k;
        // (a) log p(x) is above the ELBO estimate too (the gap is > 4 of its
        // standard errors at K = 1 and far more beyond).
        EXPECT_GT(exact_, r.elbo) << "K=" << run.k;
        // (b) IWAE >= ELBO (same samples; the KL term is analytic in the ELBO,
        // so allow its noise), never above log p(x) beyond noise.
        EXPECT_GE(r.log_likelihood, r.elbo - 5.0 * log_weight_se) << "K=" << run.k;
        EXPECT_LE(r.log_likelihood, exact_ + 5.0 * iwae_se + 1e-4) << "K=" << run.k;
        // (b) non-decreasing in K within noise.
        EXPECT_GE(r.log_likelihood, previous_iwae - 5.0 * std::sqrt(iwae_se * iwae_se + previous_se * previous_se))
            << "K=" << run.k;
        previous_iwae = r.log_likelihood;
        previous_se = iwae_se;
    }
    // With K = 1 the IWAE estimate is a one-sample ELBO: the gap is all there.
    EXPECT_NEAR(runs.front().result.log_likelihood, facts.expected_elbo, 5.0 * log_weight_se);
    // K = 10 already closes most of the gap; K = 5000 closes it to within 0.01
    // (its bias, about Var(w)/(2K E[w]^2), is ~1e-4 here; its noise ~1e-4).
    EXPECT_GT(runs[1].result.log_likelihood, runs[0].result.log_likelihood + 0.5 * gap);
    EXPECT_NEAR(runs.back().result.log_likelihood, exact_, 0.01);
}

TEST_F(LinearGaussianModel, ExactPosteriorMakesEveryImportanceWeightEqualToTheLikelihood) {
    Encoder encoder = exact_posterior_encoder();
    ElboFacts facts = elbo_facts(encoder, test_, kTestPoints);
    // The exact ELBO of the exact posterior is log p(x): checks the closed
    // forms against each other.
    ASSERT_NEAR(facts.expected_elbo, exact_, 1e-6);
    ASSERT_LT(facts.log_weight_variance, 1e-10);
    std::vector<Evaluation> runs = evaluate(encoder, "exact_posterior", kSampleCounts);
    ASSERT_EQ(runs.size(), kSampleCounts.size());
    for (const Evaluation &run : runs) {
        const vae_eval_result &r = run.result;
        double elbo_se = std::sqrt(facts.per_sample_variance / ((double)run.k * kTestPoints));
        std::printf("K=%5d  exact posterior: ELBO %.6f (se %.1e)  IWAE %.6f  log p(x) %.6f  IWAE - log p(x) = %+.2e\n",
                    run.k, r.elbo, elbo_se, r.log_likelihood, exact_, r.log_likelihood - exact_);
        // Every weight is p(x): float32 rounding only, for every K. A missing
        // log p(z), log q or -log K term moves this by far more than 1e-4.
        EXPECT_NEAR(r.log_likelihood, exact_, 1e-4) << "K=" << run.k;
        // The ELBO's reconstruction term still varies with z: its Monte Carlo
        // noise is the only difference (5 standard errors).
        EXPECT_NEAR(r.elbo, exact_, 5.0 * elbo_se + 1e-4) << "K=" << run.k;
    }
    // At K = 5000 the ELBO estimate's standard error is a few 1e-4 nats.
    EXPECT_NEAR(runs.back().result.elbo, runs.back().result.log_likelihood, 2e-3);
}

TEST_F(LinearGaussianModel, EvaluationIsBitwiseRepeatable) {
    Encoder encoder = imperfect_encoder();
    std::vector<Evaluation> first = evaluate(encoder, "repeat", {100, 100, 7});
    std::vector<Evaluation> second = evaluate(encoder, "repeat", {100});
    ASSERT_EQ(first.size(), 3u);
    ASSERT_EQ(second.size(), 1u);
    for (const vae_eval_result *r : {&first[1].result, &second[0].result}) {
        EXPECT_EQ(std::memcmp(&r->elbo, &first[0].result.elbo, sizeof(double)), 0);
        EXPECT_EQ(std::memcmp(&r->log_likelihood, &first[0].result.log_likelihood, sizeof(double)), 0);
        EXPECT_EQ(std::memcmp(&r->reconstruction, &first[0].result.reconstruction, sizeof(double)), 0);
        EXPECT_EQ(std::memcmp(&r->kl, &first[0].result.kl, sizeof(double)), 0);
    }
    // A different K draws different noise: the estimates differ.
    EXPECT_NE(first[2].result.log_likelihood, first[0].result.log_likelihood);
}

}  // namespace
