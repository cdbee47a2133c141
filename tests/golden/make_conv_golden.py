#!/usr/bin/python3
"""Writes tests/golden/conv_golden.json: F.conv2d and F.conv_transpose2d forward
outputs and their gradients (autograd of loss = sum(dy * y) with respect to x,
weight and bias) computed by PyTorch in float64, for fixed inputs.
tests/test_conv_golden.cpp checks the engine's CPU backend against them.

Run from anywhere:  /usr/bin/python3 tests/golden/make_conv_golden.py
Inputs (x, weight, bias, dy) are drawn from fixed seeds and rounded to float32
first, so the engine (which holds float32) sees exactly the values used here.
"""

import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_golden import write_cases  # noqa: E402

# name, transposed, batch, in_channels, height, width, out_channels, kernel, stride, padding, bias, seed
CASES = [
    ("conv2d_5x7_c3_o5_k3_s2_p1", False, 2, 3, 5, 7, 5, 3, 2, 1, True, 11),
    ("conv2d_5x7_c5_o3_k3_s2_p0", False, 2, 5, 5, 7, 3, 3, 2, 0, True, 12),
    ("conv2d_6x5_c3_o5_k4_s2_p1", False, 3, 3, 6, 5, 5, 4, 2, 1, True, 13),
    ("conv2d_5x7_c3_o3_k3_s1_p1_nobias", False, 2, 3, 5, 7, 3, 3, 1, 1, False, 14),
    ("conv2d_9x7_c1_o5_k5_s2_p1", False, 2, 1, 9, 7, 5, 5, 2, 1, True, 15),
    ("conv_transpose2d_3x4_c5_o3_k3_s2_p1", True, 2, 5, 3, 4, 3, 3, 2, 1, True, 21),
    ("conv_transpose2d_3x4_c3_o5_k4_s2_p1", True, 2, 3, 3, 4, 5, 4, 2, 1, True, 22),
    ("conv_transpose2d_3x4_c5_o3_k3_s2_p0", True, 3, 5, 3, 4, 3, 3, 2, 0, True, 23),
    ("conv_transpose2d_5x3_c3_o5_k3_s1_p1_nobias", True, 2, 3, 5, 3, 5, 3, 1, 1, False, 24),
    ("conv_transpose2d_2x3_c5_o1_k5_s3_p1", True, 2, 5, 2, 3, 1, 5, 3, 1, True, 25),
]


def as_float32_values(array):
    """float32-representable float64 values, so both sides start from the same numbers."""
    return torch.from_numpy(np.asarray(array, dtype=np.float32).astype(np.float64))


def make_case(name, transposed, batch, in_channels, height, width, out_channels, kernel, stride, padding, with_bias,
              seed):
    generator = np.random.RandomState(seed)
    weight_shape = (in_channels, out_channels, kernel, kernel) if transposed else \
        (out_channels, in_channels, kernel, kernel)
    x = as_float32_values(generator.normal(size=(batch, in_channels, height, width))).requires_grad_()
    weight = as_float32_values(generator.normal(0.0, 0.5, size=weight_shape)).requires_grad_()
    bias = as_float32_values(generator.normal(size=(out_channels,))).requires_grad_() if with_bias else None
    operation = F.conv_transpose2d if transposed else F.conv2d
    y = operation(x, weight, bias, stride=stride, padding=padding)
    dy = as_float32_values(generator.normal(size=tuple(y.shape)))
    loss = (y * dy).sum()
    wanted = [x, weight] + ([bias] if with_bias else [])
    gradients = torch.autograd.grad(loss, wanted)
    flat = lambda t: [float(v) for v in t.detach().reshape(-1).tolist()]  # noqa: E731
    return {
        "name": name,
        "transposed": transposed,
        "batch": batch,
        "in_channels": in_channels,
        "in_height": height,
        "in_width": width,
        "out_channels": out_channels,
        "out_height": int(y.shape[2]),
        "out_width": int(y.shape[3]),
        "kernel_size": kernel,
        "stride": stride,
        "padding": padding,
        "x": flat(x),
        "weight": flat(weight),
        "bias": flat(bias) if with_bias else None,
        "dy": flat(dy),
        "y": flat(y),
        "dx": flat(gradients[0]),
        "dweight": flat(gradients[1]),
        "dbias": flat(gradients[2]) if with_bias else None,
    }


def main():
    torch.set_default_dtype(torch.float64)
    cases = [make_case(*case) for case in CASES]
    for case in cases:
        print(f"{case['name']}: y {case['out_height']}x{case['out_width']}, {len(case['y'])} outputs")
    write_cases(os.path.join(HERE, "conv_golden.json"),
                "tests/golden/make_conv_golden.py (PyTorch %s, float64 autograd)" % torch.__version__, cases)


if __name__ == "__main__":
    main()
