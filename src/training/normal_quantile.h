/* The standard normal distribution's inverse CDF (quantile function). */
#ifndef VAE_NORMAL_QUANTILE_H
#define VAE_NORMAL_QUANTILE_H

/* x with Phi(x) = p for 0 < p < 1 (about 1e-15 relative error); -inf at 0,
 * +inf at 1, NaN outside [0,1]. */
double vae_normal_quantile(double p);

#endif
