#!/usr/bin/python3
"""Writes the fuzzers' seed corpora into tests/fuzz/corpus/: for each reader a
few small valid files and some that are one mistake away from valid (wrong
magic, truncated, trailing bytes, bad header fields), so that the fuzzer starts
inside the interesting parts of each format. Deterministic: running it again
writes the same bytes. Run with /usr/bin/python3 (needs numpy)."""
import gzip
import io
import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CORPUS = HERE / "corpus"


def write(folder, name, data):
    path = CORPUS / folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    assert len(data) < 4096, f"{path}: seed files stay under 4 KB"
    path.write_bytes(data)


def gzip_bytes(data):
    # mtime=0 keeps the output identical from run to run.
    return gzip.compress(data, compresslevel=9, mtime=0)


# ------------------------------------------------------------------ IDX
def idx_images(count, rows, cols, magic=0x00000803):
    values = (np.arange(count * rows * cols) * 37 % 256).astype(np.uint8)
    return struct.pack(">IIII", magic, count, rows, cols) + values.tobytes()


def idx_labels(count, magic=0x00000801):
    return struct.pack(">II", magic, count) + bytes(i % 10 for i in range(count))


def make_idx():
    images = idx_images(3, 4, 5)
    labels = idx_labels(7)
    write("idx", "images_3x4x5", images)
    write("idx", "images_3x4x5.gz", gzip_bytes(images))
    write("idx", "images_1x28x28.gz", gzip_bytes(idx_images(1, 28, 28)))
    write("idx", "labels_7", labels)
    write("idx", "labels_7.gz", gzip_bytes(labels))
    write("idx", "images_truncated", images[:-3])
    write("idx", "images_trailing_byte", images + b"\x00")
    write("idx", "images_zero_rows", idx_images(3, 4, 5)[:8] + struct.pack(">II", 0, 5) + images[16:])
    write("idx", "images_bad_magic", idx_images(3, 4, 5, magic=0x00000802))
    write("idx", "images_huge_count", struct.pack(">IIII", 0x803, 0xFFFFFFFF, 28, 28) + images[16:])
    write("idx", "images_gzip_cut_short", gzip_bytes(images)[:-6])
    write("idx", "labels_short_header", labels[:6])
    write("idx", "labels_trailing.gz", gzip_bytes(labels + b"\x05"))


# ------------------------------------------------------------------ NPY
def npy_bytes(array, version=None):
    buffer = io.BytesIO()
    if version is None:
        np.save(buffer, array, allow_pickle=False)
    else:
        np.lib.format.write_array(buffer, array, version=version, allow_pickle=False)
    return buffer.getvalue()


def npy_by_hand(header_text, data, version=(1, 0)):
    """An NPY file from a header dict text, padded as NumPy pads it."""
    length_bytes = 2 if version == (1, 0) else 4
    preamble = 6 + 2 + length_bytes
    header = header_text.encode("latin1")
    padding = (-(preamble + len(header) + 1)) % 64
    header = header + b" " * padding + b"\n"
    length = struct.pack("<H" if length_bytes == 2 else "<I", len(header))
    return b"\x93NUMPY" + bytes(version) + length + header + data


