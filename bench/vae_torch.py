"""A PyTorch model that computes the same function as vae-engine.

Shared by tests/golden/make_golden.py (golden loss and gradients for the C
engine's test) and bench/pytorch_vae.py (the throughput peer). Written from the
engine's definitions (src/model/model.h, kernels/vae_math.h), not from its code:

  encoder: Linear(D, h1) + act, ..., Linear(h_last, 2Z)  rows 0..Z-1 mu, Z..2Z-1 logvar
  z = mu + exp(0.5 logvar) * eps, eps [L*B, Z] sample-major (row l*B + b is data row b)
  decoder: Linear(Z, g1) + act, ..., Linear(g_last, W)
      W = D  bernoulli logits, or gaussian_fixed means (fixed log-variance)
      W = 2D gaussian: columns 0..D-1 the mean, D..2D-1 the log-variance
  loss = mean over rows b of [ -(1/L) sum_l log p(x_b | z_{l,b}) + beta * KL_b ]

The ModuleList attributes are named encoder and decoder, so the state_dict keys
(encoder.0.weight, ..., decoder.{M}.bias) are exactly the engine's tensor names
and an engine checkpoint loads unchanged (load_engine_checkpoint).

Convolutional models (model.encoder / model.decoder layer lists with conv or
convt layers, or a `dense CxHxW`) are one nn.Sequential per side mapping flat
rows to flat rows, built as src/model/model.h describes: an nn.Unflatten to the
image before a first conv layer, nn.Flatten between conv and dense layers,
nn.Unflatten after `dense CxHxW`, an activation module after every layer but
the heads, nn.Flatten after a decoder's last conv/convt layer. The module
indices are the engine's tensor names (encoder.1.weight is the first Conv2d),
so load_state_dict(strict=True) takes an engine checkpoint as it is.

Hierarchical models (model.latent_groups, configs/README.md "Hierarchical
latents") are TorchHierarchicalVAE: the encoder's layers, every one activated,
give d_0; hierarchy.{g}.{bottom_up,posterior,prior,merge_bottom_up,
merge_top_down,latent_in} (g from 0, the data side) are nn.Linear modules in an
nn.ModuleList of nn.ModuleDict, so the state_dict keys are again the engine's
tensor names; the decoder reads the top-down state s_0 (hierarchy_width wide).
"""

import configparser
import json
import math
import re
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ACTIVATIONS = ("relu", "tanh", "softplus", "gelu")
LIKELIHOODS = ("bernoulli", "gaussian", "gaussian_fixed")
LOG_2PI = math.log(2.0 * math.pi)


def apply_activation(name, pre):
    if name == "relu":
        return torch.relu(pre)
    if name == "tanh":
        return torch.tanh(pre)
    if name == "softplus":
        return F.softplus(pre)
    if name == "gelu":
        return F.gelu(pre)  # the exact (erf) form, as the engine
    raise ValueError(f"unknown activation {name!r}; expected one of {ACTIVATIONS}")


def row_log_likelihood(likelihood, input_dim, gaussian_fixed_logvar, x_repeated, output):
    """Per-row log p(x | decoder output), summed over the D columns."""
    d = input_dim
    if likelihood == "bernoulli":
        # x*l - softplus(l): from logits, never log(sigmoid).
        return (x_repeated * output - F.softplus(output)).sum(dim=1)
    if likelihood == "gaussian":
        mean, logvar = output[:, :d], output[:, d:]
    else:
        mean = output
        logvar = torch.full_like(mean, gaussian_fixed_logvar)
    diff = x_repeated - mean
    return (-0.5 * (LOG_2PI + logvar + diff * diff * torch.exp(-logvar))).sum(dim=1)


ACTIVATION_MODULES = {"relu": nn.ReLU, "tanh": nn.Tanh, "softplus": nn.Softplus, "gelu": nn.GELU}


