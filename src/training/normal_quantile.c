/* Inverse of the standard normal CDF: P. J. Acklam's rational
 * approximations (relative error below 1.2e-9: one for the central region,
 * one for the tails), then one Halley step on Phi(x) - p with erfc, which
 * brings the result to double precision. */
#include "training/normal_quantile.h"

#include <math.h>

/* Below this probability (and above 1 minus it) the tail form is used. */
#define QUANTILE_TAIL_PROBABILITY 0.02425
#define SQRT_TWO_PI 2.50662827463100050242

static const double central_numerator[6] = {-3.969683028665376e+01, 2.209460984245205e+02,
                                            -2.759285104469687e+02, 1.383577518672690e+02,
                                            -3.066479806614716e+01, 2.506628277459239e+00};
static const double central_denominator[5] = {-5.447609879822406e+01, 1.615858368580409e+02,
                                              -1.556989798598866e+02, 6.680131188771972e+01,
                                              -1.328068155288572e+01};
static const double tail_numerator[6] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                                         -2.549732539343734e+00, 4.374664141464968e+00, 2.938163982698783e+00};
static const double tail_denominator[4] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                                           3.754408661907416e+00};

/* Lower tail: x for a small probability p (p <= QUANTILE_TAIL_PROBABILITY). */
static double lower_tail(double p) {
    double q = sqrt(-2.0 * log(p));
    const double *c = tail_numerator, *d = tail_denominator;
    return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
           ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1.0);
}

double vae_normal_quantile(double p) {
    if (isnan(p) || p < 0.0 || p > 1.0) return NAN;
    if (p == 0.0) return -INFINITY;
    if (p == 1.0) return INFINITY;
    double x;
    if (p < QUANTILE_TAIL_PROBABILITY) {
        x = lower_tail(p);
    } else if (p > 1.0 - QUANTILE_TAIL_PROBABILITY) {
        x = -lower_tail(1.0 - p);
    } else {
        double q = p - 0.5, r = q * q;
        const double *a = central_numerator, *b = central_denominator;
        x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
            (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1.0);
    }
    /* Halley's step: e = Phi(x) - p, u = e / phi(x). */
    double error = 0.5 * erfc(-x / sqrt(2.0)) - p;
    double u = error * SQRT_TWO_PI * exp(0.5 * x * x);
    return x - u / (1.0 + 0.5 * x * u);
}
