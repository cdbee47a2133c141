#!/usr/bin/python3
"""Plots one or more vae-engine metrics.jsonl files into a PNG.

Three panels:
  1. training ELBO per step (and -loss when it differs, i.e. beta != 1 or a
     KL warm-up), with evaluation ELBOs marked at the step they were taken;
  2. evaluation ELBO per epoch, per split (and the IWAE log-likelihood when
     recorded);
  3. KL per step (training) and per evaluation.
Lines of kind "train" and "eval" are read (fields step, epoch, loss, elbo,
reconstruction, kl, split, log_likelihood); null values are skipped; eval
lines without an epoch (epoch -1, from `vae eval`) are left out of panel 2.

  /usr/bin/python3 scripts/plot_metrics.py runs/a/metrics.jsonl [runs/b/metrics.jsonl ...] \\
      [--out curves.png] [--title TEXT]

Needs matplotlib (Debian: python3-matplotlib). Prints one JSON line saying
what was plotted. Exit status 0 on success, 2 on bad input or a missing
dependency.
"""

import argparse
import json
import math
import os
import sys


class PlotError(Exception):
    pass


def finite(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_metrics(path):
    """(train records, eval records) of one metrics.jsonl file."""
    train, evaluations = [], []
    try:
        with open(path, "r", encoding="utf-8") as f:
            lines = f.readlines()
    except OSError as error:
        raise PlotError(f"cannot read {path}: {error.strerror}") from None
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise PlotError(f"{path}:{number}: not a JSON object ({error.msg})") from None
        if not isinstance(record, dict):
            raise PlotError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        kind = record.get("kind")
        if kind == "train":
            if not finite(record.get("step")):
                raise PlotError(f"{path}:{number}: a train record needs a numeric 'step'")
            train.append(record)
        elif kind == "eval":
            evaluations.append(record)
        else:
            raise PlotError(f"{path}:{number}: 'kind' is {kind!r}; expected 'train' or 'eval'")
    return train, evaluations


def series(records, x_key, y_key, transform=lambda v: v):
    points = [(r[x_key], transform(r[y_key])) for r in records
              if finite(r.get(x_key)) and finite(r.get(y_key))]
    points.sort(key=lambda p: p[0])
    return [p[0] for p in points], [p[1] for p in points]


def run_label(path, paths):
    """The run's folder name when several files are plotted."""
    if len(paths) == 1:
        return ""
    folder = os.path.basename(os.path.dirname(os.path.abspath(path)))
    return (folder or path) + ": "


def plot(paths, out, title):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise PlotError(f"matplotlib is not installed for {sys.executable}: install the Debian package "
                        "python3-matplotlib (apt-get install python3-matplotlib)") from None

    figure, (elbo_axes, eval_axes, kl_axes) = plt.subplots(1, 3, figsize=(16, 4.8))
    summary = {"out": out, "files": len(paths), "train_points": 0, "eval_points": 0, "eval_epoch_points": 0}
    for index, path in enumerate(paths):
        train, evaluations = read_metrics(path)
        label = run_label(path, paths)
        color = f"C{index % 10}"

        steps, elbo = series(train, "step", "elbo")
        summary["train_points"] += len(steps)
        few = "." if len(steps) < 3 else None  # a lone point is invisible as a line
        elbo_axes.plot(steps, elbo, color=color, marker=few, label=f"{label}train ELBO")
        steps_loss, negative_loss = series(train, "step", "loss", lambda v: -v)
        if any(abs(a - b) > 1e-6 * max(1.0, abs(b)) for a, b in zip(negative_loss, elbo)):
            elbo_axes.plot(steps_loss, negative_loss, color=color, linestyle=":", label=f"{label}train -loss")
        eval_steps, eval_elbo = series([e for e in evaluations if finite(e.get("step")) and e["step"] >= 0],
                                       "step", "elbo")
        elbo_axes.plot(eval_steps, eval_elbo, "o", color=color, label=f"{label}eval ELBO")
        summary["eval_points"] += len(evaluations)

        splits = sorted({e.get("split") or "eval" for e in evaluations})
        for split_index, split in enumerate(splits):
            chosen = [e for e in evaluations if (e.get("split") or "eval") == split
                      and finite(e.get("epoch")) and e["epoch"] >= 0]
            epochs, values = series(chosen, "epoch", "elbo")
            summary["eval_epoch_points"] += len(epochs)
            marker = "os^v"[split_index % 4]
            eval_axes.plot(epochs, values, marker=marker, color=color, label=f"{label}{split} ELBO")
            epochs_ll, log_likelihood = series(chosen, "epoch", "log_likelihood")
            if epochs_ll:
                eval_axes.plot(epochs_ll, log_likelihood, marker=marker, linestyle="--", color=color,
                               label=f"{label}{split} IWAE log p(x)")

        steps_kl, kl = series(train, "step", "kl")
        kl_axes.plot(steps_kl, kl, color=color, marker=few, label=f"{label}train KL")
        eval_steps_kl, eval_kl = series([e for e in evaluations if finite(e.get("step")) and e["step"] >= 0],
                                        "step", "kl")
        kl_axes.plot(eval_steps_kl, eval_kl, "o", color=color, label=f"{label}eval KL")

    elbo_axes.set(xlabel="step", ylabel="nats per example", title="ELBO")
    eval_axes.set(xlabel="epoch", ylabel="nats per example", title="evaluation")
    eval_axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    kl_axes.set(xlabel="step", ylabel="nats per example", title="KL(q(z|x) || p(z))")
    for axes in (elbo_axes, eval_axes, kl_axes):
        axes.grid(True, alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize="small")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise PlotError(f"--out {out}: folder {folder} does not exist")
    try:
        figure.savefig(out, dpi=100)
    except OSError as error:
        raise PlotError(f"cannot write {out}: {error.strerror}") from None
    plt.close(figure)
    return summary


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("metrics", nargs="+", help="metrics.jsonl files")
    parser.add_argument("--out", help="the PNG to write (default: curves.png beside the first file)")
    parser.add_argument("--title", default="", help="a title over the panels")
    arguments = parser.parse_args(argv)
    out = arguments.out or os.path.join(os.path.dirname(os.path.abspath(arguments.metrics[0])), "curves.png")
    try:
        summary = plot(arguments.metrics, out, arguments.title)
    except PlotError as error:
        print(f"plot_metrics: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