def parse_layer(text):
    """One layer of a model.encoder / model.decoder list -> dict(kind, outputs, kernel, stride,
    padding, image). outputs 0 means `out` (the image's channels)."""
    words = text.strip().lower().split()
    if len(words) < 2 or words[0] not in ("dense", "conv", "convt"):
        raise ValueError(f"layer {text!r}: expected 'dense N', 'dense CxHxW', 'conv C kK [sS] [pP]' or 'convt ...'")
    layer = {"kind": words[0], "outputs": 0, "kernel": 0, "stride": 1, "padding": 0, "image": None}
    if words[0] == "dense":
        if len(words) != 2:
            raise ValueError(f"layer {text!r}: a dense layer has one size")
        if "x" in words[1]:
            image = tuple(int(v) for v in words[1].split("x"))
            if len(image) != 3:
                raise ValueError(f"layer {text!r}: expected CxHxW")
            layer["image"] = image
            layer["outputs"] = image[0] * image[1] * image[2]
        else:
            layer["outputs"] = int(words[1])
        return layer
    layer["outputs"] = 0 if words[1] == "out" else int(words[1])
    for word in words[2:]:
        key = {"k": "kernel", "s": "stride", "p": "padding"}.get(word[0])
        if key is None:
            raise ValueError(f"layer {text!r}: unknown part {word!r}")
        layer[key] = int(word[1:])
    if layer["kernel"] <= 0:
        raise ValueError(f"layer {text!r}: needs a kernel size kK")
    return layer


def parse_layer_list(text):
    return [parse_layer(item) for item in text.split(",") if item.strip()]


def is_convolutional(layers):
    return any(layer["kind"] != "dense" or layer["image"] is not None for layer in layers or [])


def build_sequential(layers, input_width, image_shape, activation, head_width, decoder, output_channels):
    """One side as an nn.Sequential over flat rows (src/model/model.h): the listed layers,
    then the encoder's head / the decoder's implicit output layer of head_width values
    unless a decoder list ends with a conv/convt layer (or head_width is None)."""
    modules = []
    shape = None  # (C, H, W) while the flow is an image
    width = input_width
    for index, layer in enumerate(layers):
        last = index == len(layers) - 1
        if layer["kind"] == "dense":
            if shape is not None:
                modules.append(nn.Flatten())
                shape = None
            modules.append(nn.Linear(width, layer["outputs"]))
            modules.append(ACTIVATION_MODULES[activation]())
            width = layer["outputs"]
            if layer["image"] is not None:
                modules.append(nn.Unflatten(1, layer["image"]))
                shape = layer["image"]
            continue
        if shape is None:
            if decoder or index != 0 or image_shape is None:
                raise ValueError(f"layer {index + 1} ({layer['kind']}) needs an image input")
            modules.append(nn.Unflatten(1, tuple(image_shape)))
            shape = tuple(image_shape)
        channels = layer["outputs"] or output_channels
        k, s, p = layer["kernel"], layer["stride"], layer["padding"]
        if layer["kind"] == "conv":
            modules.append(nn.Conv2d(shape[0], channels, k, stride=s, padding=p))
            size = lambda n: (n + 2 * p - k) // s + 1  # noqa: E731
        else:
            modules.append(nn.ConvTranspose2d(shape[0], channels, k, stride=s, padding=p))
            size = lambda n: (n - 1) * s - 2 * p + k  # noqa: E731
        shape = (channels, size(shape[1]), size(shape[2]))
        width = shape[0] * shape[1] * shape[2]
        if decoder and last:
            modules.append(nn.Flatten())
            return nn.Sequential(*modules)
        modules.append(ACTIVATION_MODULES[activation]())
    if shape is not None:
        modules.append(nn.Flatten())
    if head_width is not None:  # None: a hierarchical model's encoder, whose last layer (activated) gives d_0
        modules.append(nn.Linear(width, head_width))
    return nn.Sequential(*modules)


