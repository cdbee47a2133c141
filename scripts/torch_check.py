#!/usr/bin/python3
"""Checks vae-engine's evaluation against PyTorch on the same points and noise.

Loads a checkpoint's weights into bench/vae_torch.py's TorchVAE, or
TorchHierarchicalVAE where the stored config has model.latent_groups (strict
state_dict load), reads the first N examples of a split from the stored
config's data.path, preprocesses them as the engine's evaluation does (scale
to [0,1]; binarize none / static / dynamic, the dynamic draws from the
engine's Philox stream), draws the evaluation noise exactly as the engine
does, computes the per-sample ELBO (and with --iwae-k the IWAE estimate) in
float64, runs `vae eval` on the same N points and compares.

The engine's random numbers (kernels/vae_philox.h), re-implemented here in
numpy uint32/uint64 arithmetic:
  block(seed, subsequence, column) = Philox4x32-10(
      counter = [column/4 lo, column/4 hi, subsequence lo, subsequence hi],
      key = [seed lo, seed hi])
  subsequence(step, purpose, row) = step << 35 | purpose << 32 | row
  evaluation batch t (eval_batch_size rows, fewer when 65536/K is smaller
  or, for a convolutional model, when 2^28 floats of decoder activations
  hold fewer than K*rows decoder rows; the last batch holds the remainder):
    binarisation: purpose 3, step t, row r (0-based within the batch),
                  x = uniform < x for the 4 columns of each block
    noise:        purpose 2, step t, row l*rows + r for sample l of row r,
                  eps columns j..j+3 from the block at column j
    hierarchical models (model.latent_groups): group g draws at Philox columns
                  offset_g + j (offset_g: the sizes of the groups before it, data
                  side first); the top group at row l*rows + r as above, each
                  lower group one call of samples*rows sample-major rows with
                  rows_hold_samples = samples (vae_noise_row_address: again
                  row l*rows + r)
  uniform = float32(word) * 2^-32 + 2^-33 (float32)
  Box-Muller (cuRAND's): u from word 0, v = float32(word 1) * 2pi*2^-32 + half
  of that, s = sqrtf(-2 logf(u)), normals s sinf(v), s cosf(v); words 2, 3 the
  same. logf/sinf/cosf are libm's (through ctypes), as the CPU backend's.

Prints one JSON line {"engine_elbo", "torch_elbo", "relative_difference", ...}
and exits 1 when a relative difference exceeds --tolerance (default 1e-5),
2 on a usage or input error.

  /usr/bin/python3 scripts/torch_check.py --checkpoint runs/x/checkpoint.safetensors \\
      [--split test] [--count 100] [--iwae-k K] [--vae build/vae]
  /usr/bin/python3 scripts/torch_check.py --self-test
  /usr/bin/python3 scripts/torch_check.py --philox-probe SEED SUBSEQUENCE COLUMN
"""

import argparse
import ctypes
import ctypes.util
import gzip
import json
import math
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPOSITORY, "bench"))

PHILOX_M0 = np.uint64(0xD2511F53)
PHILOX_M1 = np.uint64(0xCD9E8D57)
PHILOX_W0 = np.uint32(0x9E3779B9)
PHILOX_W1 = np.uint32(0xBB67AE85)
MASK32 = np.uint64(0xFFFFFFFF)

PURPOSE_EVAL_EPS = 2
PURPOSE_EVAL_BINARIZE = 3
EVAL_DECODER_ROW_BUDGET = 65536  # src/training/evaluate.c: rows * samples per evaluation batch
EVAL_CONV_DECODER_FLOAT_BUDGET = 256 * 1024 * 1024  # and, for conv models, floats of decoder activations

# Random123's known-answer vectors for Philox4x32-10: (counter, key, output).
PHILOX_KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


class CheckError(Exception):
    """A usage or input problem: reported on stderr, exit status 2."""


# ---- Philox4x32-10 on arrays of counters ------------------------------------

