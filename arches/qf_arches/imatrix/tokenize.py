"""Tokenization from a GGUF file's own tokenizer metadata, as llama.cpp tokenizes a calibration text.

``tokenizer.ggml.model = "gpt2"`` (byte-level BPE, what most current models use) is rebuilt with HF ``tokenizers``
from ``tokenizer.ggml.tokens`` / ``merges`` and the pre-tokenizer regexes llama.cpp applies for the file's
``tokenizer.ggml.pre`` (``llama-vocab.cpp``: several expressions applied one after another, each splitting the pieces
the previous one left).  llama-imatrix calls ``common_tokenize(text, add_special=true, parse_special=false)``: BOS
only if the vocabulary adds one, special tokens in the text are plain text.  Other tokenizer models (SentencePiece
``llama``, ...) are not rebuilt: tokenize with llama.cpp and pass the ids with ``--tokens``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from qf.errors import UsageError

# \p{N} split first, then the GPT-2 expression (llama.cpp: STARCODER, REFACT, COMMAND_R, SMOLLM, CODESHELL, ...)
_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_LLAMA3 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
           r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
          r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_DEEPSEEK3 = (r"[!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+"
              r"| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


@attrs.frozen
class PreTokenizer:
    """llama.cpp's pre-tokenization for a ``tokenizer.ggml.pre`` value."""

    regexes: tuple[str, ...]
    ignore_merges: bool = False  # a whole word found in the vocabulary is taken as it is
    add_bos: bool = False  # llama.cpp's default when the file has no tokenizer.ggml.add_bos_token


_DEFAULT = PreTokenizer((r"[\p{P}\$\+<=>\^~\|]+", _GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"))
_PRE_TOKENIZERS: dict[str, PreTokenizer] = {
    "default": _DEFAULT,
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2"),
                    PreTokenizer((_LLAMA3,), ignore_merges=True, add_bos=True)),
    **dict.fromkeys(("dbrx", "smaug-bpe"), PreTokenizer((_LLAMA3,))),
    **dict.fromkeys(("starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b", "mellum2"),
                    PreTokenizer((r"\p{N}", _GPT2))),
    **dict.fromkeys(("gpt-2", "phi-2", "mpt", "olmo", "jais", "trillion", "granite-docling", "exaone4"),
                    PreTokenizer((_GPT2,))),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen", "megrez", "stablelm2", "hunyuan", "solar-open"),
                    PreTokenizer((_QWEN2,))),
    "chatglm-bpe": PreTokenizer((_LLAMA3,)),
    **dict.fromkeys(("glm4", "glm5"), PreTokenizer((_LLAMA3,), ignore_merges=True)),
    "deepseek-v3": PreTokenizer((r"\p{N}{1,3}", r"[一-龥぀-ゟ゠-ヿ]+", _DEEPSEEK3)),
}


@attrs.define(eq=False)
class GGUFTokenizer:
    """A byte-level BPE tokenizer rebuilt from GGUF metadata."""

    pre: str
    add_bos: bool
    bos_id: int | None
    backend: Any = attrs.field(repr=False)

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> GGUFTokenizer:
        model = metadata.get("tokenizer.ggml.model")
        if model != "gpt2":
            raise UsageError(
                f"tokenizer model {model!r} is not supported by qf's tokenizer (only byte-level BPE 'gpt2'); tokenize"
                " the text with llama.cpp and pass the token ids with --tokens"
            )
        pre_name = metadata.get("tokenizer.ggml.pre") or "default"
        pre = _PRE_TOKENIZERS.get(pre_name)
        if pre is None:
            raise UsageError(
                f"pre-tokenizer {pre_name!r} is not supported by qf's tokenizer (supported: "
                f"{', '.join(sorted(_PRE_TOKENIZERS))}); pass the token ids with --tokens"
            )
        if metadata.get("tokenizer.ggml.add_eos_token"):
            raise UsageError("this vocabulary appends EOS to every text; llama-imatrix refuses such models too")
        tokens = metadata.get("tokenizer.ggml.tokens")
        merges = metadata.get("tokenizer.ggml.merges")
        if tokens is None or merges is None:
            raise UsageError("the model has no tokenizer.ggml.tokens/merges; pass the token ids with --tokens")
        add_bos = bool(metadata.get("tokenizer.ggml.add_bos_token", pre.add_bos))
        bos_id = metadata.get("tokenizer.ggml.bos_token_id")
        if add_bos and bos_id is None:
            raise UsageError("the vocabulary adds BOS but has no tokenizer.ggml.bos_token_id")
        token_types = metadata.get("tokenizer.ggml.token_type")
        return cls(pre_name, add_bos, None if bos_id is None else int(bos_id),
                   _build_backend(tokens, merges, token_types, pre))

    def encode(self, text: str, at_least: int | None = None) -> np.ndarray:
        """Token ids of ``text``; with ``at_least``, possibly only a prefix of them, of that many tokens or more
        (the same ids the whole text starts with): a run that needs a few chunks of a large text tokenizes little."""
        if at_least is not None:
            prefix = self._prefix(text, at_least)
            if prefix is not None:
                return prefix
        ids = self.backend.encode(text, add_special_tokens=False).ids
        if self.add_bos:
            ids = [self.bos_id, *ids]
        return np.asarray(ids, dtype=np.int32)

    def _prefix(self, text: str, at_least: int) -> np.ndarray | None:
        # Tokens never cross a pre-token boundary, and a pre-token is decided by the text up to its end plus one
        # character of look-ahead: so the tokens of text[:cut], where cut ends a pre-token of text[:n] well before
        # n, are the first tokens of the whole text.  (Added tokens are matched before pre-tokenizing: with any, we
        # tokenize everything.)
        if self.backend.get_added_tokens_decoder():
            return None
        n = max(1 << 16, 8 * at_least)
        while n < len(text):
            pieces = self.backend.pre_tokenizer.pre_tokenize_str(text[:n])
            ends = [end for _, (_, end) in pieces if end <= n - 64]
            if ends:
                ids = self.encode(text[:ends[-1]])
                if ids.size >= at_least:
                    return ids
            n *= 2
        return None


