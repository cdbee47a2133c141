#!/usr/bin/env python3
"""Assembles the GPU check's record from the numbers scripts/gpu-check.sh left
in its state folder (one value per file), writes
bench/results/gpu-check-DATE-COMMIT.json and prints the benchmarks side by
side with their ratios and the issue's targets.

  python3 scripts/gpu_check_report.py build-gpu/gpu-check .
"""

import datetime
import json
import os
import subprocess
import sys

MODELS = {
    "small_fp32": "784-400-20 relu, batch 128, fp32 (configs/pytorch_example.ini)",
    "large_fp32": "784-2048-2048-256 gelu, batch 1024, fp32 (configs/large.ini, Adam, no clipping)",
    "large_tf32": "784-2048-2048-256 gelu, batch 1024, tf32 (configs/large.ini, Adam, no clipping)",
    "large_bf16": "784-2048-2048-256 gelu, batch 1024, bf16 GEMM operands (configs/large.ini, Adam, no clipping; "
                  "peers: PyTorch autocast bf16, JAX bf16 dots with float32 results)",
}
FRAMEWORKS = ("vae_engine", "pytorch", "torch_compile", "jax")
# The targets (benchmark figures, not timed tests).
SMALL_TARGETS = {"pytorch": 5.0, "torch_compile": 2.0, "jax": 2.0}
LARGE_FLOOR_TARGET = 1.15
IWAE_TARGET_SECONDS = 2.0
# scripts/gpu-check.sh's SANITIZER_RUNS, with "-" as "_".
SANITIZER_RUNS = ("memcheck", "racecheck", "initcheck", "synccheck", "memcheck_ops", "racecheck_ops", "initcheck_ops")


def read(state, name, default=None):
    path = os.path.join(state, name)
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return default
    if text == "":
        return default
    try:
        return json.loads(text)
    except ValueError:
        return text