def philox4x32_10(counter, key0, key1):
    """counter: uint32 array [n, 4]; key0, key1: uint32 arrays [n] (or scalars).
    Returns the uint32 array [n, 4] of output words."""
    c = [counter[:, i].astype(np.uint64) for i in range(4)]
    k0 = np.asarray(key0, dtype=np.uint32).copy()
    k1 = np.asarray(key1, dtype=np.uint32).copy()
    with np.errstate(over="ignore"):
        for round_index in range(10):
            if round_index > 0:
                k0 = (k0 + PHILOX_W0).astype(np.uint32)
                k1 = (k1 + PHILOX_W1).astype(np.uint32)
            p0 = PHILOX_M0 * c[0]  # 32 x 32 -> 64 bits: exact in uint64
            p1 = PHILOX_M1 * c[2]
            hi0, lo0 = p0 >> np.uint64(32), p0 & MASK32
            hi1, lo1 = p1 >> np.uint64(32), p1 & MASK32
            n0 = hi1 ^ c[1] ^ k0.astype(np.uint64)
            n2 = hi0 ^ c[3] ^ k1.astype(np.uint64)
            c = [n0, lo1, n2, lo0]
    return np.stack(c, axis=1).astype(np.uint32)


def subsequence(step, purpose, row):
    """vae_philox_subsequence for arrays of rows: uint64."""
    row = np.asarray(row, dtype=np.uint64)
    return (np.uint64(step) << np.uint64(35)) | (np.uint64(purpose & 7) << np.uint64(32)) | row


def blocks_at(seed, subsequences, column):
    """vae_philox_block_at for an array of subsequences at one column."""
    subsequences = np.asarray(subsequences, dtype=np.uint64).reshape(-1)
    block_index = np.uint64(column >> 2)
    counter = np.empty((subsequences.size, 4), dtype=np.uint32)
    counter[:, 0] = np.uint32(int(block_index) & 0xFFFFFFFF)
    counter[:, 1] = np.uint32(int(block_index) >> 32)
    counter[:, 2] = (subsequences & MASK32).astype(np.uint32)
    counter[:, 3] = (subsequences >> np.uint64(32)).astype(np.uint32)
    return philox4x32_10(counter, np.uint32(seed & 0xFFFFFFFF), np.uint32(seed >> 32))


# ---- uniforms and normals as the engine computes them (float32) -------------

UNIFORM_SCALE = np.float32(2.3283064e-10)
UNIFORM_HALF = np.float32(UNIFORM_SCALE / np.float32(2.0))
ANGLE_SCALE = np.float32(UNIFORM_SCALE * np.float32(6.2831855))
ANGLE_HALF = np.float32(ANGLE_SCALE / np.float32(2.0))


def uniforms_from_words(words):
    return (words.astype(np.float32) * UNIFORM_SCALE + UNIFORM_HALF).astype(np.float32)


class FloatMath:
    """logf, sinf, cosf from the C library the engine links (bitwise the same
    results); numpy's float32 functions may differ by an ulp."""

    def __init__(self):
        name = ctypes.util.find_library("m")
        self.library = ctypes.CDLL(name) if name else None
        if self.library is not None:
            for function in ("logf", "sinf", "cosf"):
                getattr(self.library, function).restype = ctypes.c_float
                getattr(self.library, function).argtypes = [ctypes.c_float]

    def fused_multiply_add(self, a, b, c):
        """fmaf(a, b, c) elementwise (b, c scalars): one rounding, as the
        engine's vae_box_muller and nvcc's contraction compute it."""
        a = np.asarray(a, dtype=np.float32)
        if self.library is None:  # exact product in float64, then one more rounding: rarely an ulp apart
            return (a.astype(np.float64) * np.float64(b) + np.float64(c)).astype(np.float32)
        if not hasattr(self, "_fmaf"):
            self._fmaf = self.library.fmaf
            self._fmaf.restype = ctypes.c_float
            self._fmaf.argtypes = [ctypes.c_float, ctypes.c_float, ctypes.c_float]
        flat = a.reshape(-1)
        out = np.fromiter((self._fmaf(float(v), float(b), float(c)) for v in flat), dtype=np.float32, count=flat.size)
        return out.reshape(a.shape)

    def apply(self, function, values):
        values = np.asarray(values, dtype=np.float32)
        if self.library is None:  # correctly rounded through float64: rarely an ulp apart
            return getattr(np, {"logf": "log", "sinf": "sin", "cosf": "cos"}[function])(
                values.astype(np.float64)).astype(np.float32)
        call = getattr(self.library, function)
        flat = values.reshape(-1)
        out = np.fromiter((call(float(v)) for v in flat), dtype=np.float32, count=flat.size)
        return out.reshape(values.shape)


