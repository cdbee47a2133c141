#!/usr/bin/python3
"""The PyTorch peers of `vae bench`: train the same VAE (bench/vae_torch.py) with
Adam and print one JSON line with the training throughput. Eager PyTorch by
default; with --compile MODE the whole training step (gather, forward,
backward, Adam) goes through torch.compile (PyTorch 2; reduce-overhead and
max-autotune replay CUDA graphs).

The step mirrors the engine's: the dataset is uint8 on the device; each step
gathers its rows through a random permutation, scales them to [0, 1], draws
eps, runs forward and backward and an Adam update. Only steps after the
warm-up are timed (with torch.cuda.synchronize on CUDA). --precision tf32
lets float32 matrix products use TF32 tensor cores, as the engine's
train.precision = tf32 does; --precision bf16 runs the forward pass under
torch.autocast with bfloat16 (PyTorch's mixed precision: float32 parameters,
bfloat16 matrix products), the peer of train.precision = bf16.

  /usr/bin/python3 bench/pytorch_vae.py --config configs/pytorch_example.ini --device cpu
  /usr/bin/python3 bench/pytorch_vae.py --hidden 400 --latent 20 --batch-size 128 --device cuda
  python3 bench/pytorch_vae.py --config configs/large.ini --device cuda --precision tf32 --compile reduce-overhead
"""

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vae_torch import TorchVAE, model_settings_from_config, parse_width_list, read_config_text  # noqa: E402

INPUT_DIM = 784           # Fashion-MNIST's 28x28
DATASET_ROWS = 60000      # random stand-in of the training set's size

DEFAULTS = {"batch_size": 128, "lr": 1e-3}


def parse_arguments():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="engine INI config ([model] and [train] keys are read)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument("--warmup-steps", type=int, default=20)
    parser.add_argument("--steps", type=int, default=200, help="timed steps")
    parser.add_argument("--hidden", help="encoder widths, e.g. 400 or 512,256 (overrides the config)")
    parser.add_argument("--decoder-hidden", help="decoder widths (default: the encoder's reversed)")
    parser.add_argument("--latent", type=int, help="latent dimension (overrides the config)")
    parser.add_argument("--batch-size", type=int, help="overrides [train] batch_size")
    parser.add_argument("--lr", type=float, help="overrides [train] lr")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", choices=("fp32", "tf32", "bf16"), default="fp32",
                        help="tf32: float32 matrix products on TF32 tensor cores; bf16: autocast to bfloat16")
    parser.add_argument("--compile", metavar="MODE", default="none",
                        choices=("none", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
                        help="torch.compile the whole step with this mode (none: eager)")
    return parser.parse_args()


def resolve_settings(arguments):
    config_text = ""
    if arguments.config:
        with open(arguments.config) as f:
            config_text = f.read()
    parser = read_config_text(config_text)
    model = model_settings_from_config(parser)
    train = parser["train"] if parser.has_section("train") else {}
    batch_size = int(train.get("batch_size", DEFAULTS["batch_size"]))
    lr = float(train.get("lr", DEFAULTS["lr"]))
    if arguments.hidden is not None:
        model["hidden"] = parse_width_list(arguments.hidden)
        if arguments.decoder_hidden is None:
            model["decoder_hidden"] = None  # follow the new encoder widths
    if arguments.decoder_hidden is not None:
        model["decoder_hidden"] = parse_width_list(arguments.decoder_hidden)
    if arguments.latent is not None:
        model["latent_dim"] = arguments.latent
    if arguments.batch_size is not None:
        batch_size = arguments.batch_size
    if arguments.lr is not None:
        lr = arguments.lr
    return model, batch_size, lr


def main():
    arguments = parse_arguments()
    if arguments.threads > 0:
        torch.set_num_threads(arguments.threads)
    if arguments.device == "cuda" and not torch.cuda.is_available():
        sys.exit("pytorch_vae.py: --device cuda but torch sees no CUDA device")
    compiled = arguments.compile != "none"
    if compiled and not hasattr(torch, "compile"):
        sys.exit(f"pytorch_vae.py: --compile needs PyTorch 2 (this is {torch.__version__})")
    device = torch.device(arguments.device)
    torch.manual_seed(arguments.seed)
    tf32 = arguments.precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    bf16 = arguments.precision == "bf16"

    model_settings, batch_size, lr = resolve_settings(arguments)
    model = TorchVAE(INPUT_DIM, **model_settings).to(device)
    # capturable: Adam's step count stays on the device, so a compiled step
    # replays as a CUDA graph without host synchronisation.
    capturable = compiled and device.type == "cuda"
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, **({"capturable": True} if capturable else {}))

    # Random binary images stored as uint8 0/255, like a binarised dataset in memory.
    data = (torch.randint(0, 2, (DATASET_ROWS, INPUT_DIM), dtype=torch.uint8) * 255).to(device)
    steps_per_epoch = DATASET_ROWS // batch_size
    state = {"permutation": None, "position": steps_per_epoch}

    def step_on_rows(rows):
        x = data.index_select(0, rows).to(torch.float32) * (1.0 / 255.0)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(x)
        loss.backward()
        optimizer.step()
        return loss.detach()

    step_function = torch.compile(step_on_rows, mode=arguments.compile) if compiled else step_on_rows
    mark_step = getattr(getattr(torch, "compiler", None), "cudagraph_mark_step_begin", None)

    def training_step():
        if state["position"] == steps_per_epoch:
            state["permutation"] = torch.randperm(DATASET_ROWS, device=device)
            state["position"] = 0
        start = state["position"] * batch_size
        rows = state["permutation"][start:start + batch_size]
        state["position"] += 1
        if compiled and mark_step is not None:
            mark_step()  # each call is a new training step for CUDA-graph trees
        return step_function(rows)

    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(arguments.warmup_steps):
        training_step()
    synchronize()
    start = time.perf_counter()
    for _ in range(arguments.steps):
        loss = training_step()
    synchronize()
    seconds = time.perf_counter() - start
    if not torch.isfinite(loss).item():
        sys.exit("pytorch_vae.py: the loss went non-finite")

    print(json.dumps({
        "framework": "torch_compile" if compiled else "pytorch",
        "compile_mode": arguments.compile,
        "precision": arguments.precision,
        "version": torch.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "batch_size": batch_size,
        "hidden": model.hidden,
        "latent_dim": model.latent_dim,
        "samples": model.samples,
        "steps": arguments.steps,
        "seconds": round(seconds, 6),
        "samples_per_s": round(arguments.steps * batch_size / seconds, 1),
        "final_loss": round(loss.item(), 4),
    }))


if __name__ == "__main__":
    main()