class TorchVAE(nn.Module):
    def __init__(self, input_dim, hidden, latent_dim, decoder_hidden=None, activation="relu",
                 likelihood="bernoulli", gaussian_fixed_logvar=0.0, samples=1, beta=1.0,
                 encoder_layers=None, decoder_layers=None, image_shape=None):
        """encoder_layers / decoder_layers: lists of parse_layer dicts (or strings) that
        replace hidden / decoder_hidden; image_shape (C, H, W) of the input when known."""
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r}: expected one of {ACTIVATIONS}")
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood {likelihood!r}: expected one of {LIKELIHOODS}")
        hidden = list(hidden)
        decoder_hidden = list(reversed(hidden)) if decoder_hidden is None else list(decoder_hidden)
        self.input_dim = int(input_dim)
        self.latent_dim = int(latent_dim)
        self.activation = activation
        self.likelihood = likelihood
        self.gaussian_fixed_logvar = float(gaussian_fixed_logvar)
        self.samples = int(samples)
        self.beta = float(beta)
        self.hidden = hidden
        self.decoder_hidden = decoder_hidden
        self.output_width = 2 * self.input_dim if likelihood == "gaussian" else self.input_dim
        self.decoder_input_width = self.latent_dim
        self.hierarchical = False

        def as_layers(items):
            return None if items is None else [parse_layer(i) if isinstance(i, str) else i for i in items]
        encoder_layers, decoder_layers = as_layers(encoder_layers), as_layers(decoder_layers)
        if encoder_layers is None:
            encoder_layers = [dict(kind="dense", outputs=w, image=None) for w in hidden]
        if decoder_layers is None:
            decoder_layers = [dict(kind="dense", outputs=w, image=None) for w in decoder_hidden]
        self.image_shape = tuple(image_shape) if image_shape else None
        self.convolutional = is_convolutional(encoder_layers) or is_convolutional(decoder_layers)
        if self.convolutional:
            channels = self.image_shape[0] if self.image_shape else 0
            output_channels = 2 * channels if likelihood == "gaussian" else channels
            self.encoder = build_sequential(encoder_layers, self.input_dim, self.image_shape, activation,
                                            2 * self.latent_dim, False, output_channels)
            self.decoder = build_sequential(decoder_layers, self.latent_dim, None, activation,
                                            self.output_width, True, output_channels)
            return
        hidden = [layer["outputs"] for layer in encoder_layers]
        decoder_hidden = [layer["outputs"] for layer in decoder_layers]
        encoder_widths = [self.input_dim] + hidden + [2 * self.latent_dim]
        decoder_widths = [self.latent_dim] + decoder_hidden + [self.output_width]
        self.encoder = nn.ModuleList(nn.Linear(a, b) for a, b in zip(encoder_widths[:-1], encoder_widths[1:]))
        self.decoder = nn.ModuleList(nn.Linear(a, b) for a, b in zip(decoder_widths[:-1], decoder_widths[1:]))

    # ---- the pieces -------------------------------------------------------
    @staticmethod
    def _mlp(layers, activation, h):
        for i, layer in enumerate(layers):
            h = layer(h)
            if i + 1 < len(layers):  # the last layer is a head: no activation
                h = apply_activation(activation, h)
        return h

    def encode(self, x):
        """[B, D] -> (mu [B, Z], logvar [B, Z])."""
        head = self.encoder(x) if self.convolutional else self._mlp(self.encoder, self.activation, x)
        return head[:, :self.latent_dim], head[:, self.latent_dim:]

    def decode(self, z):
        """[N, Z] -> decoder output [N, W] (logits, means, or means|logvars)."""
        if self.convolutional:
            return self.decoder(z)
        return self._mlp(self.decoder, self.activation, z)

    def log_likelihood(self, x_repeated, output):
        """Per-row log p(x | decoder output), summed over the D columns."""
        return row_log_likelihood(self.likelihood, self.input_dim, self.gaussian_fixed_logvar, x_repeated, output)

    @staticmethod
    def kl_per_row(mu, logvar):
        """KL(N(mu, exp(lv)) || N(0, I)) per row; expm1 as the engine."""
        return (0.5 * (mu * mu + torch.expm1(logvar) - logvar)).sum(dim=1)

    # ---- the objective ----------------------------------------------------
    def loss_terms(self, x, eps):
        """x [B, D], eps [L*B, Z] sample-major. Returns (loss, mean -logp, mean KL)."""
        rows = x.shape[0]
        samples = eps.shape[0] // rows
        if eps.shape[0] != samples * rows or eps.shape[1] != self.latent_dim:
            raise ValueError(f"eps has shape {tuple(eps.shape)}; expected [{self.samples}*{rows}, {self.latent_dim}]")
        mu, logvar = self.encode(x)
        mu_repeated = mu.repeat(samples, 1)          # row l*B + b is mu[b]
        logvar_repeated = logvar.repeat(samples, 1)
        z = mu_repeated + torch.exp(0.5 * logvar_repeated) * eps
        output = self.decode(z)
        logp = self.log_likelihood(x.repeat(samples, 1), output)  # [L*B]
        reconstruction = -logp.view(samples, rows).mean(dim=0)    # -(1/L) sum_l, per row
        kl = self.kl_per_row(mu, logvar)
        loss = (reconstruction + self.beta * kl).mean()
        return loss, reconstruction.mean(), kl.mean()

    def loss(self, x, eps):
        return self.loss_terms(x, eps)[0]

    def forward(self, x):
        """Training mode: draws eps ~ N(0, I) of shape [L*B, Z] and returns the loss."""
        eps = torch.randn(self.samples * x.shape[0], self.latent_dim, device=x.device, dtype=x.dtype)
        return self.loss(x, eps)

    def parameters_in_engine_order(self):
        """(name, tensor) in the engine's flat-buffer order: per layer weight then bias,
        encoder then decoder (the order of state_dict here)."""
        names = []
        for prefix, layers in (("encoder", self.encoder), ("decoder", self.decoder)):
            for i, layer in enumerate(layers):
                if not hasattr(layer, "weight"):
                    continue  # activation, Flatten, Unflatten
                names.append((f"{prefix}.{i}.weight", layer.weight))
                names.append((f"{prefix}.{i}.bias", layer.bias))
        return names