def _build_backend(tokens: list[str], merges: list[str], token_types, pre: PreTokenizer):
    from tokenizers import AddedToken, Regex, Tokenizer, models, pre_tokenizers

    vocab = {tok: i for i, tok in enumerate(tokens)}
    pairs = []
    for merge in merges:
        pos = merge.find(" ", 1)  # llama.cpp splits at the first space after the first character
        if pos > 0:
            pairs.append((merge[:pos], merge[pos + 1:]))
    bpe = models.BPE(vocab=vocab, merges=pairs, ignore_merges=pre.ignore_merges)
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in pre.regexes]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    # llama.cpp always matches user-defined tokens (type 4) in the text, even without parse_special
    if token_types is not None:
        user = [tokens[i] for i in np.flatnonzero(np.asarray(token_types) == 4)]
        if user:
            tok.add_tokens([AddedToken(t, normalized=False) for t in user])
    return tok


def chunk_bos(metadata: Mapping[str, Any]) -> int | None:
    """The BOS id llama-imatrix puts first in every chunk, or None when the vocabulary adds no BOS."""
    model = metadata.get("tokenizer.ggml.model")
    default = model in ("llama", "bert") or (
        model == "gpt2" and _PRE_TOKENIZERS.get(metadata.get("tokenizer.ggml.pre") or "default", _DEFAULT).add_bos)
    add_bos = bool(metadata.get("tokenizer.ggml.add_bos_token", default))
    bos = metadata.get("tokenizer.ggml.bos_token_id")
    return int(bos) if add_bos and bos is not None else None


def tokenize_text(metadata: Mapping[str, Any], text: str, at_least: int | None = None) -> np.ndarray:
    """Token ids of ``text`` as llama-imatrix gets them (int32); with ``at_least``, maybe only the first ones (at
    least that many, when the text has them)."""
    return GGUFTokenizer.from_metadata(metadata).encode(text, at_least)


def load_token_file(path: str | os.PathLike[str], n_vocab: int | None = None) -> np.ndarray:
    """Token ids from ``.npy`` (any integer array) or text (integers separated by whitespace or commas)."""
    path = Path(path)
    try:
        if path.suffix == ".npy":
            ids = np.load(path, allow_pickle=False)
            if not np.issubdtype(ids.dtype, np.integer):
                raise UsageError(f"--tokens {path}: expected an integer array, got {ids.dtype}")
            ids = ids.reshape(-1)
        else:
            words = path.read_text().replace(",", " ").split()
            try:
                ids = np.array([int(w) for w in words], dtype=np.int64)
            except ValueError as exc:
                raise UsageError(f"--tokens {path}: not a list of integers ({exc})") from None
    except OSError as exc:
        raise UsageError(f"--tokens {path}: cannot read: {exc.strerror}") from None
    if ids.size and n_vocab is not None and (ids.min() < 0 or ids.max() >= n_vocab):
        bad = int(ids[(ids < 0) | (ids >= n_vocab)][0])
        raise UsageError(f"--tokens {path}: token id {bad} is outside the vocabulary (0..{n_vocab - 1})")
    return ids.astype(np.int32)
