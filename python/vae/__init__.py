"""vae-engine from Python: train a variational autoencoder and use the model
on numpy arrays.

    import vae
    model = vae.train({"data.path": "/usr/share/datasets/fashion-mnist", "train.epochs": 1},
                      out_dir="runs/python")
    mu, logvar = model.encode(images)      # images: float32 [n, D] in [0,1]
    print(model.elbo(images, mean=True))

Every call goes to the C library (libvae.so) through cffi, which releases the
GIL while the call runs: training and evaluation do not hold up other Python
threads. A Model serialises its own calls (one lock per model). Failures raise
VaeError with the engine's message (vae_last_error()).
"""
import os
import threading
import warnings

import numpy as np

from ._native import DEVICES, VaeError, check, ffi, lib

__all__ = ["Model", "VaeError", "train", "version"]

# vae_trainer_sample's bound on the count
_MAX_SAMPLES = 100000


def version():
    """The engine's version, "MAJOR.MINOR.PATCH"."""
    return ffi.string(lib.vae_version()).decode()


def _device(name):
    try:
        return DEVICES[name]
    except KeyError:
        raise ValueError("device must be one of %s, got %r" % (", ".join(DEVICES), name)) from None


def _setting_text(value):
    # Lists of widths are comma-separated in the INI syntax (configs/README.md).
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(item) for item in value)
    return str(value)


def _build_config(config, overrides):
    """config: None (defaults), a path to an INI file, or a dict of overrides
    on the defaults; overrides: a dict applied after. As the CLI does: a file,
    then the overrides (a shortened run cuts the warm-up), then validation."""
    holder = ffi.new("char[]", lib.vae_config_size())
    resolved = ffi.cast("vae_config *", holder)
    lib.vae_config_defaults(resolved)
    settings = {}
    if isinstance(config, dict):
        settings.update(config)
    elif config is not None:
        check(lib.vae_config_load_file(resolved, os.fsencode(config)))
    settings.update(overrides or {})
    before = ffi.new("char[]", lib.vae_config_size())
    ffi.memmove(before, holder, lib.vae_config_size())
    for key, value in settings.items():
        check(lib.vae_config_set(resolved, ("%s=%s" % (key, _setting_text(value))).encode()))
    note = ffi.new("char[]", 256)
    if lib.vae_config_fit_warmup_to_overrides(resolved, ffi.cast("vae_config *", before), note, 256):
        warnings.warn(ffi.string(note).decode("utf-8", "replace"), stacklevel=3)
    check(lib.vae_config_validate(resolved))
    return holder, resolved


def train(config=None, *, overrides=None, out_dir=None, epochs=None, max_steps=0, device="cpu", force=False,
          quiet=True):
    """Trains a model and returns it.

    config: a path to an INI file (configs/README.md), or a dict of
    "section.key": value overrides on the defaults (e.g. {"data.path": ...,
    "model.hidden": [256, 128]}); overrides: a dict applied on top of either.
    epochs sets train.epochs; max_steps > 0 stops after that many steps.
    out_dir: the run folder (checkpoint.safetensors, metrics.jsonl,
    config.ini), None for no files; force starts over in a folder holding an
    earlier run's checkpoint. device: "cpu", "cuda" or "auto".
    Ctrl-C (KeyboardInterrupt) stops the run after its current step, with a
    checkpoint written to out_dir."""
    overrides = dict(overrides or {})
    if epochs is not None:
        overrides["train.epochs"] = int(epochs)
    # holder owns the memory resolved points into: it lives until create returns.
    holder, resolved = _build_config(config, overrides)
    trainer = ffi.new("vae_trainer **")
    check(lib.vae_trainer_create(trainer, resolved, _device(device)))
    del holder
    model = Model(trainer[0])
    keep = []  # the option strings live until the call returns
    options = ffi.new("vae_train_options *")
    if out_dir is not None:
        keep.append(ffi.new("char[]", os.fsencode(out_dir)))
        options.out_dir = keep[-1]
    options.force = int(bool(force))
    options.quiet = int(bool(quiet))
    options.max_steps = int(max_steps)
    with model._lock:
        _train_interruptibly(model._trainer, options)
    return model


def _train_interruptibly(trainer, options):
    """vae_trainer_train on a worker thread: the main thread stays in Python,
    where Ctrl-C raises KeyboardInterrupt; then vae_request_stop() has the run
    write its checkpoint and stop after the current step, and the interrupt
    goes on once it has."""
    outcome = []
    finished = threading.Event()

    def run():
        try:
            check(lib.vae_trainer_train(trainer, options))
        except VaeError as error:
            outcome.append(error)
        finally:
            finished.set()

    worker = threading.Thread(target=run, name="vae-train")
    worker.start()
    # An Event, not Thread.join(timeout): a KeyboardInterrupt inside join can
    # leave the thread looking finished to the next join (seen with CPython 3.11).
    try:
        while not finished.wait(0.1):
            pass
    except KeyboardInterrupt:
        lib.vae_request_stop()
        finished.wait()
        raise
    finally:
        if finished.is_set():
            worker.join()
    if outcome:
        raise outcome[0]


