#!/usr/bin/env python3
"""The GEMM floor of one engine training step: the step's matrix products,
each timed alone, summed. A step cannot run faster than its GEMMs, so
samples/s at this floor is the ceiling the engine's large models are held to
(the issue's target: within 1.15x).

The products are those src/model/train_step.c issues through the backend, per
linear layer [in -> out] over R rows (the batch for the encoder, samples x
batch for the decoder):

  forward   y[R,out]   = x[R,in] W[out,in]^T
  dweight   dW[out,in] = dy[R,out]^T x[R,in]
  dinput    dx[R,in]   = dy[R,out] W[out,in]     (not for the first encoder layer)

Each is run by PyTorch's matmul (cuBLAS) into a preallocated output on random
data; on CUDA, REPS of one product are captured in a CUDA graph and replayed,
timed with CUDA events, so launch overhead is not counted. --precision tf32
allows TF32 tensor cores as the engine's train.precision = tf32; --precision
bf16 multiplies bfloat16 operands (into a bfloat16 product: PyTorch's matmul
has no float32 output for them), the GEMMs of train.precision = bf16 without
the engine's operand conversion.

  python3 bench/gemm_floor.py --config configs/large.ini --device cuda --precision tf32
"""

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vae_torch import model_settings_from_config, read_config_text  # noqa: E402

INPUT_DIM = 784


def step_gemms(model, batch_size):
    """[(name, rows, in, out, kind)] of one training step, in the engine's order of layers."""
    latent = model["latent_dim"]
    hidden = model["hidden"]
    decoder_hidden = model["decoder_hidden"] if model["decoder_hidden"] is not None else list(reversed(hidden))
    output_width = 2 * INPUT_DIM if model["likelihood"] == "gaussian" else INPUT_DIM
    encoder = list(zip([INPUT_DIM] + hidden, hidden + [2 * latent]))
    decoder = list(zip([latent] + decoder_hidden, decoder_hidden + [output_width]))
    decoder_rows = model["samples"] * batch_size
    gemms = []
    for prefix, layers, rows in (("encoder", encoder, batch_size), ("decoder", decoder, decoder_rows)):
        for index, (fan_in, fan_out) in enumerate(layers):
            name = f"{prefix}.{index}"
            gemms.append((name, rows, fan_in, fan_out, "forward"))
            gemms.append((name, rows, fan_in, fan_out, "dweight"))
            if not (prefix == "encoder" and index == 0):
                gemms.append((name, rows, fan_in, fan_out, "dinput"))
    return gemms


def operands(rows, fan_in, fan_out, kind, device, dtype):
    def random(*shape):
        return torch.randn(*shape, device=device, dtype=dtype)

    def empty(*shape):
        return torch.empty(*shape, device=device, dtype=dtype)
    if kind == "forward":
        return random(rows, fan_in), random(fan_out, fan_in).t(), empty(rows, fan_out)
    if kind == "dweight":
        return random(rows, fan_out).t(), random(rows, fan_in), empty(fan_out, fan_in)
    return random(rows, fan_out), random(fan_out, fan_in), empty(rows, fan_in)


def time_one(a, b, out, device, reps):
    """Seconds per product."""
    for _ in range(3):
        torch.matmul(a, b, out=out)
    if device.type != "cuda":
        start = time.perf_counter()
        for _ in range(reps):
            torch.matmul(a, b, out=out)
        return (time.perf_counter() - start) / reps
    torch.cuda.synchronize()
    stream = torch.cuda.Stream()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(stream):
        torch.matmul(a, b, out=out)  # warm up on the capture stream
        stream.synchronize()
        with torch.cuda.graph(graph, stream=stream):
            for _ in range(reps):
                torch.matmul(a, b, out=out)
    graph.replay()
    torch.cuda.synchronize()
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = float("inf")
    for _ in range(5):  # the fastest of five replays
        begin.record()
        graph.replay()
        end.record()
        end.synchronize()
        best = min(best, begin.elapsed_time(end) / 1000.0 / reps)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="engine INI config ([model] and [train] batch_size)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    parser.add_argument("--precision", choices=("fp32", "tf32", "bf16"), default="fp32")
    parser.add_argument("--batch-size", type=int, help="overrides [train] batch_size")
    parser.add_argument("--reps", type=int, default=50, help="products per timing (CUDA: per captured graph)")
    arguments = parser.parse_args()
    if arguments.device == "cuda" and not torch.cuda.is_available():
        sys.exit("gemm_floor.py: --device cuda but torch sees no CUDA device")
    device = torch.device(arguments.device)
    tf32 = arguments.precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32

    with open(arguments.config) as f:
        config = read_config_text(f.read())
    model = model_settings_from_config(config)
    train = config["train"] if config.has_section("train") else {}
    batch_size = arguments.batch_size or int(train.get("batch_size", "128"))

    rows_out = []
    total = 0.0
    flops = 0.0
    for name, rows, fan_in, fan_out, kind in step_gemms(model, batch_size):
        dtype = torch.bfloat16 if arguments.precision == "bf16" else torch.float32
        a, b, out = operands(rows, fan_in, fan_out, kind, device, dtype)
        seconds = time_one(a, b, out, device, arguments.reps)
        total += seconds
        flops += 2.0 * rows * fan_in * fan_out
        rows_out.append({"layer": name, "kind": kind, "m_n_k": [a.shape[0], b.shape[1], a.shape[1]],
                         "microseconds": round(seconds * 1e6, 3)})
    print(json.dumps({
        "framework": "gemm_floor",
        "version": torch.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "precision": arguments.precision,
        "batch_size": batch_size,
        "gemm_count": len(rows_out),
        "seconds_per_step": round(total, 9),
        "tflops": round(flops / total / 1e12, 3),
        "samples_per_s": round(batch_size / total, 1),
        "gemms": rows_out,
    }))


if __name__ == "__main__":
    main()
