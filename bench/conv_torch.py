#!/usr/bin/python3
"""PyTorch's peer of bench_conv_ops (bench/conv_ops.c): F.conv2d and
F.conv_transpose2d on the same layers and batch, forward alone (no_grad) and
forward + backward (autograd for x, weight and bias, with a fixed dy), in
milliseconds of this thread's CPU time per call (time.thread_time: time spent
waiting for a core on a shared machine does not count; meaningful at 1
thread), median of 5 rounds. Threads: --threads (default 1).

    /usr/bin/python3 bench/conv_torch.py [--seconds 1] [--threads 1]
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

LAYERS = [  # name, transposed, in channels, size, out channels
    ("conv2d 1->32 28x28 k4 s2 p1", False, 1, 28, 32),
    ("conv2d 32->64 14x14 k4 s2 p1", False, 32, 14, 64),
    ("conv_transpose2d 64->32 7x7 k4 s2 p1", True, 64, 7, 32),
    ("conv_transpose2d 32->1 14x14 k4 s2 p1", True, 32, 14, 1),
]


def measure(function, seconds):
    function()  # warm-up
    rounds = []
    for _ in range(5):
        calls, start = 0, time.thread_time()
        while calls < 2 or time.thread_time() - start < seconds / 5:
            function()
            calls += 1
        rounds.append((time.thread_time() - start) / calls * 1e3)
    return statistics.median(rounds)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"# pytorch {torch.__version__}, mkldnn {torch.backends.mkldnn.is_available()}, "
          f"{torch.get_num_threads()} threads, batch {args.batch}, ms of thread CPU time per call (median of 5 rounds)")
    print(f"{'layer':<40} {'forward':>10} {'forward+back':>14}")
    for name, transposed, in_channels, size, out_channels in LAYERS:
        x = torch.rand(args.batch, in_channels, size, size, requires_grad=True)
        shape = (in_channels, out_channels, 4, 4) if transposed else (out_channels, in_channels, 4, 4)
        weight = (torch.rand(shape) - 0.5).requires_grad_()
        bias = (torch.rand(out_channels) - 0.5).requires_grad_()
        operation = F.conv_transpose2d if transposed else F.conv2d

        def forward():
            return operation(x, weight, bias, stride=2, padding=1)

        dy = torch.rand_like(forward()) - 0.5

        def forward_no_grad():
            with torch.no_grad():
                forward()

        def forward_backward():
            torch.autograd.grad(forward(), [x, weight, bias], dy)

        print(f"{name:<40} {measure(forward_no_grad, args.seconds):10.3f} "
              f"{measure(forward_backward, args.seconds):14.3f}")


if __name__ == "__main__":
    main()
