"""The Gemma 3 tokenizer: text <-> token ids, rebuilt from the GGUF vocabulary.

Gemma 3 uses a SentencePiece BPE tokenizer with 262144 pieces. Four ideas are enough to read it:

1. Spaces are "▁" (U+2581). SentencePiece treats text as one long string, with no special meaning
   for spaces, and writes each space as the visible character "▁" so a piece like "▁the" carries its
   leading space. Gemma adds no space in front of the text ("add_space_prefix" is false), so
   "Hello world" is the pieces "Hello" and "▁world".

2. BPE by rank. Start from single characters and, again and again, join the adjacent pair whose
   concatenation is the best-ranked piece of the vocabulary, until no adjacent pair forms a piece.
   SentencePiece stores the pieces in the order it learned them, with scores falling by one from
   piece to piece, so "best-ranked" means "earliest in the vocabulary". The file has no merge list,
   so `derive_merges` writes one out for HF's `tokenizers` BPE: every way to cut a piece into two
   pieces, ranked by the piece they make.

3. Byte fallback. A character that is not a piece (a rare CJK character, say) is spelled as its
   UTF-8 bytes, using the 256 byte pieces "<0x00>" .. "<0xFF>": "퓛" -> <0xED> <0x93> <0x9B>. So
   every string can be encoded, and there is no need for an unknown token. The price: one token may
   hold a third of a character, which matters when printing tokens one at a time (`StreamDecoder`).

4. Special pieces are matched whole before BPE runs. Control pieces ("<bos>", "<eos>",
   "<start_of_turn>", "<unused0>", ...) are special: `decode` drops them unless asked not to.
   User-defined pieces (runs of newlines or tabs, a few HTML tags such as "<b>", "[multimodal]")
   are ordinary text that is always kept in one piece (runs of spaces are left to BPE, see
   `is_added_token`). A literal "<eos>" typed in the input text
   becomes the control token, as in HF transformers (llama.cpp treats it as text by default).

The GGUF file stores the vocabulary as three parallel lists (piece strings, scores, llama.cpp token
types) and no merges. `build_tokenizer` turns them into a `tokenizers.Tokenizer` that reproduces
HF transformers' tokenizer for the same file id for id; `tinyspec convert` saves it as
tokenizer.json, and the `Tokenizer` class here is a small layer over it:

    >>> tok = Tokenizer.from_file("weights/gemma-3-270m/tokenizer.json")   # doctest: +SKIP
    >>> tok.encode("Hello world")                                             # doctest: +SKIP
    [2, 9259, 1902]
    >>> [tok.token_text(i) for i in [2, 9259, 1902]]                          # doctest: +SKIP
    ['<bos>', 'Hello', ' world']
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path

import tokenizers
from tokenizers import AddedToken, decoders, normalizers, processors
from tokenizers.models import BPE

SPACE = "\u2581"  # "▁", SentencePiece's visible space

# llama.cpp's token types (gguf.TokenType), as stored in tokenizer.ggml.token_type.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

BYTE_PIECE = re.compile(r"<0x([0-9A-F]{2})>")  # the byte-fallback pieces "<0x00>" .. "<0xFF>"


# 1. From the GGUF vocabulary to a `tokenizers.Tokenizer`


def sentencepiece_spelling(piece: str) -> str:
    """The piece as SentencePiece spells it: spaces written as "▁".

    The GGUF stores the 30 pieces made only of spaces ("  " .. 31 spaces) with real spaces; every
    other piece already uses "▁".

    >>> sentencepiece_spelling("   ")
    '▁▁▁'
    >>> sentencepiece_spelling("▁the")
    '▁the'
    """
    return piece.replace(" ", SPACE)


def is_added_token(piece: str, token_type: int) -> bool:
    """Whether the piece is matched whole in the raw text instead of being built by BPE.

    Control pieces always are. User-defined pieces are too, except the runs of 2..31 spaces: like HF
    transformers, we keep those as ordinary pieces ("▁▁", ...) that BPE builds before any other, as
    they sit at ids 138..167. A run of up to 31 spaces becomes one piece either way; longer runs show
    the choice: BPE pairs 32 spaces up into two pieces of 16, where matching runs whole, longest
    first (as llama.cpp does with user-defined pieces), would take 31 and leave one.
    """
    return token_type == CONTROL or (token_type == USER_DEFINED and " " not in piece)


def check_merge_order(scores: list[float], token_types: list[int]) -> None:
    """Check that the normal pieces' scores fall with their position in the vocabulary.

    `derive_merges` ranks pieces by position. That is the SentencePiece BPE order exactly when the
    scores of the pieces BPE builds are decreasing (the other pieces carry placeholder scores: -1000
    for control and user-defined pieces, 0 for bytes). A file where this fails needs another builder.
    """
    normal = [score for score, token_type in zip(scores, token_types) if token_type == NORMAL]
    for position, (score, next_score) in enumerate(zip(normal, normal[1:])):
        if next_score >= score:
            raise ValueError(
                f"normal piece scores do not decrease with vocabulary position (normal piece {position + 1} "
                f"has score {next_score} after {score}): this vocabulary's merge order is not its piece "
                "order, which build_tokenizer assumes"
            )


def derive_merges(pieces: list[str], mergeable: list[bool]) -> list[tuple[str, str]]:
    """The BPE merge list implied by a vocabulary in merge order, best merge first.

    Every cut of a mergeable piece into two pieces of the vocabulary is a merge, ranked by the piece
    it makes (its position in `pieces`). Within one piece, longer left parts come first, as in HF
    transformers. Small example ("ab" is learned first, then "abc", then "bc"):

    >>> derive_merges(["a", "b", "c", "ab", "abc", "bc"], [True] * 6)
    [('a', 'b'), ('ab', 'c'), ('a', 'bc'), ('b', 'c')]

    With these, "abc" encodes as "abc" (a+b first, then ab+c) and "bc" as "bc".
    """
    known = set(pieces)
    merges = []
    for piece, can_merge in zip(pieces, mergeable):
        if not can_merge:
            continue
        for cut in range(len(piece) - 1, 0, -1):
            left, right = piece[:cut], piece[cut:]
            if left in known and right in known:
                merges.append((left, right))
    return merges


def build_tokenizer(
    tokens: list[str],
    scores: list[float],
    token_types: list[int],
    *,
    bos_id: int = 2,
    eos_id: int = 1,
    unk_id: int = 3,
    pad_id: int = 0,
) -> tokenizers.Tokenizer:
    """Gemma 3's tokenizer from the three GGUF vocabulary lists, as a `tokenizers.Tokenizer`.

    tokens: the piece strings (tokenizer.ggml.tokens), scores: their SentencePiece scores,
    token_types: llama.cpp token types (1 normal, 3 control, 4 user-defined, 6 byte).
    The pipeline `tokenizers` runs for `encode("Hello  world")`:

      added tokens  split off control / user-defined pieces in the raw text  (none here)
      normalizer    " " -> "▁"                                  "Hello▁▁world"
      BPE model     merges by rank, bytes for unknown chars     "Hello" "▁▁" "world"
      post-process  prepend <bos>                               [2, 9259, 138, 12392]

    Its decoder ("▁" -> " ", runs of byte pieces -> UTF-8 text) serves whoever loads tokenizer.json
    elsewhere; `Tokenizer.decode` joins token bytes instead, which gives the same text whenever the
    bytes are valid UTF-8 (see StreamDecoder for why). pad_id is only checked: tinyspec never pads.
    """
    if not len(tokens) == len(scores) == len(token_types):
        raise ValueError(f"vocabulary lists differ in length: {len(tokens)} tokens, {len(scores)} scores, "
                         f"{len(token_types)} token types")
    for name, token_id in [("bos", bos_id), ("eos", eos_id), ("unk", unk_id), ("pad", pad_id)]:
        if token_types[token_id] not in (CONTROL, UNKNOWN):  # a cheap check that the ids fit this vocabulary
            raise ValueError(f"{name} id {token_id} is {tokens[token_id]!r}, which is not a control token")
    check_merge_order(scores, token_types)

    pieces = [sentencepiece_spelling(piece) for piece in tokens]
    added = [is_added_token(piece, token_type) for piece, token_type in zip(tokens, token_types)]
    mergeable = [not is_added and token_type != BYTE for is_added, token_type in zip(added, token_types)]

    model = BPE(
        vocab={piece: i for i, piece in enumerate(pieces)},
        merges=derive_merges(pieces, mergeable),
        unk_token=pieces[unk_id],
        fuse_unk=True,
        byte_fallback=True,  # a character that is no piece becomes its byte pieces <0x..>
    )
    tokenizer = tokenizers.Tokenizer(model)
    tokenizer.normalizer = normalizers.Replace(" ", SPACE)
    tokenizer.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()])

    # Added tokens are matched in the raw text, longest first, before normalization and BPE.
    tokenizer.add_special_tokens([
        AddedToken(tokens[i], special=True, normalized=False)
        for i in range(len(tokens)) if added[i] and token_types[i] == CONTROL
    ])
    tokenizer.add_tokens([
        AddedToken(tokens[i], special=False, normalized=False)
        for i in range(len(tokens)) if added[i] and token_types[i] == USER_DEFINED
    ])

    bos = pieces[bos_id]
    tokenizer.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, bos_id)])
    return tokenizer


def read_gguf_vocabulary(path: str | Path) -> dict:
    """The tokenizer metadata of a GGUF file: tokens, scores, token_types and the special ids.

    Slow (about 30 s for Gemma 3: `gguf.GGUFReader` makes numpy views of every one of the 262144
    strings), which is why `tinyspec convert` does it once and saves tokenizer.json.
    """
    import gguf  # only needed for this one-time conversion

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {path}")
    reader = gguf.GGUFReader(path)

    def field(name, default=None):
        value = reader.get_field(f"tokenizer.ggml.{name}")
        if value is None:
            if default is None:
                raise ValueError(f"{path} has no tokenizer.ggml.{name}: not a tokenizer this builder knows")
            return default
        return value.contents()

    if field("model") != "llama":
        raise ValueError(f"{path}: tokenizer.ggml.model is {field('model')!r}; only 'llama' (SentencePiece) is supported")
    if field("add_space_prefix", False):
        raise ValueError(f"{path} asks for a space prefix; build_tokenizer implements Gemma's (none)")
    return {
        "tokens": field("tokens"),
        "scores": field("scores"),
        "token_types": field("token_type"),
        "bos_id": field("bos_token_id"),
        "eos_id": field("eos_token_id"),
        "unk_id": field("unknown_token_id"),
        "pad_id": field("padding_token_id"),
    }


# 2. The tokenizer tinyspec uses


class Tokenizer:
    """Encode text to Gemma 3 token ids and back; a thin layer over a `tokenizers.Tokenizer`.

    >>> tok = Tokenizer.from_file("weights/gemma-3-270m/tokenizer.json")   # doctest: +SKIP
    >>> tok.encode("Hello world"), tok.encode("Hello world", add_bos=False)  # doctest: +SKIP
    ([2, 9259, 1902], [9259, 1902])
    >>> tok.decode([2, 9259, 1902]), tok.decode([2, 9259, 1902], skip_special=False)  # doctest: +SKIP
    ('Hello world', '<bos>Hello world')
    """

    def __init__(self, backend: tokenizers.Tokenizer, *, bos_id: int | None = None, eos_id: int | None = None):
        self.backend = backend
        self.bos_id = self._special_id("<bos>") if bos_id is None else bos_id
        self.eos_id = self._special_id("<eos>") if eos_id is None else eos_id
        self.vocab_size = backend.get_vocab_size(with_added_tokens=True)
        self.special_ids = frozenset(i for i, t in backend.get_added_tokens_decoder().items() if t.special)
        self._bytes = None  # token id -> bytes, built on first use by token_bytes

    @classmethod
    def from_file(cls, path: str | Path) -> Tokenizer:
        """Load a tokenizer.json written by `build_tokenizer(...).save(path)` (`tinyspec convert` does it)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer not found at {path}: run `tinyspec convert` to write it")
        return cls(tokenizers.Tokenizer.from_file(str(path)))

    @classmethod
    def from_gguf(cls, path: str | Path) -> Tokenizer:
        """Build the tokenizer straight from a GGUF file (slow: about 30 s, see read_gguf_vocabulary)."""
        vocabulary = read_gguf_vocabulary(path)
        return cls(build_tokenizer(**vocabulary), bos_id=vocabulary["bos_id"], eos_id=vocabulary["eos_id"])

    def _special_id(self, piece: str) -> int:
        token_id = self.backend.token_to_id(piece)
        if token_id is None:
            raise ValueError(f"this vocabulary has no {piece!r} token: pass its id to Tokenizer(...)")
        return token_id

    # Text -> ids

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        """Token ids of `text`, with <bos> (id 2) in front unless add_bos=False.

        "Hello world" -> [2, 9259, 1902] ("<bos>", "Hello", "▁world").
        """
        return self.backend.encode(text, add_special_tokens=add_bos).ids

    # Ids -> text

    def token_bytes(self, token_id: int) -> bytes:
        """The UTF-8 bytes one token stands for: "▁world" -> b" world", "<0xE2>" -> b"\\xe2",
        "<eos>" -> b"<eos>". The text of a list of ids is these bytes joined, decoded as UTF-8."""
        if not 0 <= token_id < self.vocab_size:
            raise IndexError(f"token id {token_id} is outside the vocabulary (size {self.vocab_size})")
        if self._bytes is None:
            self._bytes = [self._piece_bytes(self.backend.id_to_token(i)) for i in range(self.vocab_size)]
        return self._bytes[token_id]

    @staticmethod
    def _piece_bytes(piece: str) -> bytes:
        byte = BYTE_PIECE.fullmatch(piece)
        if byte:
            return bytes([int(byte.group(1), 16)])
        return piece.replace(SPACE, " ").encode("utf-8")

    def decode(self, ids: list[int], skip_special: bool = True) -> str:
        """The text of `ids`; control tokens such as <bos> are left out unless skip_special=False.

        [2, 9259, 1902] -> "Hello world". The text is the tokens' bytes joined and decoded as UTF-8;
        bytes that form no character become U+FFFD, as in bytes.decode(errors="replace").

        For valid UTF-8 this is what the tokenizer.json decoder gives. It differs on broken byte
        runs: `tokenizers`' ByteFallback decodes a whole run of byte tokens at once and turns all of
        it into U+FFFD if any part is invalid (<0xC3> <0xA9> <0xE2> -> "\ufffd\ufffd\ufffd", here
        "é\ufffd"). Then whether "é" is printed would depend on tokens not generated yet; decoding
        bytes makes every complete character final, which StreamDecoder relies on.
        """
        data = b"".join(self.token_bytes(i) for i in ids if not (skip_special and i in self.special_ids))
        return data.decode("utf-8", errors="replace")

    def token_text(self, token_id: int) -> str:
        """One token, readable in a table: "▁the" -> " the", "\\n\\n" -> "\\\\n\\\\n", byte tokens as "<0xE2>".

        Spaces show as spaces; newlines, tabs, other invisible characters and backslashes are escaped
        the way repr() escapes them, so every token shows on one line and distinct tokens look distinct.
        """
        piece = self.backend.id_to_token(token_id)
        if piece is None:
            raise IndexError(f"token id {token_id} is outside the vocabulary (size {self.vocab_size})")
        if BYTE_PIECE.fullmatch(piece):
            return piece
        return "".join(_escape_char(char) for char in piece.replace(SPACE, " "))

    def stream(self, skip_special: bool = True) -> StreamDecoder:
        """A decoder for printing tokens as they are generated, see StreamDecoder."""
        return StreamDecoder(self, skip_special=skip_special)