FLOAT_MATH = FloatMath()


def box_muller(x_words, y_words):
    """cuRAND's Box-Muller pair (s sin v, s cos v), in float32 step by step;
    the angle with one fused multiply-add, as kernels/vae_philox.h writes it
    (u's product is exact, so fusing does not change it)."""
    u = (x_words.astype(np.float32) * UNIFORM_SCALE + UNIFORM_HALF).astype(np.float32)
    v = FLOAT_MATH.fused_multiply_add(y_words.astype(np.float32), ANGLE_SCALE, ANGLE_HALF)
    s = np.sqrt((np.float32(-2.0) * FLOAT_MATH.apply("logf", u)).astype(np.float32)).astype(np.float32)
    first = (s * FLOAT_MATH.apply("sinf", v)).astype(np.float32)
    second = (s * FLOAT_MATH.apply("cosf", v)).astype(np.float32)
    return first, second


def normals_at(seed, subsequences, column):
    """vae_normal4 for an array of subsequences: float32 [n, 4]."""
    words = blocks_at(seed, subsequences, column)
    out = np.empty(words.shape, dtype=np.float32)
    out[:, 0], out[:, 1] = box_muller(words[:, 0], words[:, 1])
    out[:, 2], out[:, 3] = box_muller(words[:, 2], words[:, 3])
    return out


def uniforms_at(seed, subsequences, column):
    return uniforms_from_words(blocks_at(seed, subsequences, column))


def eval_noise(seed, batch_index, rows, samples, latent_dim):
    """eps [samples*rows, Z], sample-major, for one evaluation batch."""
    z_rows = np.arange(samples * rows, dtype=np.uint64)
    sub = subsequence(batch_index, PURPOSE_EVAL_EPS, z_rows)
    eps = np.empty((samples * rows, latent_dim), dtype=np.float32)
    for column in range(0, latent_dim, 4):
        block = normals_at(seed, sub, column)
        width = min(4, latent_dim - column)
        eps[:, column:column + width] = block[:, :width]
    return eps


