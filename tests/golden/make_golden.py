#!/usr/bin/python3
"""Writes tests/golden/golden_cases.json: loss and gradients of the VAE objective
computed by PyTorch autograd in float64, for fixed weights, inputs and eps.
tests/test_golden.cpp checks the engine's CPU reference against them.

Run from anywhere:  /usr/bin/python3 tests/golden/make_golden.py
Inputs (parameters, x, eps) are drawn from fixed seeds and rounded to float32
first, so the engine (which holds float32) sees exactly the values used here.
"""

import json
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "bench"))
from vae_torch import TorchVAE, apply_activation, parse_layer_list  # noqa: E402

WEIGHT_SCALE = 0.3
# ReLU is not differentiable at 0: a pre-activation this close to 0 could flip
# side between float32 and float64, so such draws are rejected.
RELU_MARGIN = 1e-3

# name, input_dim, rows, model settings, binary_x, seed
CASES = [
    ("bernoulli_relu_L1", 8, 4,
     dict(hidden=[6], latent_dim=2, activation="relu", likelihood="bernoulli", samples=1, beta=1.0), True, 101),
    ("bernoulli_tanh_two_hidden_L3_beta0.5", 10, 3,
     dict(hidden=[7, 5], latent_dim=3, activation="tanh", likelihood="bernoulli", samples=3, beta=0.5), False, 202),
    ("gaussian_softplus_asymmetric_decoder_L2", 6, 3,
     dict(hidden=[5], decoder_hidden=[4, 3], latent_dim=2, activation="softplus", likelihood="gaussian",
          samples=2, beta=1.0), False, 303),
    ("gaussian_fixed_logvar-0.7_gelu", 9, 4,
     dict(hidden=[6, 4], latent_dim=3, activation="gelu", likelihood="gaussian_fixed",
          gaussian_fixed_logvar=-0.7, samples=1, beta=1.0), False, 404),
    ("bernoulli_no_hidden_layers_L2", 7, 3,
     dict(hidden=[], latent_dim=3, activation="relu", likelihood="bernoulli", samples=2, beta=1.0), False, 505),
    ("bernoulli_latent1_tanh_beta2", 6, 5,
     dict(hidden=[4], latent_dim=1, activation="tanh", likelihood="bernoulli", samples=2, beta=2.0), True, 606),
    ("gaussian_relu_L4_mixed_x", 12, 2,
     dict(hidden=[7, 3], decoder_hidden=[5], latent_dim=2, activation="relu", likelihood="gaussian",
          samples=4, beta=0.25), False, 707),
    # Convolutional models (F.conv2d, F.conv_transpose2d through nn.Sequential): odd sizes,
    # stride 1 and 2, padding 0 and 1, 3 and 5 channels, flatten/unflatten on both sides.
    ("conv_bernoulli_tanh_1x8x8_L2", 64, 3,
     dict(hidden=[], encoder_layers="conv 3 k3 s2 p1, conv 5 k3 s1 p0, dense 6",
          decoder_layers="dense 6, dense 3x2x2, convt 3 k3 s2 p0, convt out k2 s2 p1", image_shape=(1, 8, 8),
          latent_dim=3, activation="tanh", likelihood="bernoulli", samples=2, beta=1.0), True, 808),
    ("conv_gaussian_gelu_3x7x9", 189, 2,
     dict(hidden=[], encoder_layers="conv 3 k3 s2 p1, dense 5", decoder_layers="dense 3x4x5, convt out k3 s2 p1",
          image_shape=(3, 7, 9), latent_dim=2, activation="gelu", likelihood="gaussian", samples=1, beta=1.0),
     False, 909),
    ("conv_softplus_gaussian_fixed_convt_encoder_1x5x6", 30, 3,
     dict(hidden=[], encoder_layers="convt 2 k2 s1 p0, conv 3 k3 s2 p1",
          decoder_layers="dense 3x3x3, conv 2 k2 s1 p1, dense 4", image_shape=(1, 5, 6), latent_dim=2,
          activation="softplus", likelihood="gaussian_fixed", gaussian_fixed_logvar=-0.3, samples=2, beta=0.5),
     False, 1010),
]


def config_text(settings):
    """INI text with the engine's key names for vae_config_load_string."""
    def widths(values):
        return ",".join(str(v) for v in values)
    lines = ["[model]"]
    if "encoder_layers" in settings:
        lines += [f"encoder = {settings['encoder_layers']}", f"decoder = {settings['decoder_layers']}"]
    else:
        lines.append(f"hidden = {widths(settings['hidden'])}")
    if "decoder_hidden" in settings:
        lines.append(f"decoder_hidden = {widths(settings['decoder_hidden'])}")
    lines += [f"latent_dim = {settings['latent_dim']}",
              f"activation = {settings['activation']}",
              f"likelihood = {settings['likelihood']}"]
    if settings["likelihood"] == "gaussian_fixed":
        lines.append(f"gaussian_fixed_logvar = {settings['gaussian_fixed_logvar']!r}")
    lines += [f"samples = {settings['samples']}",
              f"beta = {settings['beta']!r}"]
    return "\n".join(lines) + "\n"