def _escape_char(char: str) -> str:
    if char == " " or (char.isprintable() and char != "\\"):
        return char
    return repr(char)[1:-1]


class StreamDecoder:
    """Turns token ids, pushed one at a time, into text, never printing half a character.

    A byte-fallback token can be a part of a UTF-8 character ("€" is <0xE2> <0x82> <0xAC>).
    `push` returns only the text completed so far and keeps the unfinished bytes; `flush` returns
    what is left at the end (U+FFFD for bytes that never formed a character). Joining every push and
    the flush gives exactly `tokenizer.decode(ids)`, because both decode the same byte string and
    Python's incremental UTF-8 decoder agrees with the one-shot one.

    >>> tok.encode("퓛!")                                                   # doctest: +SKIP
    [2, 475, 385, 393, 236888]
    >>> stream = tok.stream()                                              # doctest: +SKIP
    >>> [stream.push(i) for i in [2, 475, 385, 393, 236888]] + [stream.flush()]  # doctest: +SKIP
    ['', '', '', '퓛', '!', '']
    """

    def __init__(self, tokenizer: Tokenizer, skip_special: bool = True):
        self.tokenizer = tokenizer
        self.skip_special = skip_special
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        """Add one token; return the newly completed text (often "", never a partial character)."""
        if self.skip_special and token_id in self.tokenizer.special_ids:
            return ""
        return self._utf8.decode(self.tokenizer.token_bytes(token_id))

    def flush(self) -> str:
        """End of the stream: return the held-back bytes (invalid leftovers become U+FFFD) and reset."""
        return self._utf8.decode(b"", final=True)