def make_npy():
    floats = (np.arange(24, dtype=np.float32) / 23.0).reshape(4, 6)
    bytes_2d = (np.arange(30) * 11 % 256).astype(np.uint8).reshape(3, 10)
    bytes_3d = (np.arange(2 * 4 * 4) * 5 % 256).astype(np.uint8).reshape(2, 4, 4)
    write("npy", "f32_4x6.npy", npy_bytes(floats))
    write("npy", "u8_3x10.npy", npy_bytes(bytes_2d))
    write("npy", "u8_2x4x4.npy", npy_bytes(bytes_3d))
    # (N, C, H, W) images, and a rank the data reader refuses.
    write("npy", "u8_2x3x4x4.npy", npy_bytes((np.arange(2 * 3 * 4 * 4) * 7 % 256).astype(np.uint8).reshape(2, 3, 4, 4)))
    write("npy", "f32_1x2x3x3.npy", npy_bytes((np.arange(18, dtype=np.float32) / 17.0).reshape(1, 2, 3, 3)))
    write("npy", "u8_rank5.npy", npy_bytes(np.zeros((1, 2, 2, 2, 1), dtype=np.uint8)))
    write("npy", "u8_3x10_v2.npy", npy_bytes(bytes_2d, version=(2, 0)))
    write("npy", "u8_3x10_v3.npy", npy_bytes(bytes_2d, version=(3, 0)))
    write("npy", "labels_u1.npy", npy_bytes(np.array([0, 1, 2, 9, 3], dtype=np.uint8)))
    write("npy", "labels_i4.npy", npy_bytes(np.array([4, 0, 7], dtype="<i4")))
    write("npy", "labels_i8.npy", npy_bytes(np.array([1, 2, 3, 4], dtype="<i8")))
    write("npy", "labels_negative_i8.npy", npy_bytes(np.array([1, -2], dtype="<i8")))
    write("npy", "f32_out_of_range.npy", npy_bytes(np.array([[0.5, 1.5], [0.0, -0.25]], dtype=np.float32)))
    write("npy", "f32_nan.npy", npy_bytes(np.array([[0.5, np.nan]], dtype=np.float32)))
    write("npy", "f32_big_endian.npy", npy_bytes(floats.astype(">f4")))
    write("npy", "f64.npy", npy_bytes(floats.astype(np.float64)))
    write("npy", "fortran_order.npy", npy_bytes(np.asfortranarray(bytes_2d)))
    write("npy", "truncated.npy", npy_bytes(bytes_2d)[:-4])
    write("npy", "trailing.npy", npy_bytes(bytes_2d) + b"\x01\x02")
    write("npy", "scalar.npy", npy_bytes(np.float32(0.5)))
    write("npy", "hand_shape_3.npy",
          npy_by_hand("{'descr': '|u1', 'fortran_order': False, 'shape': (3,), }", b"\x01\x02\x03"))
    write("npy", "hand_spaces.npy",
          npy_by_hand("{ 'shape' : ( 2 , 2 ) , 'fortran_order' : False , 'descr' : '<f4' }",
                      np.zeros(4, dtype="<f4").tobytes()))
    write("npy", "hand_huge_shape.npy",
          npy_by_hand("{'descr': '|u1', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", b""))
    write("npy", "hand_bad_version.npy",
          b"\x93NUMPY\x04\x00" + npy_bytes(bytes_2d)[8:])
    write("npy", "hand_header_too_long.npy", b"\x93NUMPY\x01\x00\xff\xff{'descr': '|u1'")


# ------------------------------------------------------------------ safetensors
def safetensors(tensors, metadata=None, checksum=None, pad=True, header_override=None):
    """The layout src/io/checkpoint.c writes: 8-byte LE header length, compact JSON
    padded with spaces to a multiple of 8, then the F32 data in order."""
    data = b""
    header = {}
    meta = dict(metadata or {})
    entries = {}
    for name, array in tensors:
        array = np.ascontiguousarray(array, dtype="<f4")
        begin = len(data)
        data += array.tobytes()
        entries[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [begin, len(data)]}
    meta.setdefault("checksum", checksum if checksum is not None else "crc32:%08x" % (zlib.crc32(data) & 0xFFFFFFFF))
    meta.setdefault("format", "vae-engine-1")
    header["__metadata__"] = meta
    header.update(entries)
    text = header_override if header_override is not None else json.dumps(header, separators=(",", ":"))
    text = text.encode("utf-8")
    if pad:
        text += b" " * ((-len(text)) % 8)
    return struct.pack("<Q", len(text)) + text + data