class Model:
    """A trained model (a vae_trainer): from train() or Model.load()."""

    def __init__(self, trainer):
        self._trainer = ffi.gc(trainer, lib.vae_trainer_destroy)
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path, device="cpu"):
        """The model of a checkpoint (checkpoint.safetensors); its stored config comes along."""
        trainer = ffi.new("vae_trainer **")
        check(lib.vae_trainer_load(trainer, os.fsencode(path), _device(device)))
        return cls(trainer[0])

    @property
    def input_dim(self):
        """D, the values per input row and per decoded image."""
        return lib.vae_trainer_input_dim(self._trainer)

    @property
    def latent_dim(self):
        return lib.vae_trainer_latent_dim(self._trainer)

    @property
    def step(self):
        """Optimizer steps taken."""
        return int(lib.vae_trainer_step(self._trainer))

    @property
    def device(self):
        return ffi.string(lib.vae_trainer_device_name(self._trainer)).decode()

    @property
    def config(self):
        """The model's resolved config as INI text."""
        text = ffi.new("char **")
        check(lib.vae_config_to_string(lib.vae_trainer_config(self._trainer), text))
        try:
            return ffi.string(text[0]).decode()
        finally:
            lib.free(text[0])

    def save(self, path):
        """Writes the model (weights, optimizer state, config) as a checkpoint."""
        with self._lock:
            check(lib.vae_trainer_save(self._trainer, os.fsencode(path)))

    def _rows(self, x, width, what):
        # [n, width] float32, C order: [n, D] or [n, ...] pictures; one row alone is [width].
        array = np.ascontiguousarray(x, dtype=np.float32)
        if array.ndim == 1:
            array = array.reshape(1, -1)
        array = array.reshape(array.shape[0], -1) if array.ndim > 2 else array
        if array.ndim != 2 or array.shape[1] != width or array.shape[0] < 1:
            raise ValueError("%s: expected rows of %d values, got an array of shape %s" % (what, width, np.shape(x)))
        return array

    def _pointer(self, array, kind):
        return ffi.cast(kind, ffi.from_buffer(array))

    def encode(self, x):
        """The posterior q(z|x) of each row: (mu, logvar), float32 [n, latent_dim].
        x: float32 values in [0,1], [n, input_dim] (or [n, ...] pictures)."""
        inputs = self._rows(x, self.input_dim, "encode")
        mu = np.empty((inputs.shape[0], self.latent_dim), dtype=np.float32)
        logvar = np.empty_like(mu)
        with self._lock:
            check(lib.vae_trainer_encode_inputs(self._trainer, self._pointer(inputs, "float *"), inputs.shape[0],
                                                self._pointer(mu, "float *"), self._pointer(logvar, "float *")))
        return mu, logvar

    def decode(self, z):
        """Images in [0,1], float32 [n, input_dim], for latent rows z [n, latent_dim]."""
        latents = self._rows(z, self.latent_dim, "decode")
        images = np.empty((latents.shape[0], self.input_dim), dtype=np.float32)
        with self._lock:
            check(lib.vae_trainer_decode(self._trainer, self._pointer(latents, "float *"), latents.shape[0],
                                         self._pointer(images, "float *")))
        return images

    def sample(self, n, seed=0, temperature=1.0):
        """n images decoded from prior draws, float32 [n, input_dim]; the same seed gives the same images.
        temperature scales the prior's noise (every group's, sampled from the top, for a hierarchical model)."""
        if not 1 <= n <= _MAX_SAMPLES:
            raise ValueError("sample: n must be between 1 and %d, got %d" % (_MAX_SAMPLES, n))
        if not 0.0 < temperature <= 100.0:
            raise ValueError("sample: temperature must be in (0, 100], got %r" % (temperature,))
        images = np.empty((n, self.input_dim), dtype=np.float32)
        with self._lock:
            check(lib.vae_trainer_sample_at_temperature(self._trainer, int(n), int(seed), float(temperature),
                                                        self._pointer(images, "float *")))
        return images

    def _evaluate(self, x, k, want_iwae):
        inputs = self._rows(x, self.input_dim, "evaluate")
        count = inputs.shape[0]
        elbo = np.empty(count, dtype=np.float64)
        iwae = np.empty(count, dtype=np.float64) if want_iwae else None
        with self._lock:
            check(lib.vae_trainer_evaluate_inputs(
                self._trainer, self._pointer(inputs, "float *"), count, int(k), self._pointer(elbo, "double *"),
                self._pointer(iwae, "double *") if want_iwae else ffi.NULL))
        return elbo, iwae

    def elbo(self, x, mean=False):
        """The ELBO of each row in nats, float64 [n] (its mean with mean=True),
        with one reparameterised sample per row and the evaluation's fixed noise,
        as `vae eval` computes it."""
        elbo, _ = self._evaluate(x, 0, False)
        return float(elbo.mean()) if mean else elbo

    def iwae(self, x, k, mean=False):
        """The importance-weighted estimate of log p(x) over k samples per row,
        float64 [n] (its mean with mean=True), as `vae eval --iwae-k k`."""
        if k < 1:
            raise ValueError("iwae: k must be at least 1, got %d" % k)
        _, iwae = self._evaluate(x, k, True)
        return float(iwae.mean()) if mean else iwae