HIERARCHY_ROLES = ("bottom_up", "posterior", "prior", "merge_bottom_up", "merge_top_down", "latent_in")


def gaussian_log_density(z, mu, logvar):
    """log N(z; mu, exp(logvar)) per row, summed over the columns."""
    diff = z - mu
    return (-0.5 * (LOG_2PI + logvar + diff * diff * torch.exp(-logvar))).sum(dim=1)


def gaussian_kl_per_row(q_mu, q_logvar, p_mu, p_logvar):
    """KL(N(q) || N(p)) per row of diagonal Gaussians (vae_gaussian_kl_term's form, expm1)."""
    t, d = q_logvar - p_logvar, q_mu - p_mu
    return (0.5 * (torch.expm1(t) - t + d * d * torch.exp(-p_logvar))).sum(dim=1)


class TorchHierarchicalVAE(nn.Module):
    """A hierarchical VAE (model.latent_groups), written from configs/README.md
    "Hierarchical latents" and src/model/model.h's vae_latent_group:

      d_0 = the encoder's output (every encoder layer activated)
      d_g = act(bottom_up_g(d_{g-1}))                        g = 1 .. G-1
      top group T = G-1: q(z_T|x) = posterior_T(d_T), prior N(0, I)
      s_T = act(latent_in_T(z_T))
      g = T-1 .. 0: p(z_g|z_>g) = prior_g(s_{g+1})
                    h = act(merge_bottom_up_g(d_g) + merge_top_down_g(s_{g+1}))
                    q(z_g|x, z_>g) = posterior_g(h) (+ p's [mu | logvar] with residual_posterior)
                    s_g = s_{g+1} + act(latent_in_g(z_g))
      decoder(s_0)

    The groups are [z_0 | z_1 | ...] in the concatenated latent (data side
    first); group g's columns start at offsets[g]."""

    def __init__(self, input_dim, hidden, latent_groups, hierarchy_width=256, decoder_hidden=None,
                 activation="relu", likelihood="bernoulli", gaussian_fixed_logvar=0.0, samples=1, beta=1.0,
                 residual_posterior=True, encoder_layers=None, decoder_layers=None, image_shape=None,
                 latent_dim=None):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r}: expected one of {ACTIVATIONS}")
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood {likelihood!r}: expected one of {LIKELIHOODS}")
        self.group_sizes = [int(size) for size in latent_groups]
        if len(self.group_sizes) < 2:
            raise ValueError(f"latent_groups {latent_groups}: a hierarchy has at least 2 groups")
        self.offsets = [sum(self.group_sizes[:g]) for g in range(len(self.group_sizes))]
        self.latent_dim = sum(self.group_sizes)
        if latent_dim is not None and int(latent_dim) != self.latent_dim:
            raise ValueError(f"latent_dim {latent_dim} is not the sum of latent_groups {self.group_sizes}")
        self.input_dim = int(input_dim)
        self.hierarchy_width = int(hierarchy_width)
        self.activation = activation
        self.likelihood = likelihood
        self.gaussian_fixed_logvar = float(gaussian_fixed_logvar)
        self.samples = int(samples)
        self.beta = float(beta)
        self.residual_posterior = bool(residual_posterior)
        self.output_width = 2 * self.input_dim if likelihood == "gaussian" else self.input_dim
        self.decoder_input_width = self.hierarchy_width
        self.hierarchical = True
        hidden = list(hidden)
        decoder_hidden = list(reversed(hidden)) if decoder_hidden is None else list(decoder_hidden)

        def as_layers(items):
            return None if items is None else [parse_layer(i) if isinstance(i, str) else i for i in items]
        encoder_layers, decoder_layers = as_layers(encoder_layers), as_layers(decoder_layers)
        if encoder_layers is None:
            encoder_layers = [dict(kind="dense", outputs=w, image=None) for w in hidden]
        if decoder_layers is None:
            decoder_layers = [dict(kind="dense", outputs=w, image=None) for w in decoder_hidden]
        if not encoder_layers:
            raise ValueError("latent_groups needs at least one encoder layer")
        self.image_shape = tuple(image_shape) if image_shape else None
        self.convolutional = is_convolutional(encoder_layers) or is_convolutional(decoder_layers)
        width = self.hierarchy_width
        if self.convolutional:
            channels = self.image_shape[0] if self.image_shape else 0
            output_channels = 2 * channels if likelihood == "gaussian" else channels
            self.encoder = build_sequential(encoder_layers, self.input_dim, self.image_shape, activation,
                                            None, False, output_channels)
            self.decoder = build_sequential(decoder_layers, width, None, activation, self.output_width, True,
                                            output_channels)
            with torch.no_grad():
                feature_width = self.encoder(torch.zeros(1, self.input_dim)).shape[1]
        else:
            encoder_widths = [self.input_dim] + [layer["outputs"] for layer in encoder_layers]
            decoder_widths = [width] + [layer["outputs"] for layer in decoder_layers] + [self.output_width]
            self.encoder = nn.ModuleList(nn.Linear(a, b) for a, b in zip(encoder_widths[:-1], encoder_widths[1:]))
            self.decoder = nn.ModuleList(nn.Linear(a, b) for a, b in zip(decoder_widths[:-1], decoder_widths[1:]))
            feature_width = encoder_widths[-1]
        top = len(self.group_sizes) - 1
        groups = []
        for g, size in enumerate(self.group_sizes):
            layers = nn.ModuleDict()
            if g > 0:
                layers["bottom_up"] = nn.Linear(feature_width, width)
                feature_width = width
            if g == top:
                layers["posterior"] = nn.Linear(feature_width, 2 * size)
            else:
                layers["prior"] = nn.Linear(width, 2 * size)
                layers["merge_bottom_up"] = nn.Linear(feature_width, width)
                layers["merge_top_down"] = nn.Linear(width, width)
                layers["posterior"] = nn.Linear(width, 2 * size)
            layers["latent_in"] = nn.Linear(size, width)
            groups.append(layers)
        self.hierarchy = nn.ModuleList(groups)

    def act(self, pre):
        return apply_activation(self.activation, pre)

    def features(self, x):
        """d_0 .. d_{G-1}, each [B, width]."""
        if self.convolutional:
            d = self.encoder(x)
        else:
            d = x
            for layer in self.encoder:
                d = self.act(layer(d))
        out = [d]
        for g in range(1, len(self.group_sizes)):
            out.append(self.act(self.hierarchy[g]["bottom_up"](out[-1])))
        return out

    def decode(self, s0):
        if self.convolutional:
            return self.decoder(s0)
        return TorchVAE._mlp(self.decoder, self.activation, s0)

    def log_likelihood(self, x_repeated, output):
        return row_log_likelihood(self.likelihood, self.input_dim, self.gaussian_fixed_logvar, x_repeated, output)

    def evaluate_terms(self, x, group_eps, logvar_clamp=0.0):
        """x [B, D]; group_eps[g] [S*B, size_g], sample-major (row l*B + b: sample l of
        data row b). Returns a dict of
          logp [S*B]: log p(x|z) of each draw;
          kl [B]: the top group's KL from N(0, I) plus each lower group's KL from its
              conditional prior averaged over the S draws (the engine's ELBO term);
          log_ratio [S*B]: sum over the groups of log p(z_g|z_>g) - log q(z_g|x, z_>g)
              (the top's against N(0, I)) at the drawn z: the IWAE log weight less logp;
          group_kl: G tensors [B], each group's share of kl (the engine's group_kl)."""
        rows = x.shape[0]
        samples = group_eps[0].shape[0] // rows
        top = len(self.group_sizes) - 1

        def split(head, size):
            mu, logvar = head[:, :size], head[:, size:]
            if logvar_clamp > 0:
                logvar = logvar.clamp(-logvar_clamp, logvar_clamp)
            return mu, logvar

        d = self.features(x)
        size = self.group_sizes[top]
        mu, logvar = split(self.hierarchy[top]["posterior"](d[top]), size)
        mu_r, logvar_r = mu.repeat(samples, 1), logvar.repeat(samples, 1)
        z = mu_r + torch.exp(0.5 * logvar_r) * group_eps[top]
        group_kl = [None] * len(self.group_sizes)
        group_kl[top] = TorchVAE.kl_per_row(mu, logvar)
        log_ratio = gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z)) - \
            gaussian_log_density(z, mu_r, logvar_r)
        state = self.act(self.hierarchy[top]["latent_in"](z))
        for g in range(top - 1, -1, -1):
            layers, size = self.hierarchy[g], self.group_sizes[g]
            prior_head = layers["prior"](state)
            merge = self.act(layers["merge_top_down"](state) + layers["merge_bottom_up"](d[g]).repeat(samples, 1))
            posterior_head = layers["posterior"](merge)
            if self.residual_posterior:
                posterior_head = posterior_head + prior_head
            p_mu, p_logvar = split(prior_head, size)
            q_mu, q_logvar = split(posterior_head, size)
            z = q_mu + torch.exp(0.5 * q_logvar) * group_eps[g]
            draw_kl = gaussian_kl_per_row(q_mu, q_logvar, p_mu, p_logvar).view(samples, rows)
            group_kl[g] = draw_kl.mean(dim=0)
            log_ratio = log_ratio + gaussian_log_density(z, p_mu, p_logvar) - gaussian_log_density(z, q_mu, q_logvar)
            state = state + self.act(layers["latent_in"](z))
        logp = self.log_likelihood(x.repeat(samples, 1), self.decode(state))
        return {"logp": logp, "kl": sum(group_kl[1:], group_kl[0]), "log_ratio": log_ratio, "group_kl": group_kl}


