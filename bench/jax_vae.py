#!/usr/bin/env python3
"""The JAX peer of `vae bench`: the same VAE step as bench/vae_torch.py (and the
engine), compiled whole with jax.jit (XLA on the CPU), Adam as torch.optim.Adam
computes it, and one JSON line with the training throughput.

Each step, inside the one compiled function: gather the batch's rows of a
uint8 data set through a random permutation and scale them to [0, 1], draw
eps ~ N(0, I), encoder, reparameterisation, decoder, Bernoulli or Gaussian
likelihood, KL, backward, Adam. Parameters and Adam moments are donated, so
the step updates them in place as the engine does. Only steps after the
warm-up (which includes compilation) are timed, each ended by
block_until_ready on the loss.

Needs jax (bench/compare_cpu.sh makes bench/.venv with it); the tests never
run this file.

  bench/.venv/bin/python bench/jax_vae.py --config configs/pytorch_example.ini --threads 1
"""

import argparse
import configparser
import json
import math
import os
import re
import sys
import time

INPUT_DIM = 784           # Fashion-MNIST's 28x28
DATASET_ROWS = 60000      # random stand-in of the training set's size
LOG_2PI = math.log(2.0 * math.pi)


def parse_arguments():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="engine INI config ([model] and [train] keys are read)")
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto",
                        help="cpu: XLA's CPU backend only; auto: JAX's default device")
    parser.add_argument("--precision", choices=("fp32", "tf32", "bf16"), default="fp32",
                        help="fp32: full float32 matrix products; tf32: TF32 where the device has it; "
                             "bf16: products of bfloat16 operands with float32 results, as train.precision = bf16")
    parser.add_argument("--threads", type=int, default=0,
                        help="1: XLA's single-threaded CPU code; 0 or more: XLA's default pool "
                             "(as many threads as the CPUs the process may run on; use taskset)")
    parser.add_argument("--warmup-steps", type=int, default=20)
    parser.add_argument("--steps", type=int, default=200, help="timed steps")
    parser.add_argument("--hidden", help="encoder widths, e.g. 400 or 512,256 (overrides the config)")
    parser.add_argument("--latent", type=int, help="latent dimension (overrides the config)")
    parser.add_argument("--batch-size", type=int, help="overrides [train] batch_size")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def parse_width_list(text):
    text = (text or "").strip()
    if text.lower() in ("", "none"):
        return []
    return [int(item) for item in re.split(r"[,\s]+", text) if item]


def read_settings(path):
    """The engine's keys: [model] hidden, decoder_hidden, latent_dim, activation,
    likelihood, gaussian_fixed_logvar, samples, beta; [train] batch_size, lr,
    adam_beta1, adam_beta2, adam_epsilon (the engine's defaults otherwise)."""
    parser = configparser.ConfigParser(inline_comment_prefixes=("#", ";"))
    if path:
        with open(path) as f:
            parser.read_string(f.read())
    model = parser["model"] if parser.has_section("model") else {}
    train = parser["train"] if parser.has_section("train") else {}
    hidden = parse_width_list(model.get("hidden", "400"))
    settings = {
        "hidden": hidden,
        "decoder_hidden": (parse_width_list(model["decoder_hidden"]) if "decoder_hidden" in model
                           else list(reversed(hidden))),
        "latent_dim": int(model.get("latent_dim", "20")),
        "activation": model.get("activation", "relu").strip(),
        "likelihood": model.get("likelihood", "bernoulli").strip(),
        "fixed_logvar": float(model.get("gaussian_fixed_logvar", "0")),
        "samples": int(model.get("samples", "1")),
        "beta": float(model.get("beta", "1")),
        "batch_size": int(train.get("batch_size", "128")),
        "lr": float(train.get("lr", "1e-3")),
        "beta1": float(train.get("adam_beta1", "0.9")),
        "beta2": float(train.get("adam_beta2", "0.999")),
        "epsilon": float(train.get("adam_epsilon", "1e-8")),
    }
    if settings["activation"] not in ("relu", "tanh", "softplus", "gelu"):
        sys.exit(f"jax_vae.py: activation {settings['activation']!r} is not one of relu, tanh, softplus, gelu")
    if settings["likelihood"] not in ("bernoulli", "gaussian", "gaussian_fixed"):
        sys.exit(f"jax_vae.py: likelihood {settings['likelihood']!r} is not bernoulli, gaussian or gaussian_fixed")
    return settings


