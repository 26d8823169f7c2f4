"""The tokenizer: BPE by rank on a toy vocabulary, then the real Gemma 3 tokenizer against HF transformers,
round trips on arbitrary text, and streaming decoding.

Hand-checkable ids of the real tokenizer (<bos> is 2):
    "Hello world"   -> [2, 9259, 1902]               <bos> "Hello" "▁world"
    "Hello  world"  -> [2, 9259, 138, 12392]         <bos> "Hello" "▁▁" "world"
    "a\\n\\n\\nb"   -> [2, 236746, 109, 236763]      <bos> "a" "\\n\\n\\n" "b"
    "퓛"            -> [2, 475, 385, 393]            <bos> <0xED> <0x93> <0x9B>  (byte id = 238 + byte)
"""

import doctest
import functools
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import tinyspec.tokenizer
from tinyspec.tokenizer import (
    BYTE,
    CONTROL,
    NORMAL,
    USER_DEFINED,
    Tokenizer,
    build_tokenizer,
    check_merge_order,
    derive_merges,
)

REFERENCE = Path(__file__).parent / "fixtures" / "gemma3_reference.json"
FIRST_BYTE_ID = 238  # Gemma 3's <0x00>; <0xNN> is 238 + NN
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Hypothesis' st.text() never yields lone surrogates (U+D800..U+DFFF): they are not characters and
# cannot be encoded as UTF-8, so no tokenizer can see them. Every other code point is fair game.


# 1. BPE by rank, on a toy vocabulary we can check by hand (no GGUF needed)

def toy_vocabulary():
    """A tiny vocabulary laid out like Gemma's: control, user-defined, 256 bytes, normal pieces in merge order.

    ids: 0 <pad>  1 <eos>  2 <bos>  3 <unk>  4 <start_of_turn>  5 "\\n"  6 "\\n\\n"  7 "  "  8 "<b>"
         9..264 <0x00>..<0xFF>  265 "▁"  266 "t"  267 "h"  268 "e"  269 "a"  270 "he"  271 "th"  272 "▁t"  273 "▁the"
    """
    pieces = [("<pad>", CONTROL), ("<eos>", CONTROL), ("<bos>", CONTROL), ("<unk>", CONTROL),
              ("<start_of_turn>", CONTROL), ("\n", USER_DEFINED), ("\n\n", USER_DEFINED), ("  ", USER_DEFINED),
              ("<b>", USER_DEFINED)]
    pieces += [(f"<0x{b:02X}>", BYTE) for b in range(256)]
    pieces += [(p, NORMAL) for p in ["▁", "t", "h", "e", "a", "he", "th", "▁t", "▁the"]]
    tokens = [p for p, _ in pieces]
    types = [t for _, t in pieces]
    scores = [-1000.0 if t in (CONTROL, USER_DEFINED) else 0.0 if t == BYTE else -float(i) for i, t in enumerate(types)]
    return tokens, scores, types


@pytest.fixture(scope="module")
def toy():
    tokens, scores, types = toy_vocabulary()
    return Tokenizer(build_tokenizer(tokens, scores, types))


def test_derive_merges_ranks_by_the_piece_made():
    # "ab" is learned first, then "abc" (two ways to make it: longer left part first), then "bc".
    assert derive_merges(["a", "b", "c", "ab", "abc", "bc"], [True] * 6) == [
        ("a", "b"), ("ab", "c"), ("a", "bc"), ("b", "c")]
    assert derive_merges(["a", "b", "ab"], [True, True, False]) == []


@pytest.mark.parametrize("text, ids", [
    (" the", [2, 273]),            # ▁ t h e -> "he" ranks best -> ▁ t he -> "▁t" -> ▁t he -> "▁the"
    ("the", [2, 266, 270]),        # t h e -> "he" (270) beats "th" (271) -> t he; "the" is no piece
    ("a  the", [2, 269, 7, 266, 270]),  # the space run "▁▁" (id 7) ranks above every normal piece
    ("Hi", [2, 9 + 0x48, 9 + 0x69]),    # "H", "i" are no pieces: byte fallback
    ("<start_of_turn>the\n\n\n<b>", [2, 4, 266, 270, 6, 5, 8]),  # added tokens matched whole, longest first
])
def test_toy_encode(toy, text, ids):
    assert toy.encode(text) == ids
    assert toy.encode(text, add_bos=False) == ids[1:]
    assert toy.decode(ids[1:], skip_special=False) == text