def make_safetensors():
    weight = np.arange(6, dtype=np.float32).reshape(2, 3) / 10
    bias = np.array([0.5, -0.5], dtype=np.float32)
    metadata = {"step": "12", "epoch": "1", "seed": "7"}
    pair = [("encoder.0.weight", weight), ("encoder.0.bias", bias)]
    write("safetensors", "two_tensors.safetensors", safetensors(pair, metadata))
    write("safetensors", "scalar_and_empty.safetensors",
          safetensors([("scale", np.array(2.0, dtype=np.float32)), ("empty", np.zeros((0, 3), np.float32))]))
    write("safetensors", "rank4.safetensors", safetensors([("kernel", np.ones((1, 2, 2, 1), np.float32))]))
    write("safetensors", "metadata_only.safetensors", safetensors([], {"config": "[model]\nlatent_dim = 2\n"}))
    write("safetensors", "unpadded.safetensors", safetensors(pair, metadata, pad=False))
    write("safetensors", "bad_checksum.safetensors", safetensors(pair, metadata, checksum="crc32:00000000"))
    write("safetensors", "wrong_format.safetensors", safetensors(pair, {"format": "other"}))
    good = safetensors(pair, metadata)
    write("safetensors", "truncated.safetensors", good[:-4])
    write("safetensors", "trailing.safetensors", good + b"\x00\x00\x00\x00")
    data = np.concatenate([weight.ravel(), bias]).astype("<f4").tobytes()
    crc = "crc32:%08x" % (zlib.crc32(data) & 0xFFFFFFFF)
    overlapping = json.dumps({
        "__metadata__": {"checksum": crc, "format": "vae-engine-1"},
        "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [20, 28]}}, separators=(",", ":"))
    write("safetensors", "overlapping.safetensors", safetensors(pair, header_override=overlapping))
    wrong_dtype = json.dumps({
        "__metadata__": {"checksum": crc, "format": "vae-engine-1"},
        "a": {"dtype": "F16", "shape": [2, 3], "data_offsets": [0, 24]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [24, 32]}}, separators=(",", ":"))
    write("safetensors", "wrong_dtype.safetensors", safetensors(pair, header_override=wrong_dtype))
    write("safetensors", "header_too_long.safetensors", struct.pack("<Q", 1 << 40) + b"{}")
    write("safetensors", "not_json.safetensors", struct.pack("<Q", 8) + b"{\"a\":[1," + data)


# ------------------------------------------------------------------ config
def make_config():
    tiny = (ROOT / "configs" / "tiny_test.ini").read_text()
    write("config", "tiny_test.ini", tiny.encode())
    for name in ("fashion_mnist.ini", "aevb_paper.ini"):
        source = ROOT / "configs" / name
        if source.exists() and source.stat().st_size < 4096:
            shutil.copyfile(source, CORPUS / "config" / name)
    write("config", "gaussian_adamw.ini", b"""[data]
path = /tmp/data
binarize = none
validation_size = 100

[model]
latent_dim = 16
hidden = 256, 128
decoder_hidden = 128, 256
activation = tanh
likelihood = gaussian_fixed
gaussian_fixed_logvar = -2.5
samples = 2
beta = 0.5
kl_warmup_steps = 1000

[train]
epochs = 3
batch_size = 64
seed = 18446744073709551615
lr = 3e-4
lr_min = 1e-5
lr_schedule = cosine
warmup_steps = 50
optimizer = adamw
weight_decay = 0.01
grad_clip = 1.0
""")
    write("config", "empty_values.ini", b"[model]\nhidden =\n[train]\nlr = \n")
    write("config", "unknown_key.ini", b"[train]\nlearning_rate = 1\n")
    write("config", "out_of_range.ini", b"[model]\nlatent_dim = -3\nbeta = nan\n[train]\nbatch_size = 99999999999\n")
    write("config", "no_section.ini", b"latent_dim = 4\n")
    write("config", "comments_crlf.ini", b"; comment\r\n[model] # trailing\r\nlatent_dim = 4 ; inline\r\n")
    # Layer lists (model.encoder, model.decoder): valid, and a few mistakes away.
    write("config", "conv_layers.ini", b"""[model]
latent_dim = 16
hidden =
decoder_hidden =
encoder = conv 32 k4 s2 p1, conv 64 k4 s2 p1, dense 256
decoder = dense 256, dense 64x7x7, convt 32 k4 s2 p1, convt out k4 s2 p1
""")
    write("config", "conv_layers_spelling.ini", b"[model]\nencoder = CONV 3 K5,Conv 8 p2 k5 S3 ,\tdense 10\n"
                                                b"decoder = Dense 2X3X4, ConvT OUT k3\n")
    write("config", "conv_layers_mistakes.ini", b"[model]\nhidden = 64\nencoder = conv 8 k3 k3, dense 4x2x2, conv out,\n"
                                                b"decoder = convt 3 k40 p50\n")


def main():
    if CORPUS.exists():
        shutil.rmtree(CORPUS)
    make_idx()
    make_npy()
    make_safetensors()
    make_config()
    files = [p for p in CORPUS.rglob("*") if p.is_file()]
    total = sum(p.stat().st_size for p in files)
    assert total < 100 * 1024, f"the seed corpora total {total} bytes; keep them under 100 KB"
    print(f"wrote {len(files)} seed files, {total} bytes, under {CORPUS}")


if __name__ == "__main__":
    main()