def noise_row_address(call_rows, l, b, rows_hold_samples, batch_rows=0, row_offset=0):
    """vae_noise_row_address (kernels/vae_step_data.h) for arrays l, b: uint64."""
    l = np.asarray(l, dtype=np.uint64)
    b = np.asarray(b, dtype=np.uint64)
    sample, data_row, local_rows = l, b, np.uint64(call_rows)
    if rows_hold_samples > 1:
        local_rows = np.uint64(call_rows // rows_hold_samples)
        sample = l * np.uint64(rows_hold_samples) + b // local_rows
        data_row = b % local_rows
    global_rows = np.uint64(batch_rows) if batch_rows else local_rows
    return sample * global_rows + np.uint64(row_offset) + data_row


def group_noise(seed, step, call_rows, samples, size, column_offset, rows_hold_samples):
    """The eps one reparameterisation call of the engine draws (cpu_reparam_kl_forward):
    [samples*call_rows, size], row l*call_rows + b for sample l of call row b, column j
    from Philox column column_offset + j (the blocks from column_offset rounded down to
    a multiple of 4, the first and last partly used)."""
    l = np.repeat(np.arange(samples, dtype=np.uint64), call_rows)
    b = np.tile(np.arange(call_rows, dtype=np.uint64), samples)
    sub = subsequence(step, PURPOSE_EVAL_EPS, noise_row_address(call_rows, l, b, rows_hold_samples))
    eps = np.empty((samples * call_rows, size), dtype=np.float32)
    first, end = column_offset, column_offset + size
    for block in range(first & ~3, end, 4):
        normals = normals_at(seed, sub, block)
        for k in range(4):
            if first <= block + k < end:
                eps[:, block + k - first] = normals[:, k]
    return eps


def hierarchy_eval_noise(seed, batch_index, rows, samples, group_sizes):
    """Each group's eps [samples*rows, size_g] for one evaluation batch, as
    src/model/hierarchy_step.c's group_noise sets the calls up: the Philox columns
    from the group's offset in the concatenated latent (data side first); the top
    group one call of rows data rows and samples draws, each lower group one call
    of samples*rows sample-major rows with rows_hold_samples = samples."""
    top = len(group_sizes) - 1
    out = []
    for g, size in enumerate(group_sizes):
        offset = sum(group_sizes[:g])
        if g == top:
            out.append(group_noise(seed, batch_index, rows, samples, size, offset, 0))
        else:
            out.append(group_noise(seed, batch_index, samples * rows, 1, size, offset, samples))
    return out


def dynamic_binarize(x, seed, batch_index):
    """x float32 [rows, D] in [0,1] -> 0/1 with the engine's EVAL_BINARIZE uniforms."""
    rows, dim = x.shape
    sub = subsequence(batch_index, PURPOSE_EVAL_BINARIZE, np.arange(rows, dtype=np.uint64))
    out = np.empty_like(x)
    for column in range(0, dim, 4):
        uniform = uniforms_at(seed, sub, column)
        width = min(4, dim - column)
        out[:, column:column + width] = (uniform[:, :width] < x[:, column:column + width]).astype(np.float32)
    return out


# ---- data ------------------------------------------------------------------

IDX_FILES = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte"}


def read_idx_images(path):
    with open(path, "rb") as f:
        blob = f.read()
    if blob[:2] == b"\x1f\x8b":
        blob = gzip.decompress(blob)
    if len(blob) < 16:
        raise CheckError(f"{path}: {len(blob)} bytes, too short for an IDX image header")
    magic, count, rows, cols = struct.unpack(">IIII", blob[:16])
    if magic != 0x00000803:
        raise CheckError(f"{path}: magic {magic:#010x}, expected 0x00000803 (ubyte images)")
    if len(blob) - 16 < count * rows * cols:
        raise CheckError(f"{path}: {len(blob) - 16} data bytes, expected {count * rows * cols}")
    values = np.frombuffer(blob, dtype=np.uint8, count=count * rows * cols, offset=16)
    return values.reshape(count, rows * cols)


def read_split_file(folder, which):
    """The raw values of train or test (uint8 or float32) as [N, D]."""
    for name in (IDX_FILES[which], IDX_FILES[which] + ".gz"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return read_idx_images(path)
    path = os.path.join(folder, which + ".npy")
    if not os.path.isfile(path):
        raise CheckError(f"data.path {folder!r}: no {IDX_FILES[which]}[.gz] and no {which}.npy")
    values = np.load(path, allow_pickle=False)
    if values.dtype not in (np.uint8, np.float32):
        raise CheckError(f"{path}: dtype {values.dtype}, expected uint8 or float32")
    return values.reshape(values.shape[0], -1)


def split_values(config, split):
    """The split as the engine sees it (limits, validation hold-out)."""
    data = config["data"]
    folder = data.get("path")
    train_limit, test_limit = int(data.get("train_limit", "0")), int(data.get("test_limit", "0"))
    validation_size = int(data.get("validation_size", "0"))
    if split == "test":
        values = read_split_file(folder, "test")
        return values[:test_limit] if test_limit > 0 else values
    values = read_split_file(folder, "train")
    if train_limit > 0:
        values = values[:train_limit]
    kept = values.shape[0] - validation_size
    return values[:kept] if split == "train" else values[kept:]


def scaled(values):
    """raw * scale as float32, as cpu_gather_batch: uint8 * float32(1/255)."""
    if values.dtype == np.uint8:
        return (values.astype(np.float32) * np.float32(1.0 / 255.0)).astype(np.float32)
    return values.astype(np.float32)


# ---- checkpoints ---------------------------------------------------------------

def limited_checkpoint(path, metadata_config, split, count, validation_size, temporary_folder):
    """A copy of the checkpoint whose stored config evaluates only the first
    count examples of the split (the data section, and so its checksum, is
    unchanged; only the header's config text differs)."""
    lines = metadata_config.splitlines()
    key = "test_limit" if split == "test" else "train_limit"
    value = count if split == "test" else count + validation_size
    section, replaced = None, False
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("["):
            section = stripped.strip("[] ")
        elif section == "data" and stripped.split("=")[0].strip() == key:
            lines[i] = f"{key} = {value}"
            replaced = True
    if not replaced:
        raise CheckError(f"{path}: the stored config has no [data] {key} line to limit")
    with open(path, "rb") as f:
        blob = f.read()
    (header_length,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + header_length].decode("utf-8"))
    header["__metadata__"]["config"] = "\n".join(lines) + "\n"
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    copy = os.path.join(temporary_folder, "limited.safetensors")
    with open(copy, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + blob[8 + header_length:])
    return copy


def load_model(checkpoint_path):
    """TorchVAE (TorchHierarchicalVAE for a hierarchical model) with the
    checkpoint's weights, loaded with strict=True."""
    import torch
    from vae_torch import model_for_checkpoint, read_config_text, read_safetensors

    tensors, metadata = read_safetensors(checkpoint_path)
    if "config" not in metadata:
        raise CheckError(f"{checkpoint_path}: __metadata__ has no 'config'")
    config = read_config_text(metadata["config"])
    try:
        model = model_for_checkpoint(checkpoint_path, tensors, metadata)
    except ValueError as error:
        raise CheckError(str(error)) from None
    weights = {name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in tensors.items()
               if not name.startswith("optimizer.")}
    try:
        result = model.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        raise CheckError(f"{checkpoint_path}: strict state_dict load failed: {error}") from None
    return model.double().eval(), config, metadata, sorted(weights), result


# ---- the torch side of the evaluation ---------------------------------------------

def torch_evaluate(model, config, values, iwae_k):
    """Per-sample ELBO (and IWAE estimate) over values in float64, batch by
    batch exactly as src/training/evaluate.c."""
    import torch

    train = config["train"]
    data = config["data"]
    seed = int(train.get("seed", "1"))
    eval_batch_size = int(train.get("eval_batch_size", "1000"))
    logvar_clamp = float(train.get("logvar_clamp", "0"))
    binarize = data.get("binarize", "dynamic").strip()
    threshold = np.float32(float(data.get("binarize_threshold", "0.5")))
    samples = iwae_k if iwae_k > 0 else 1
    count = values.shape[0]
    decoder_row_budget = EVAL_DECODER_ROW_BUDGET
    if model.convolutional:
        from vae_torch import decoder_floats_per_row
        decoder_row_budget = min(decoder_row_budget, EVAL_CONV_DECODER_FLOAT_BUDGET // decoder_floats_per_row(model))
    rows = min(eval_batch_size, count, max(1, decoder_row_budget // samples))
    latent = model.latent_dim
    reconstruction_sum = kl_sum = importance_sum = 0.0
    group_kl_sums = [0.0] * len(getattr(model, "group_sizes", []))
    first_eps = None
    with torch.no_grad():
        for batch_index, begin in enumerate(range(0, count, rows)):
            x = scaled(values[begin:begin + rows])
            if binarize == "static":
                x = (x > threshold).astype(np.float32)
            elif binarize == "dynamic":
                x = dynamic_binarize(x, seed, batch_index)
            batch_rows = x.shape[0]
            xt = torch.from_numpy(x).double()
            if model.hierarchical:
                group_eps = hierarchy_eval_noise(seed, batch_index, batch_rows, samples, model.group_sizes)
                if first_eps is None:  # the first latent columns of the first row: z_0's
                    first_eps = group_eps[0][0, :min(4, model.group_sizes[0])]
                terms = model.evaluate_terms(xt, [torch.from_numpy(e).double() for e in group_eps], logvar_clamp)
                logp = terms["logp"].view(samples, batch_rows)
                reconstruction_sum += float(logp.mean(dim=0).sum())
                kl_sum += float(terms["kl"].sum())
                for g in range(len(model.group_sizes)):
                    group_kl_sums[g] += float(terms["group_kl"][g].sum())
                if iwae_k > 0:
                    weights = logp + terms["log_ratio"].view(samples, batch_rows)
                    importance_sum += float((torch.logsumexp(weights, dim=0) - math.log(samples)).sum())
                continue
            eps = eval_noise(seed, batch_index, batch_rows, samples, latent)
            if first_eps is None:
                first_eps = eps[0, :min(4, latent)]
            mu, logvar = model.encode(xt)
            if logvar_clamp > 0:
                logvar = logvar.clamp(-logvar_clamp, logvar_clamp)
            mu_repeated, logvar_repeated = mu.repeat(samples, 1), logvar.repeat(samples, 1)
            e = torch.from_numpy(eps).double()
            z = mu_repeated + torch.exp(0.5 * logvar_repeated) * e
            logp = model.log_likelihood(xt.repeat(samples, 1), model.decode(z)).view(samples, batch_rows)
            kl = model.kl_per_row(mu, logvar)
            reconstruction_sum += float(logp.mean(dim=0).sum())
            kl_sum += float(kl.sum())
            if iwae_k > 0:
                log_prior = (-0.5 * (z * z + math.log(2 * math.pi))).sum(dim=1)
                log_posterior = (-0.5 * (e * e + logvar_repeated + math.log(2 * math.pi))).sum(dim=1)
                weights = logp + (log_prior - log_posterior).view(samples, batch_rows)
                importance_sum += float((torch.logsumexp(weights, dim=0) - math.log(samples)).sum())
    result = {"torch_elbo": (reconstruction_sum - kl_sum) / count,
              "torch_reconstruction": reconstruction_sum / count, "torch_kl": kl_sum / count,
              "first_eps": [float(v) for v in first_eps]}
    if model.hierarchical:
        result["torch_group_kl"] = [value / count for value in group_kl_sums]
    if iwae_k > 0:
        result["torch_log_likelihood"] = importance_sum / count
    return result


def engine_evaluate(vae, checkpoint, split, iwae_k, device):
    command = [vae, "eval", "--checkpoint", checkpoint, "--split", split, "--device", device]
    if iwae_k > 0:
        command += ["--iwae-k", str(iwae_k)]
    run = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if run.returncode != 0:
        raise CheckError(f"{' '.join(command)} exited with {run.returncode}: {run.stderr.strip()}")
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise CheckError(f"{' '.join(command)} printed no JSON line: {run.stdout!r}")
    return json.loads(lines[-1])


def relative_difference(a, b):
    return abs(a - b) / max(abs(b), 1e-30)


def check(arguments):
    if not os.path.isfile(arguments.checkpoint):
        raise CheckError(f"--checkpoint {arguments.checkpoint}: no such file")
    if not (os.path.isfile(arguments.vae) and os.access(arguments.vae, os.X_OK)):
        raise CheckError(f"--vae {arguments.vae}: not an executable (build the engine first)")
    model, config, metadata, tensor_names, _ = load_model(arguments.checkpoint)
    split = arguments.split
    values = split_values(config, split)
    if values.shape[1] != model.input_dim:
        raise CheckError(f"{split} examples have {values.shape[1]} values; the model expects {model.input_dim}")
    count = min(arguments.count, values.shape[0])
    if count <= 0:
        raise CheckError(f"the {split} split has no examples")
    with tempfile.TemporaryDirectory(prefix="torch_check_") as temporary_folder:
        checkpoint = arguments.checkpoint
        if count < values.shape[0]:
            if split == "validation":
                raise CheckError(f"the validation split has {values.shape[0]} examples; --count must cover it all")
            validation_size = int(config["data"].get("validation_size", "0"))
            checkpoint = limited_checkpoint(checkpoint, metadata["config"], split, count, validation_size,
                                            temporary_folder)
        engine = engine_evaluate(arguments.vae, checkpoint, split, arguments.iwae_k, arguments.device)
    if int(engine.get("points", count)) != count:
        raise CheckError(f"the engine evaluated {engine.get('points')} points, this script {count}")
    torch_side = torch_evaluate(model, config, values[:count], arguments.iwae_k)
    report = {"engine_elbo": engine["elbo"], "torch_elbo": torch_side["torch_elbo"],
              "relative_difference": relative_difference(engine["elbo"], torch_side["torch_elbo"]),
              "engine_reconstruction": engine.get("reconstruction"),
              "torch_reconstruction": torch_side["torch_reconstruction"],
              "engine_kl": engine.get("kl"), "torch_kl": torch_side["torch_kl"],
              "points": count, "split": split, "state_dict_strict": True, "tensors": len(tensor_names),
              "first_eps": torch_side["first_eps"]}
    if model.hierarchical:
        # Each group's KL, data side first (a lower group's averaged over the K
        # draws, as the ELBO's kl is: they sum to torch_kl); compared relative to
        # the whole KL (a collapsed group's own KL is near 0), the engine printing
        # 6 digits.
        report["hierarchical"] = True
        report["latent_groups"] = model.group_sizes
        report["engine_group_kl"] = engine.get("group_kl")
        report["torch_group_kl"] = torch_side["torch_group_kl"]
        if isinstance(engine.get("group_kl"), list) and len(engine["group_kl"]) == len(model.group_sizes):
            report["group_kl_difference"] = max(
                abs(a - b) for a, b in zip(engine["group_kl"], torch_side["torch_group_kl"])) / max(
                abs(torch_side["torch_kl"]), 1e-30)
    worst = report["relative_difference"]
    if arguments.iwae_k > 0:
        report["iwae_k"] = arguments.iwae_k
        report["engine_log_likelihood"] = engine["log_likelihood"]
        report["torch_log_likelihood"] = torch_side["torch_log_likelihood"]
        report["log_likelihood_relative_difference"] = relative_difference(
            engine["log_likelihood"], torch_side["torch_log_likelihood"])
        worst = max(worst, report["log_likelihood_relative_difference"])
    print(json.dumps(report))
    if not worst <= arguments.tolerance:
        print(f"torch_check: relative difference {worst:.3e} exceeds {arguments.tolerance:.1e}", file=sys.stderr)
        return 1
    return 0


def self_test():
    """Philox against Random123's known answers, and the float32 pipeline's
    basic invariants. Returns 0 when everything holds."""
    failures = []
    for counter, key, expected in PHILOX_KNOWN_ANSWERS:
        got = philox4x32_10(np.array([counter], dtype=np.uint32), np.uint32(key[0]), np.uint32(key[1]))[0]
        if tuple(int(w) for w in got) != expected:
            failures.append(f"philox4x32_10({counter}, {key}) = {[hex(int(w)) for w in got]}, "
                            f"expected {[hex(w) for w in expected]}")
    uniforms = uniforms_at(1, subsequence(0, PURPOSE_EVAL_BINARIZE, np.arange(1000)), 0)
    if not (uniforms.min() > 0.0 and uniforms.max() <= 1.0):
        failures.append("uniforms outside (0, 1]")
    normals = normals_at(1, subsequence(0, PURPOSE_EVAL_EPS, np.arange(20000)), 0).astype(np.float64)
    if abs(normals.mean()) > 0.02 or abs(normals.std() - 1.0) > 0.02:
        failures.append(f"normals have mean {normals.mean():.4f} and sd {normals.std():.4f}")
    print(json.dumps({"self_test": "failed" if failures else "passed", "failures": failures,
                      "libm": FLOAT_MATH.library is not None}))
    return 1 if failures else 0


def philox_probe(seed, sub, column):
    """The engine's block, uniforms and normals at one address, as hex bits."""
    words = blocks_at(seed, np.array([sub], dtype=np.uint64), column)
    bits = lambda array: [f"{int(w):08x}" for w in np.asarray(array, dtype=np.float32).view(np.uint32).reshape(-1)]
    print(json.dumps({"words": [f"{int(w):08x}" for w in words[0]],
                      "uniforms": bits(uniforms_from_words(words)),
                      "normals": bits(normals_at(seed, np.array([sub], dtype=np.uint64), column))}))
    return 0


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="the engine checkpoint (.safetensors)")
    parser.add_argument("--split", default="test", choices=("train", "validation", "test"))
    parser.add_argument("--count", type=int, default=100, help="the first N examples of the split (default 100)")
    parser.add_argument("--iwae-k", type=int, default=0, help="also compare the IWAE estimate with K samples")
    parser.add_argument("--vae", default=os.path.join(REPOSITORY, "build", "vae"), help="the engine's CLI")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--tolerance", type=float, default=1e-5, help="largest relative difference (default 1e-5)")
    parser.add_argument("--self-test", action="store_true", help="check Philox against Random123's vectors")
    parser.add_argument("--philox-probe", nargs=3, type=int, metavar=("SEED", "SUBSEQUENCE", "COLUMN"),
                        help="print the engine's random block at one address (for cross-checks)")
    arguments = parser.parse_args(argv)
    try:
        if arguments.self_test:
            return self_test()
        if arguments.philox_probe:
            seed, sub, column = arguments.philox_probe
            if not (0 <= seed < 2 ** 64 and 0 <= sub < 2 ** 64 and 0 <= column < 2 ** 34 and column % 4 == 0):
                raise CheckError("--philox-probe: seed and subsequence in 0..2^64-1, column a multiple of 4")
            return philox_probe(seed, sub, column)
        if not arguments.checkpoint:
            raise CheckError("--checkpoint FILE is required (or --self-test / --philox-probe)")
        if arguments.count <= 0 or arguments.iwae_k < 0:
            raise CheckError("--count must be positive and --iwae-k non-negative")
        return check(arguments)
    except CheckError as error:
        print(f"torch_check: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
