"""Reads back, with the tensorboard package, the event files of a tiny real
`vae train` run and checks them against the run's metrics.jsonl and PNG
grids: every scalar of every metrics line under its tag, at its step, to
float precision; one sample and one reconstruction image per epoch, the
same PNG bytes as the grid files, of the grid's size. Then a run with
output.tensorboard = off writes no event file.

    python check_event_files.py VAE SOURCE_DIR WORK_DIR
"""
import io
import json
import math
import os
import shutil
import subprocess
import sys

from PIL import Image
from tensorboard.backend.event_processing import event_accumulator

TRAIN_KEYS = ["loss", "elbo", "reconstruction", "kl", "beta", "lr", "grad_norm", "samples_per_s"]
EVAL_KEYS = ["loss", "elbo", "reconstruction", "kl", "active_units"]
EPOCHS = 2
# The epoch grids: 8 columns of 28x28 pictures with a margin of 2 pixels
# (src/training/latent.c); 64 samples, 32 inputs over their reconstructions.
GRID_SIDE = 2 + 8 * (28 + 2)

failures = []
checked = {"scalars": 0, "images": 0}


def check(condition, message):
    if not condition:
        failures.append(message)
    return condition


def train(vae, source, out, extra):
    command = [vae, "train", "--config", os.path.join(source, "configs", "tiny_test.ini"), "--device", "cpu",
               "--out", out, "--quiet",
               "--set", "data.train_limit=600", "--set", "data.test_limit=100", "--set", "train.eval_batch_size=100",
               "--set", f"train.epochs={EPOCHS}", "--set", "train.log_every_steps=2",
               "--set", "output.image_every_epochs=1"] + extra
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"FAIL: {' '.join(command)} exited {result.returncode}:\n{result.stdout}{result.stderr}")


def event_files(folder):
    return sorted(name for name in os.listdir(folder) if name.startswith("events.out.tfevents."))


def same_float(expected, actual):
    """The metrics line's double as TensorBoard's float32 holds it."""
    if expected is None:  # metrics.jsonl writes non-finite values as null
        return not math.isfinite(actual)
    return math.isclose(expected, actual, rel_tol=2e-7, abs_tol=1e-30)


def main():
    vae, source, work = sys.argv[1:4]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    run = os.path.join(work, "run")
    train(vae, source, run, [])
    names = event_files(run)
    if not check(len(names) == 1, f"expected one event file in {run}, found {names}"):
        return
    accumulator = event_accumulator.EventAccumulator(
        os.path.join(run, names[0]), size_guidance={event_accumulator.SCALARS: 0, event_accumulator.IMAGES: 0})
    accumulator.Reload()
    check(accumulator.file_version == 2, f"file_version {accumulator.file_version}, expected 2 (brain.Event:2)")
    tags = accumulator.Tags()

    with open(os.path.join(run, "metrics.jsonl")) as metrics_file:
        lines = [json.loads(line) for line in metrics_file]
    expected = {}  # tag -> [(step, value)]
    for line in lines:
        prefix, keys = ("train", TRAIN_KEYS) if line["kind"] == "train" else (line["split"], EVAL_KEYS)
        for key in keys:
            check(key in line, f"metrics line without {key}: {line}")
            expected.setdefault(f"{prefix}/{key}", []).append((line["step"], line.get(key)))
    check(any(tag.startswith("train/") for tag in expected) and any(tag.startswith("test/") for tag in expected),
          "metrics.jsonl has no train or no test lines")
    for tag, points in expected.items():
        if not check(tag in tags["scalars"], f"scalar tag {tag} missing (has {sorted(tags['scalars'])})"):
            continue
        events = accumulator.Scalars(tag)
        check([e.step for e in events] == [step for step, _ in points],
              f"{tag}: steps {[e.step for e in events]}, metrics.jsonl has {[step for step, _ in points]}")
        for event, (step, value) in zip(events, points):
            check(same_float(value, event.value), f"{tag} at step {step}: {event.value}, metrics.jsonl has {value}")
            checked["scalars"] += 1
    extra_tags = set(tags["scalars"]) - set(expected)
    check(not extra_tags, f"scalar tags not in metrics.jsonl: {sorted(extra_tags)}")

    epoch_end_steps = sorted({line["step"] for line in lines if line["kind"] == "eval"})
    for tag, file_prefix in (("images/samples", "samples"), ("images/reconstructions", "reconstructions")):
        if not check(tag in tags["images"], f"image tag {tag} missing (has {tags['images']})"):
            continue
        images = accumulator.Images(tag)
        check([i.step for i in images] == epoch_end_steps,
              f"{tag}: steps {[i.step for i in images]}, expected the epochs' last steps {epoch_end_steps}")
        for epoch, image in enumerate(images, start=1):
            picture = Image.open(io.BytesIO(image.encoded_image_string))
            check(picture.format == "PNG", f"{tag} epoch {epoch}: {picture.format}, not PNG")
            check(picture.size == (GRID_SIDE, GRID_SIDE) and (image.width, image.height) == picture.size,
                  f"{tag} epoch {epoch}: {picture.size}, summary says {image.width}x{image.height}, "
                  f"expected {GRID_SIDE}x{GRID_SIDE}")
            picture.load()
            checked["images"] += 1
            with open(os.path.join(run, f"{file_prefix}_epoch_{epoch:03d}.png"), "rb") as grid_file:
                check(grid_file.read() == image.encoded_image_string,
                      f"{tag} epoch {epoch}: not the bytes of {file_prefix}_epoch_{epoch:03d}.png")

    off = os.path.join(work, "run_off")
    train(vae, source, off, ["--set", "output.tensorboard=off"])
    check(event_files(off) == [], f"output.tensorboard = off still wrote {event_files(off)}")


if __name__ == "__main__":
    main()
    if failures:
        print("FAIL:\n  " + "\n  ".join(failures[:40]))
        sys.exit(1)
    print(f"event files match metrics.jsonl and the PNG grids ({checked['scalars']} scalars, "
          f"{checked['images']} images)")