# ---- configs ----------------------------------------------------------------

def parse_width_list(text):
    """'400, 200' or '400 200' -> [400, 200]; '' or 'none' -> []."""
    text = (text or "").strip()
    if text.lower() in ("", "none"):
        return []
    return [int(item) for item in re.split(r"[,\s]+", text) if item]


def read_config_text(text):
    parser = configparser.ConfigParser(inline_comment_prefixes=("#", ";"))
    parser.read_string(text)
    return parser


def model_settings_from_config(parser):
    """The keyword arguments of TorchVAE (less input_dim) from an INI parser, with
    the engine's key names ([model] hidden, decoder_hidden, latent_dim, ...); with
    latent_groups also latent_groups, hierarchy_width and residual_posterior, the
    keywords of TorchHierarchicalVAE (model_class_for picks the class)."""
    model = parser["model"] if parser.has_section("model") else {}
    settings = {
        "hidden": parse_width_list(model.get("hidden", "400")),
        "latent_dim": int(model.get("latent_dim", "20")),
        "activation": model.get("activation", "relu").strip(),
        "likelihood": model.get("likelihood", "bernoulli").strip(),
        "gaussian_fixed_logvar": float(model.get("gaussian_fixed_logvar", "0")),
        "samples": int(model.get("samples", "1")),
        "beta": float(model.get("beta", "1")),
    }
    settings["decoder_hidden"] = (parse_width_list(model["decoder_hidden"]) if "decoder_hidden" in model
                                  else None)
    # Layer lists (model.encoder / model.decoder) replace the widths lists.
    if model.get("encoder", "").strip():
        settings["encoder_layers"] = parse_layer_list(model["encoder"])
        if not model.get("decoder", "").strip() and not is_convolutional(settings["encoder_layers"]):
            settings["decoder_hidden"] = [layer["outputs"] for layer in reversed(settings["encoder_layers"])]
    if model.get("decoder", "").strip():
        settings["decoder_layers"] = parse_layer_list(model["decoder"])
    # Hierarchical latents: TorchHierarchicalVAE's keywords besides.
    groups = parse_width_list(model.get("latent_groups", ""))
    if groups:
        settings["latent_groups"] = groups
        settings["hierarchy_width"] = int(model.get("hierarchy_width", "256"))
        residual = model.get("residual_posterior", "on").strip().lower()
        if residual not in ("on", "off"):
            raise ValueError(f"residual_posterior {residual!r}: expected on or off")
        settings["residual_posterior"] = residual == "on"
    return settings


