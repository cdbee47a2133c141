#!/usr/bin/python3
"""Writes tests/golden/golden_iwae_cases.json: loss and gradients of the
importance-weighted objective (model.objective = iwae) computed by PyTorch
autograd in float64, for fixed weights, inputs and eps. tests/test_golden.cpp
checks the engine's CPU reference against them.

The objective, per data row over its K = samples draws z_k = mu + exp(logvar/2) eps_k
(Burda et al. 2015, annealed by beta as the engine documents it):

    log w_k = log p(x|z_k) + beta * (log N(z_k; 0, I) - log N(z_k; mu, diag exp(logvar)))
    loss    = mean over rows of -(logsumexp_k log w_k - log K)

written here with torch.distributions.Normal and torch.logsumexp, not from the
engine's formulas; autograd differentiates through z (the reparameterisation)
and through the densities' parameters.

Run from anywhere:  /usr/bin/python3 tests/golden/make_golden_iwae.py
The draws (parameters, x, eps; float32-representable) come from
make_golden.py's draw_case with this file's seeds.
"""

import math
import os
import sys

import torch
from torch.distributions import Normal

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_golden import case_record, config_text, draw_case, write_cases  # noqa: E402

# name, input_dim, rows, model settings, binary_x, seed
CASES = [
    ("iwae_bernoulli_relu_K5", 8, 4,
     dict(hidden=[6], latent_dim=2, activation="relu", likelihood="bernoulli", samples=5, beta=1.0), True, 1101),
    ("iwae_bernoulli_tanh_two_hidden_K3_beta0.5", 10, 3,
     dict(hidden=[7, 5], latent_dim=3, activation="tanh", likelihood="bernoulli", samples=3, beta=0.5), False, 1202),
    ("iwae_gaussian_softplus_asymmetric_decoder_K4", 6, 3,
     dict(hidden=[5], decoder_hidden=[4, 3], latent_dim=2, activation="softplus", likelihood="gaussian",
          samples=4, beta=1.0), False, 1303),
    ("iwae_gaussian_fixed_logvar-0.7_gelu_K2_beta2", 9, 4,
     dict(hidden=[6, 4], latent_dim=3, activation="gelu", likelihood="gaussian_fixed",
          gaussian_fixed_logvar=-0.7, samples=2, beta=2.0), False, 1404),
    ("iwae_bernoulli_tanh_K1", 7, 5,
     dict(hidden=[5], latent_dim=2, activation="tanh", likelihood="bernoulli", samples=1, beta=1.0), True, 1505),
    ("iwae_bernoulli_no_hidden_layers_K5", 7, 3,
     dict(hidden=[], latent_dim=3, activation="relu", likelihood="bernoulli", samples=5, beta=1.0), False, 1606),
]


def iwae_loss(model, x, eps, beta):
    """x [B, D], eps [K*B, Z] sample-major (row k*B + b is data row b)."""
    rows = x.shape[0]
    samples = eps.shape[0] // rows
    mu, logvar = model.encode(x)
    std = torch.exp(0.5 * logvar)
    mu_repeated, std_repeated = mu.repeat(samples, 1), std.repeat(samples, 1)
    z = mu_repeated + std_repeated * eps
    log_likelihood = model.log_likelihood(x.repeat(samples, 1), model.decode(z))
    log_prior = Normal(torch.zeros_like(z), torch.ones_like(z)).log_prob(z).sum(dim=1)
    log_posterior = Normal(mu_repeated, std_repeated).log_prob(z).sum(dim=1)
    log_weight = (log_likelihood + beta * (log_prior - log_posterior)).view(samples, rows)
    bound = torch.logsumexp(log_weight, dim=0) - math.log(samples)
    return -bound.mean(), log_likelihood.view(samples, rows).mean(dim=0).mean()


def make_case(name, input_dim, rows, settings, binary_x, seed):
    model, x, eps = draw_case(name, input_dim, rows, settings, binary_x, seed)
    loss, reconstruction = iwae_loss(model, x, eps, settings["beta"])
    return case_record(name, config_text(settings) + "objective = iwae\n", input_dim, rows, settings, model, x, eps,
                       loss, reconstruction)


def main():
    torch.set_default_dtype(torch.float64)
    cases = [make_case(*case) for case in CASES]
    for case in cases:
        print(f"{case['name']}: loss {case['loss']:.10g}, {len(case['parameters'])} parameters")
    write_cases(os.path.join(HERE, "golden_iwae_cases.json"),
                "tests/golden/make_golden_iwae.py (PyTorch %s, float64 autograd)" % torch.__version__, cases)


if __name__ == "__main__":
    main()