def command_output(arguments, cwd=None):
    try:
        return subprocess.run(arguments, cwd=cwd, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def number(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def main():
    state, root = sys.argv[1], sys.argv[2]
    commit = os.environ.get("VAE_COMMIT") or command_output(["git", "rev-parse", "--short", "HEAD"], cwd=root) or "unknown"
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    gpu = command_output(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"]).splitlines()
    device, driver = (gpu[0].rsplit(", ", 1) + [""])[:2] if gpu else ("none seen", "")
    cuda = command_output(["nvcc", "--version"]).splitlines()
    versions = {"nvcc": cuda[-1] if cuda else None}
    for framework, log in (("torch", "bench-small_fp32_pytorch.log"), ("jax", "bench-small_fp32_jax.log")):
        try:
            with open(os.path.join(state, log)) as f:
                lines = [line for line in f if line.startswith("{")]
            versions[framework] = json.loads(lines[-1]).get("version") if lines else None
        except (OSError, ValueError):
            versions[framework] = None

    samples = {}
    ratios = {}
    floors = {}
    for model in MODELS:
        samples[model] = {framework: read(state, f"samples_{model}_{framework}") for framework in FRAMEWORKS}
        floors[model] = read(state, f"samples_{model}_gemm_floor")
        engine = number(samples[model]["vae_engine"])
        ratios[model] = {}
        for framework in FRAMEWORKS[1:]:
            peer = number(samples[model][framework])
            ratios[model][f"vae_engine_over_{framework}"] = round(engine / peer, 3) if engine and peer else None
        floor = number(floors[model])
        ratios[model]["gemm_floor_over_vae_engine"] = round(floor / engine, 3) if engine and floor else None

    iwae_result = read(state, "iwae_result")
    iwae_seconds = number(read(state, "iwae_wall_seconds"))
    targets = {
        "small_fp32": {f"at_least_{target}x_{framework}":
                       (ratios["small_fp32"][f"vae_engine_over_{framework}"] or 0) >= target
                       if ratios["small_fp32"][f"vae_engine_over_{framework}"] is not None else None
                       for framework, target in SMALL_TARGETS.items()},
        "large_within_1.15x_of_gemm_floor": {
            model: (ratios[model]["gemm_floor_over_vae_engine"] is not None and
                    ratios[model]["gemm_floor_over_vae_engine"] >= 1 / LARGE_FLOOR_TARGET)
            if ratios[model]["gemm_floor_over_vae_engine"] is not None else None
            for model in ("large_fp32", "large_tf32", "large_bf16")},
        "iwae_5000_under_2_s": (iwae_seconds < IWAE_TARGET_SECONDS) if iwae_seconds is not None else None,
    }
    skipped_names = []
    try:
        with open(os.path.join(state, "tests_skipped_names")) as f:
            skipped_names = [line.strip() for line in f if line.strip()]
    except OSError:
        pass

    record = {
        "device": device,
        "driver": driver,
        "commit": commit,
        "date": date,
        "versions": versions,
        "cuda_architectures": read(state, "cuda_architectures"),
        "stages": {stage: read(state, f"stage_{stage}")
                   for stage in ("build", "test", "sanitize", "train", "bench", "nccl")},
        "tests": {"total": read(state, "tests_total"), "passed": read(state, "tests_passed"),
                  "failed": read(state, "tests_failed"), "skipped": read(state, "tests_skipped"),
                  "skipped_names": skipped_names},
        # Each tool over a training run, and three over the op-by-op GPU tests
        # ("_ops"); with each run's exit status (0 unless the program failed).
        "sanitizer_errors": {run: read(state, f"sanitizer_{run}") for run in SANITIZER_RUNS},
        "sanitizer_exit_status": {run: read(state, f"sanitizer_{run}_exit") for run in SANITIZER_RUNS},
        "fashion_mnist_train": {"config": "configs/fashion_mnist.ini", "exit_status": read(state, "train_exit"),
                                "seconds": read(state, "train_seconds"),
                                "last_train_metrics": read(state, "train_last_metrics"),
                                "last_eval_metrics": read(state, "train_last_eval")},
        "models": MODELS,
        "samples_per_s": samples,
        "gemm_floor_samples_per_s": floors,
        "ratios": ratios,
        "torch_compile_mode": read(state, "torch_compile_mode"),
        "step_graphs": read(state, "step_graphs") or "on",
        "iwae_5000_test": {"images": 10000, "k": 5000, "wall_seconds": iwae_seconds,
                           "exit_status": read(state, "iwae_exit"), "result": iwae_result},
        "targets_met": targets,
        "nccl": read(state, "nccl.json"),
        # The `hierarchical` stage (issue 24), when it ran.
        "hierarchical": {"config": read(state, "hierarchical_config"),
                         "overrides": read(state, "hierarchical_overrides"),
                         "epochs": read(state, "hierarchical_epochs"),
                         "epoch_seconds": read(state, "hierarchical_epoch_seconds"),
                         "train_seconds": read(state, "hierarchical_train_seconds"),
                         "train_exit_status": read(state, "hierarchical_train_exit"),
                         "last_eval_metrics": read(state, "hierarchical_last_eval"),
                         "iwae_5000_test": {"wall_seconds": read(state, "hierarchical_iwae_seconds"),
                                            "result": read(state, "hierarchical_iwae_result")},
                         "exit_status": read(state, "hierarchical_exit")}
        if read(state, "hierarchical_config") is not None else None,
    }
    folder = os.path.join(root, "bench", "results")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"gpu-check-{date}-{commit}.json")
    with open(path, "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    with open(os.path.join(state, "record_path"), "w") as f:
        f.write(path)

    def show(value):
        return f"{value:,.0f}" if number(value) is not None else str(value)

    print(f"GPU check {commit} on {device} (driver {driver}), {date}")
    print(f"tests: {record['tests']['passed']} passed, {record['tests']['failed']} failed, "
          f"{record['tests']['skipped']} skipped {skipped_names if skipped_names else ''}")
    print(f"sanitizer errors: {record['sanitizer_errors']}")
    print(f"fashion-mnist: exit {record['fashion_mnist_train']['exit_status']}, "
          f"{record['fashion_mnist_train']['seconds']} s")
    print(f"{'samples/s':12} {'engine':>12} {'pytorch':>12} {'compile':>12} {'jax':>12} {'gemm floor':>12}"
          f"   engine/pytorch /compile /jax  floor/engine")
    for model in MODELS:
        row = samples[model]
        r = ratios[model]
        print(f"{model:12} {show(row['vae_engine']):>12} {show(row['pytorch']):>12} {show(row['torch_compile']):>12} "
              f"{show(row['jax']):>12} {show(floors[model]):>12}   "
              f"{r['vae_engine_over_pytorch']} {r['vae_engine_over_torch_compile']} {r['vae_engine_over_jax']}  "
              f"{r['gemm_floor_over_vae_engine']}")
    print(f"iwae-5000 on 10,000 test images: {iwae_seconds} s wall")
    print(f"targets met: {json.dumps(targets)}")
    hierarchical = record["hierarchical"]
    if hierarchical:
        result = hierarchical["iwae_5000_test"]["result"]
        likelihood = result.get("log_likelihood") if isinstance(result, dict) else None
        print(f"hierarchical: {hierarchical['config']} {hierarchical['overrides'] or ''}, {hierarchical['epochs']} epochs "
              f"at {hierarchical['epoch_seconds']} s, IWAE-5000 {likelihood} over "
              f"{result.get('points') if isinstance(result, dict) else None} test images "
              f"(exit {hierarchical['exit_status']})")
    print(f"record: {path}")


if __name__ == "__main__":
    main()