def test_toy_decode_and_token_text(toy):
    assert toy.decode([2, 273, 1]) == " the"
    assert toy.decode([2, 273, 1], skip_special=False) == "<bos> the<eos>"
    assert [toy.token_text(i) for i in [2, 273, 6, 7, 9 + 0xE2]] == ["<bos>", " the", "\\n\\n", "  ", "<0xE2>"]
    assert (toy.vocab_size, toy.bos_id, toy.eos_id) == (274, 2, 1)


def test_docstring_examples():
    assert doctest.testmod(tinyspec.tokenizer).failed == 0


def test_save_and_load_give_the_same_tokenizer(tmp_path):
    tokens, scores, types = toy_vocabulary()
    built = build_tokenizer(tokens, scores, types)
    built.save(str(tmp_path / "tokenizer.json"))
    loaded = Tokenizer.from_file(tmp_path / "tokenizer.json")
    for text in [" the", "the", "a  the", "Hi", "<start_of_turn>the\n\n\n<b>", "€ ▁x"]:
        assert loaded.encode(text) == Tokenizer(built).encode(text)


def test_missing_tokenizer_file_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere[/\\]tokenizer.json.*tinyspec convert"):
        Tokenizer.from_file(tmp_path / "nowhere" / "tokenizer.json")


def test_scores_out_of_merge_order_are_rejected():
    tokens, scores, types = toy_vocabulary()
    scores[-1], scores[-2] = scores[-2], scores[-1]
    with pytest.raises(ValueError, match="do not decrease"):
        check_merge_order(scores, types)


# 2. The real Gemma 3 tokenizer

@pytest.mark.real
def test_hand_checked_ids(gemma_tokenizer):
    tok = gemma_tokenizer
    assert (tok.vocab_size, tok.bos_id, tok.eos_id) == (262144, 2, 1)
    assert tok.encode("Hello world") == [2, 9259, 1902]
    assert tok.encode("Hello world", add_bos=False) == [9259, 1902]
    assert tok.encode("Hello  world") == [2, 9259, 138, 12392]
    assert tok.encode("a\n\n\nb") == [2, 236746, 109, 236763]
    assert tok.encode(" " * 32 + "b") == [2, 152, 152, 236763]  # BPE pairs 32 spaces up as 16 + 16 (as HF does)
    assert tok.encode("\n" * 32 + "b") == [2, 137, 107, 236763]  # newline runs are added tokens: 31 + 1
    assert tok.encode("퓛") == [2, FIRST_BYTE_ID + 0xED, FIRST_BYTE_ID + 0x93, FIRST_BYTE_ID + 0x9B]
    assert tok.encode("<eos>x") == [2, 1, 236781]  # literal control-token text is the control token, as in HF
    assert tok.decode([2, 9259, 1902, 1]) == "Hello world"
    assert tok.decode([2, 9259, 1902, 1], skip_special=False) == "<bos>Hello world<eos>"
    assert [tok.token_text(i) for i in [2, 9259, 1902, 138, 109, FIRST_BYTE_ID + 0xE2]] == [
        "<bos>", "Hello", " world", "  ", "\\n\\n\\n", "<0xE2>"]


@pytest.mark.real
def test_matches_hf_transformers_reference(gemma_tokenizer):
    """Every text of tests/fixtures/gemma3_reference.json (made by tools/make_reference.py from HF
    transformers reading the same GGUF) encodes to the same ids, <bos> included."""
    if not REFERENCE.exists():
        pytest.skip(f"{REFERENCE} not found: it is made by tools/make_reference.py")
    entries = json.loads(REFERENCE.read_text(encoding="utf-8"))["tokenization"]
    assert entries, "the reference has no tokenization entries"
    wrong_ids = [e["text"] for e in entries if gemma_tokenizer.encode(e["text"]) != e["ids"]]
    assert not wrong_ids, f"{len(wrong_ids)} of {len(entries)} texts encode differently, e.g. {wrong_ids[0]!r}"
    wrong_text = [e["text"] for e in entries if "decoded" in e and gemma_tokenizer.decode(e["ids"]) != e["decoded"]]
    assert not wrong_text, f"{len(wrong_text)} of {len(entries)} decode differently, e.g. {wrong_text[0]!r}"