def as_float32_values(array):
    """float32-representable float64 values, so both sides start from the same numbers."""
    return np.asarray(array, dtype=np.float32).astype(np.float64)


def smallest_relu_pre_activation(model, x, eps):
    """min |pre-activation| over every hidden ReLU unit (encoder and decoder)."""
    smallest = float("inf")
    with torch.no_grad():
        h = x
        for layer in model.encoder[:-1]:
            pre = layer(h)
            smallest = min(smallest, pre.abs().min().item())
            h = apply_activation(model.activation, pre)
        head = model.encoder[-1](h)
        mu, logvar = head[:, :model.latent_dim], head[:, model.latent_dim:]
        samples = eps.shape[0] // x.shape[0]
        h = mu.repeat(samples, 1) + torch.exp(0.5 * logvar.repeat(samples, 1)) * eps
        for layer in model.decoder[:-1]:
            pre = layer(h)
            smallest = min(smallest, pre.abs().min().item())
            h = apply_activation(model.activation, pre)
    return smallest


def model_arguments(settings):
    arguments = dict(settings)
    for key in ("encoder_layers", "decoder_layers"):
        if key in arguments:
            arguments[key] = parse_layer_list(arguments[key])
    return arguments


def draw_case(name, input_dim, rows, settings, binary_x, seed):
    for attempt in range(100):
        generator = np.random.RandomState(seed + 1000 * attempt)
        model = TorchVAE(input_dim, **model_arguments(settings)).double()
        with torch.no_grad():
            for _, tensor in model.parameters_in_engine_order():
                values = as_float32_values(generator.normal(0.0, WEIGHT_SCALE, size=tensor.shape))
                tensor.copy_(torch.from_numpy(values))
        if binary_x:
            x_values = (generator.uniform(size=(rows, input_dim)) < 0.5).astype(np.float64)
        else:
            # Values in [0, 1] with exact 0s and 1s mixed in.
            x_values = generator.uniform(size=(rows, input_dim))
            x_values[generator.uniform(size=x_values.shape) < 0.2] = 0.0
            x_values[generator.uniform(size=x_values.shape) < 0.2] = 1.0
        x = torch.from_numpy(as_float32_values(x_values))
        eps = torch.from_numpy(as_float32_values(
            generator.normal(size=(settings["samples"] * rows, settings["latent_dim"]))))
        if settings["activation"] == "relu" and smallest_relu_pre_activation(model, x, eps) < RELU_MARGIN:
            continue
        return model, x, eps
    raise RuntimeError(f"{name}: no draw kept every ReLU pre-activation away from 0")


def case_record(name, config, input_dim, rows, settings, model, x, eps, loss, reconstruction, kl=None):
    """One golden case as the C++ tests read it: the inputs, the parameters in
    the engine's order, the loss terms and d loss / d parameters (autograd)."""
    named = model.parameters_in_engine_order()
    gradients = torch.autograd.grad(loss, [tensor for _, tensor in named])
    flat = lambda tensors: [float(v) for t in tensors for v in t.detach().reshape(-1).tolist()]  # noqa: E731
    return {
        "name": name,
        "config": config,
        "input_dim": input_dim,
        "rows": rows,
        "samples": settings["samples"],
        "latent_dim": settings["latent_dim"],
        **({"image": list(settings["image_shape"])} if "image_shape" in settings else {}),
        "tensors": [{"name": n, "shape": list(t.shape)} for n, t in named],
        "x": flat([x]),
        "eps": flat([eps]),
        "parameters": flat([t for _, t in named]),
        "loss": float(loss),
        "reconstruction": float(reconstruction),
        **({"kl": float(kl)} if kl is not None else {}),
        "gradients": flat(gradients),
    }


def write_cases(path, generator, cases):
    """The golden file: one case field per line, number lists on one line
    (small, and diffs stay readable); it must parse back."""
    with open(path, "w") as f:
        f.write("{\n")
        f.write(' "generator": %s,\n "cases": [\n' % json.dumps(generator))
        for index, case in enumerate(cases):
            fields = [f'  {json.dumps(key)}: {json.dumps(value)}' for key, value in case.items()]
            f.write("  {\n" + ",\n".join(fields) + "\n  }" + ("," if index + 1 < len(cases) else "") + "\n")
        f.write(" ]\n}\n")
    json.load(open(path))
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


def make_case(name, input_dim, rows, settings, binary_x, seed):
    model, x, eps = draw_case(name, input_dim, rows, settings, binary_x, seed)
    loss, reconstruction, kl = model.loss_terms(x, eps)
    return case_record(name, config_text(settings), input_dim, rows, settings, model, x, eps, loss, reconstruction, kl)


def main():
    torch.set_default_dtype(torch.float64)
    cases = [make_case(*case) for case in CASES]
    for case in cases:
        print(f"{case['name']}: loss {case['loss']:.10g}, {len(case['parameters'])} parameters")
    write_cases(os.path.join(HERE, "golden_cases.json"),
                "tests/golden/make_golden.py (PyTorch %s, float64 autograd)" % torch.__version__, cases)


if __name__ == "__main__":
    main()