def main():
    arguments = parse_arguments()
    if arguments.threads == 1:
        # XLA's CPU code single-threaded: no Eigen pool for the matrix products.
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()
    if arguments.device == "cpu":
        os.environ["JAX_PLATFORMS"] = "cpu"
    elif arguments.device == "cuda":
        os.environ["JAX_PLATFORMS"] = "cuda"
    try:
        import jax
        import jax.numpy as jnp
        import numpy as np
    except ImportError as error:
        sys.exit(f"jax_vae.py: {error}; run bench/compare_cpu.sh, which makes bench/.venv with jax")

    jax.config.update("jax_default_matmul_precision", "tensorfloat32" if arguments.precision == "tf32" else "highest")
    bf16 = arguments.precision == "bf16"
    s = read_settings(arguments.config)
    if arguments.hidden is not None:
        s["hidden"] = parse_width_list(arguments.hidden)
        s["decoder_hidden"] = list(reversed(s["hidden"]))
    if arguments.latent is not None:
        s["latent_dim"] = arguments.latent
    if arguments.batch_size is not None:
        s["batch_size"] = arguments.batch_size
    rows, latent, samples = s["batch_size"], s["latent_dim"], s["samples"]
    output_width = 2 * INPUT_DIM if s["likelihood"] == "gaussian" else INPUT_DIM
    encoder_widths = [INPUT_DIM] + s["hidden"] + [2 * latent]
    decoder_widths = [latent] + s["decoder_hidden"] + [output_width]

    # PyTorch's nn.Linear initialisation (uniform +-1/sqrt(fan_in)); weights [out, in] as the engine.
    key = jax.random.PRNGKey(arguments.seed)
    params = []
    for widths in (encoder_widths, decoder_widths):
        for fan_in, fan_out in zip(widths[:-1], widths[1:]):
            key, weight_key, bias_key = jax.random.split(key, 3)
            bound = 1.0 / math.sqrt(fan_in)
            params.append(jax.random.uniform(weight_key, (fan_out, fan_in), jnp.float32, -bound, bound))
            params.append(jax.random.uniform(bias_key, (fan_out,), jnp.float32, -bound, bound))
    encoder_count = len(encoder_widths) - 1

    def activation(h):
        name = s["activation"]
        if name == "relu":
            return jax.nn.relu(h)
        if name == "tanh":
            return jnp.tanh(h)
        if name == "softplus":
            return jax.nn.softplus(h)
        return jax.nn.gelu(h, approximate=False)

    def mlp(layer_params, h):
        count = len(layer_params) // 2
        for i in range(count):
            if bf16:  # bfloat16 operands, float32 accumulation and result; the parameters stay float32
                h = jnp.dot(h.astype(jnp.bfloat16), layer_params[2 * i].T.astype(jnp.bfloat16),
                            preferred_element_type=jnp.float32) + layer_params[2 * i + 1]
            else:
                h = h @ layer_params[2 * i].T + layer_params[2 * i + 1]
            if i + 1 < count:
                h = activation(h)
        return h

    def loss_fn(p, x, eps):
        head = mlp(p[:2 * encoder_count], x)
        mu, logvar = head[:, :latent], head[:, latent:]
        z = jnp.tile(mu, (samples, 1)) + jnp.exp(0.5 * jnp.tile(logvar, (samples, 1))) * eps
        out = mlp(p[2 * encoder_count:], z)
        x_repeated = jnp.tile(x, (samples, 1))
        if s["likelihood"] == "bernoulli":
            logp = (x_repeated * out - jax.nn.softplus(out)).sum(axis=1)
        else:
            if s["likelihood"] == "gaussian":
                mean, out_logvar = out[:, :INPUT_DIM], out[:, INPUT_DIM:]
            else:
                mean, out_logvar = out, jnp.full_like(out, s["fixed_logvar"])
            diff = x_repeated - mean
            logp = (-0.5 * (LOG_2PI + out_logvar + diff * diff * jnp.exp(-out_logvar))).sum(axis=1)
        reconstruction = -logp.reshape(samples, rows).mean(axis=0)
        kl = (0.5 * (mu * mu + jnp.expm1(logvar) - logvar)).sum(axis=1)
        return (reconstruction + s["beta"] * kl).mean()

    beta1, beta2, epsilon, lr = s["beta1"], s["beta2"], s["epsilon"], s["lr"]

    def train_step(p, m, v, step, data, permutation, noise_key):
        # The batch: rows of the permutation at this step, scaled to [0, 1].
        index = jax.lax.dynamic_slice(permutation, (step * rows,), (rows,))
        x = jnp.take(data, index, axis=0).astype(jnp.float32) * (1.0 / 255.0)
        eps = jax.random.normal(jax.random.fold_in(noise_key, step), (samples * rows, latent), jnp.float32)
        loss, grads = jax.value_and_grad(loss_fn)(p, x, eps)
        t = (step + 1).astype(jnp.float32)
        step_size = lr / (1.0 - beta1 ** t)
        sqrt_bias2 = jnp.sqrt(1.0 - beta2 ** t)
        new_p, new_m, new_v = [], [], []
        for param, first, second, grad in zip(p, m, v, grads):
            first = beta1 * first + (1.0 - beta1) * grad
            second = beta2 * second + (1.0 - beta2) * grad * grad
            new_p.append(param - step_size * first / (jnp.sqrt(second) / sqrt_bias2 + epsilon))
            new_m.append(first)
            new_v.append(second)
        return new_p, new_m, new_v, loss

    step_function = jax.jit(train_step, donate_argnums=(0, 1, 2))

    generator = np.random.default_rng(arguments.seed)
    data = jnp.asarray(generator.integers(0, 2, size=(DATASET_ROWS, INPUT_DIM), dtype=np.uint8) * 255)
    steps_per_epoch = DATASET_ROWS // rows
    permutation = jnp.asarray(generator.permutation(DATASET_ROWS).astype(np.int32))
    noise_key = jax.random.PRNGKey(arguments.seed + 1)
    m = [jnp.zeros_like(param) for param in params]
    v = [jnp.zeros_like(param) for param in params]

    def run(first_step, count):
        nonlocal params, m, v
        loss = None
        for step in range(first_step, first_step + count):
            params, m, v, loss = step_function(params, m, v, jnp.int32(step % steps_per_epoch), data,
                                               permutation, noise_key)
        loss.block_until_ready()
        return loss

    run(0, arguments.warmup_steps)
    start = time.perf_counter()
    loss = run(arguments.warmup_steps, arguments.steps)
    seconds = time.perf_counter() - start
    final_loss = float(loss)
    if not math.isfinite(final_loss):
        sys.exit("jax_vae.py: the loss went non-finite")
    print(json.dumps({
        "framework": "jax",
        "version": jax.__version__,
        "device": str(jax.devices()[0].device_kind),
        "platform": jax.devices()[0].platform,
        "precision": arguments.precision,
        "threads": arguments.threads,
        "batch_size": rows,
        "hidden": s["hidden"],
        "latent_dim": latent,
        "samples": samples,
        "steps": arguments.steps,
        "seconds": round(seconds, 6),
        "samples_per_s": round(arguments.steps * rows / seconds, 1),
        "final_loss": round(final_loss, 4),
    }))


if __name__ == "__main__":
    main()
