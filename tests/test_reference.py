"""tinyspec against an independent implementation: Hugging Face transformers reading the same GGUF on CPU
torch in float32 (fixtures made by tools/make_reference.py; versions recorded in the fixture)."""

import numpy as np
import pytest

from tinyspec.config import GEMMA3_270M
from tinyspec.decoding import generate_ids

pytestmark = pytest.mark.real


def test_config_agrees_with_transformers(reference, gemma_weights):
    hf, cfg = reference["hf_config"], gemma_weights[0]
    assert cfg == GEMMA3_270M
    assert (cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size) == (
        hf["vocab_size"], hf["hidden_size"], hf["intermediate_size"])
    assert (cfg.num_layers, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim) == (
        hf["num_hidden_layers"], hf["num_attention_heads"], hf["num_key_value_heads"], hf["head_dim"])
    assert cfg.sliding_window == hf["sliding_window"]
    assert [i for i in range(cfg.num_layers) if cfg.is_global(i)] == hf["full_attention_layers"]
    assert (cfg.rope_theta_global, cfg.rope_theta_local) == (hf["rope_theta_global"], hf["rope_theta_local"])
    assert cfg.query_scale == hf["attention_scaling_used"]
    assert np.float32(np.sqrt(cfg.hidden_size)) == np.float32(hf["embed_scale_used"])
    assert abs(cfg.rms_norm_eps - hf["rms_norm_eps"]) < 1e-12
    assert hf["hidden_activation"] == "gelu_pytorch_tanh" and hf["final_logit_softcapping"] is None
    assert (cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id) == (
        hf["bos_token_id"], hf["eos_token_id"], hf["pad_token_id"])


def logits_at(model, ids, positions):
    cache = model.new_cache(len(ids))
    h = model.hidden(ids, cache)  # [T, d]
    return model.head(h[positions])  # [len(positions), V]


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_logits_match_transformers(backend, reference, gemma, gemma_numpy):
    model = gemma if backend == "numba" else gemma_numpy
    checked = 0
    for case in reference["logits"]:
        positions = [p["position"] for p in case["positions"]]
        logits = logits_at(model, case["ids"], positions)
        for row, ref in zip(logits, case["positions"]):
            top_ids, top_logits = np.array(ref["top_ids"]), np.array(ref["top_logits"])
            np.testing.assert_allclose(row[top_ids], top_logits, atol=1e-3, rtol=0,
                                       err_msg=f"{case['name']} position {ref['position']}")
            ours = np.argsort(-row.astype(np.float64), kind="stable")[:10]
            assert list(ours) == list(top_ids[:10]), f"{case['name']} position {ref['position']}: top-10 order"
            checked += 1
    assert checked >= 20
    long_case = max(reference["logits"], key=lambda c: len(c["ids"]))
    assert len(long_case["ids"]) > 1500
    assert {p["position"] for p in long_case["positions"]} & set(range(0, 512))
    assert {p["position"] for p in long_case["positions"]} & set(range(513, 1600))


def test_greedy_continuations_match_transformers(reference, gemma):
    for case in reference["greedy"]:
        ours = generate_ids(gemma, case["input_ids"], len(case["new_ids"]), stop_at_eos=False)
        assert ours == case["new_ids"], case["name"]