# ---- engine checkpoints (safetensors) ---------------------------------------

def _read_safetensors_by_hand(path):
    """(tensors {name: np.ndarray float32}, metadata {str: str}) with json+struct+numpy."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError(f"{path}: {len(blob)} bytes, too short for a safetensors header length")
    (header_length,) = struct.unpack("<Q", blob[:8])
    if header_length > len(blob) - 8:
        raise ValueError(f"{path}: header length {header_length} exceeds the file ({len(blob)} bytes)")
    header = json.loads(blob[8:8 + header_length].decode("utf-8"))
    data = blob[8 + header_length:]
    metadata = header.pop("__metadata__", {}) or {}
    tensors = {}
    for name, entry in header.items():
        if entry.get("dtype") != "F32":
            raise ValueError(f"{path}: tensor {name} has dtype {entry.get('dtype')}; expected F32")
        begin, end = entry["data_offsets"]
        shape = [int(s) for s in entry["shape"]]
        count = int(np.prod(shape)) if shape else 1
        if not (0 <= begin <= end <= len(data)) or end - begin != 4 * count:
            raise ValueError(f"{path}: tensor {name} offsets {begin}..{end} do not fit shape {shape}"
                             f" in a data section of {len(data)} bytes")
        tensors[name] = np.frombuffer(data, dtype="<f4", count=count, offset=begin).reshape(shape).copy()
    return tensors, metadata


def read_safetensors(path):
    """Prefers the safetensors package when installed; else the hand parser."""
    try:
        from safetensors import safe_open
    except ImportError:
        return _read_safetensors_by_hand(path)
    tensors = {}
    with safe_open(path, framework="numpy") as f:
        metadata = f.metadata() or {}
        for name in f.keys():
            tensors[name] = f.get_tensor(name)
    return tensors, metadata


def load_engine_checkpoint(path):
    """Builds a TorchVAE (or TorchHierarchicalVAE) from an engine checkpoint: the model from the INI text in
    __metadata__["config"], input_dim from encoder.0.weight, then the weights.
    Extra tensors (optimizer state) are ignored. Returns (model, metadata)."""
    tensors, metadata = read_safetensors(path)
    if "config" not in metadata:
        raise ValueError(f"{path}: __metadata__ has no 'config' entry (keys: {sorted(metadata)})")
    model = model_for_checkpoint(path, tensors, metadata)
    state = model.state_dict()
    missing = [name for name in state if name not in tensors]
    if missing:
        raise ValueError(f"{path}: missing tensors {missing}")
    for name, value in state.items():
        if tuple(tensors[name].shape) != tuple(value.shape):
            raise ValueError(f"{path}: tensor {name} has shape {tensors[name].shape}; expected {tuple(value.shape)}")
    model.load_state_dict({name: torch.from_numpy(tensors[name]) for name in state})
    return model, metadata


def model_for_checkpoint(path, tensors, metadata):
    """An untrained TorchVAE (TorchHierarchicalVAE where the stored config has
    latent_groups) of the checkpoint's architecture: the stored config's model
    section, input_dim and the image shape from the metadata."""
    if "config" not in metadata:
        raise ValueError(f"{path}: __metadata__ has no 'config' entry (keys: {sorted(metadata)})")
    settings = model_settings_from_config(read_config_text(metadata["config"]))
    if "input_dim" in metadata:
        input_dim = int(metadata["input_dim"])
    elif "encoder.0.weight" in tensors:
        input_dim = tensors["encoder.0.weight"].shape[1]
    else:
        raise ValueError(f"{path}: no input_dim metadata and no tensor encoder.0.weight")
    channels = int(metadata.get("image_channels", "0"))  # 0: not images (or a checkpoint of a dense model)
    if channels > 0:
        settings["image_shape"] = (channels, int(metadata["image_rows"]), int(metadata["image_cols"]))
    return model_class_for(settings)(input_dim, **settings)


def model_class_for(settings):
    """TorchHierarchicalVAE for settings with latent_groups, else TorchVAE."""
    return TorchHierarchicalVAE if settings.get("latent_groups") else TorchVAE


def decoder_floats_per_row(model):
    """vae_model_decoder_floats_per_row: z, the output, and every decoder layer's
    pre- and post-activation values (src/training/evaluate.c sizes conv batches by it)."""
    floats = model.latent_dim + model.output_width
    with torch.no_grad():
        h = torch.zeros(1, model.decoder_input_width, dtype=next(model.parameters()).dtype)
        for module in model.decoder:
            h = module(h)
            if hasattr(module, "weight"):
                floats += 2 * h[0].numel()
    return floats