@functools.cache
def control_texts(tok):
    return [tok.backend.id_to_token(i) for i in tok.special_ids]


def has_control_text(tok, text):
    """Whether `text` contains the text of a control token such as "<eos>" (they all start with "<")."""
    return "<" in text and any(control in text for control in control_texts(tok))


def sentencepiece_view(text):
    """The text as the tokenizer sees it: "▁" and " " are the same piece, so "▁" comes back as " "."""
    return text.replace("\u2581", " ")


# Text that exercises the special cases: space/newline/tab runs (longer than the longest run piece),
# "▁", literal added-token text, byte-fallback characters, combining marks, emoji with joiners.
FRAGMENTS = [" ", "  ", " " * 40, "\n", "\n" * 33, "\t", "\t\t\t", "\r\n", "\u3000", "\xa0", "\u2581", "▁▁ ",
             "<b>", "<eos>", "<bos>", "<start_of_turn>", "[multimodal]", "<0x41>", "<", ">", "퓛", "𠀀", "é", "e\u0301",
             "👩\u200d👩\u200d👧", "def f(x):\n    return x", "the", " the", "日本語", "Привет", "\x00", "\ufffd"]
tricky_text = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=4), max_size=12).map("".join)


@pytest.mark.real
@settings(max_examples=200, **SETTINGS)
@given(text=st.text())
def test_roundtrip_arbitrary_text(gemma_tokenizer, text):
    tok = gemma_tokenizer
    ids = tok.encode(text, add_bos=False)
    # Every id comes back, control tokens included, when nothing is skipped; only "▁" turns into " ".
    assert tok.decode(ids, skip_special=False) == sentencepiece_view(text)
    # Skipping control tokens also drops literal control-token text such as "<eos>" from the input.
    assume(not has_control_text(tok, text))
    assert tok.decode(tok.encode(text)) == sentencepiece_view(text)


@pytest.mark.real
@settings(max_examples=200, **SETTINGS)
@given(text=tricky_text)
def test_roundtrip_tricky_text(gemma_tokenizer, text):
    tok = gemma_tokenizer
    ids = tok.encode(text)
    assert ids[0] == tok.bos_id and ids[1:] == tok.encode(text, add_bos=False)
    assert tok.decode(ids[1:], skip_special=False) == sentencepiece_view(text)
    if not has_control_text(tok, text):
        assert tok.decode(ids) == sentencepiece_view(text)
        assert tok.decode(ids) == tok.backend.decode(ids)  # our byte-level decode agrees with tokenizers' decoder


# 3. Streaming

def stream_pieces(tok, ids, skip_special=True):
    stream = tok.stream(skip_special=skip_special)
    return [stream.push(i) for i in ids] + [stream.flush()]


@pytest.mark.real
def test_stream_holds_partial_characters(gemma_tokenizer):
    ids = gemma_tokenizer.encode("€퓛 x", add_bos=True)  # "€" is a piece; "퓛" is three byte tokens
    assert stream_pieces(gemma_tokenizer, ids) == ["", "€", "", "", "퓛", " x", ""]
    # A character cut short shows as U+FFFD, but only once the stream ends:
    assert stream_pieces(gemma_tokenizer, ids[:4]) == ["", "€", "", "", "\ufffd"]


@pytest.mark.real
@settings(max_examples=100, **SETTINGS)
@given(text=st.text() | tricky_text)
def test_stream_equals_decode(gemma_tokenizer, text):
    tok = gemma_tokenizer
    ids = tok.encode(text)
    pieces = stream_pieces(tok, ids)
    assert "".join(pieces) == tok.decode(ids)
    if "\ufffd" not in text:
        assert not any("\ufffd" in piece for piece in pieces)


@pytest.mark.real
@settings(max_examples=100, **SETTINGS)
@given(ids=st.lists(st.integers(0, 262143) | st.integers(0, 600), max_size=40), skip_special=st.booleans())
def test_stream_equals_decode_for_any_ids(gemma_tokenizer, ids, skip_special):
    # Arbitrary ids: control tokens and byte tokens (238..493) that need not form valid UTF-8.
    pieces = stream_pieces(gemma_tokenizer, ids, skip_special)
    assert "".join(pieces) == gemma_tokenizer.decode(ids, skip_special)
