"""The CLIP BPE tokenizer, offline and dependency-free: prompts -> token ids [N, 77].

Reads SD1.5's `tokenizer/` folder (`vocab.json`, `merges.txt`, optionally
`special_tokens_map.json` / `tokenizer_config.json` for the pad token; `save` writes such
a folder) and reproduces transformers' `CLIPTokenizer` (5.x, the `tokenizers` pipeline):

1. special tokens (`<|startoftext|>`, `<|endoftext|>`) written in the text are kept whole;
2. normalisation: NFC, every whitespace run -> one space, lowercase (no ftfy, no HTML
   unescaping: the original OpenAI tokenizer's `ftfy.fix_text` is not applied);
3. pre-tokenisation with CLIP's pattern
   `'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+` (whitespace dropped);
4. each piece's UTF-8 bytes -> GPT-2's printable byte alphabet, `</w>` appended to its last
   symbol, BPE merges by rank; symbols missing from the vocab become the unk token;
5. `<|startoftext|>` + ids truncated to max_length - 2 + `<|endoftext|>`, padded to
   max_length with the pad token (SD1.5: `<|endoftext|>`, id 49407).
"""

from __future__ import annotations

import functools
import json
import os
import unicodedata
from typing import Mapping, Sequence

import numpy as np

from t4a_jax.atomic import atomic_directory

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
_NO_MERGE = float("inf")
_CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")
# Unicode White_Space (what `\s` means in the Rust regex that transformers' pipeline uses).
_WHITESPACE = frozenset("\t\n\v\f\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000"
                        + "".join(chr(c) for c in range(0x2000, 0x200B)))


@functools.lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable characters."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _is_letter(c: str) -> bool:
    return unicodedata.category(c).startswith("L")


def _is_number(c: str) -> bool:
    return unicodedata.category(c).startswith("N")


def normalize(text: str) -> str:
    """NFC, whitespace runs -> ' ', lowercase."""
    out, in_space = [], False
    for c in unicodedata.normalize("NFC", text):
        if c in _WHITESPACE:
            if not in_space:
                out.append(" ")
            in_space = True
        else:
            out.append(c)
            in_space = False
    return "".join(out).lower()


def pre_tokenize(text: str) -> list[str]:
    """Split normalised text into CLIP's pieces: contractions, letter runs, single digits,
    runs of other non-space characters (leftmost-first, like the regex alternation)."""
    pieces, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c in _WHITESPACE:
            i += 1
            continue
        contraction = next((s for s in _CONTRACTIONS if text.startswith(s, i)), None)
        if contraction:
            j = i + len(contraction)
        elif _is_letter(c):
            j = i + 1
            while j < n and _is_letter(text[j]):
                j += 1
        elif _is_number(c):
            j = i + 1
        else:
            j = i + 1
            while (j < n and text[j] not in _WHITESPACE and not _is_letter(text[j])
                   and not _is_number(text[j])):
                j += 1
        pieces.append(text[i:j])
        i = j
    return pieces


class CLIPTokenizer:
    """Prompts -> CLIP token ids. `tokenize(prompts)` returns [N, max_length] int32."""

    def __init__(self, vocab: Mapping[str, int], merges: Sequence[tuple[str, str]], *,
                 max_length: int = 77, bos_token: str = BOS_TOKEN,
                 eos_token: str = EOS_TOKEN, pad_token: str = EOS_TOKEN,
                 unk_token: str = EOS_TOKEN, source: str = "vocab"):
        for name, token in (("bos_token", bos_token), ("eos_token", eos_token),
                            ("pad_token", pad_token), ("unk_token", unk_token)):
            if token not in vocab:
                raise ValueError(f"{source}: {name} {token!r} is not in the vocabulary")
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {max_length}")
        self.vocab = dict(vocab)
        self.ranks = {tuple(pair): rank for rank, pair in enumerate(merges)}
        self.max_length = max_length
        self.bos_id, self.eos_id = self.vocab[bos_token], self.vocab[eos_token]
        self.pad_id, self.unk_id = self.vocab[pad_token], self.vocab[unk_token]
        self.special = {bos_token: self.bos_id, eos_token: self.eos_id}
        self._byte_map = bytes_to_unicode()
        self._cache: dict[str, list[int]] = {}

    @classmethod
    def byte_level(cls, max_length: int = 77) -> CLIPTokenizer:
        """An offline tokenizer for random tiny text towers: one token per byte (with and
        without `</w>`), no merges, 514 ids."""
        alphabet = list(bytes_to_unicode().values())
        tokens = alphabet + [c + "</w>" for c in alphabet] + [BOS_TOKEN, EOS_TOKEN]
        return cls({t: i for i, t in enumerate(tokens)}, [], max_length=max_length,
                   source="byte_level")

    @classmethod
    def from_folder(cls, path: str | os.PathLike, *, max_length: int = 77) -> CLIPTokenizer:
        """Load `vocab.json` and `merges.txt` (first line `#version: ...` skipped); the pad
        token comes from `special_tokens_map.json` or `tokenizer_config.json` when present
        (default `<|endoftext|>`)."""
        path = os.fspath(path)
        vocab_file, merges_file = (os.path.join(path, f) for f in ("vocab.json", "merges.txt"))
        for f in (vocab_file, merges_file):
            if not os.path.isfile(f):
                raise FileNotFoundError(f"CLIP tokenizer folder {path}: no {os.path.basename(f)}")
        with open(vocab_file, encoding="utf-8") as fh:
            vocab = json.load(fh)
        merges = []
        with open(merges_file, encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                line = line.rstrip("\n")
                if not line or (number == 1 and line.startswith("#version")):
                    continue
                pair = line.split(" ")
                if len(pair) != 2:
                    raise ValueError(f"{merges_file}:{number}: expected two symbols, got {line!r}")
                merges.append((pair[0], pair[1]))
        pad = EOS_TOKEN
        for name in ("tokenizer_config.json", "special_tokens_map.json"):
            f = os.path.join(path, name)
            if os.path.isfile(f):
                with open(f, encoding="utf-8") as fh:
                    value = json.load(fh).get("pad_token", pad)
                pad = value["content"] if isinstance(value, dict) else (value or pad)
        return cls(vocab, merges, max_length=max_length, pad_token=pad, source=path)

    def save(self, path: str | os.PathLike) -> None:
        """Write the folder that `from_folder(path, max_length=self.max_length)` reads back
        into an identical tokenizer (atomically): `vocab.json`, `merges.txt` (in rank
        order, under a `#version: 0.2` line), and transformers' `special_tokens_map.json`
        and `tokenizer_config.json` (special tokens, `model_max_length`).

        Raises:
          ValueError when BOS, EOS or unk are not CLIP's (`from_folder` reads only the pad
          token from the folder, so it could not restore them).
        """
        clip_ids = {"bos": self.vocab.get(BOS_TOKEN), "eos": self.vocab.get(EOS_TOKEN),
                    "unk": self.vocab.get(EOS_TOKEN)}
        own_ids = {"bos": self.bos_id, "eos": self.eos_id, "unk": self.unk_id}
        if own_ids != clip_ids:
            raise ValueError(f"CLIPTokenizer.save({os.fspath(path)}): token ids {own_ids} "
                             f"differ from CLIP's {clip_ids}; from_folder could not restore "
                             f"them")
        pad_token = next(token for token, i in self.vocab.items() if i == self.pad_id)
        special = {"bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN, "pad_token": pad_token,
                   "unk_token": EOS_TOKEN}
        files = {
            "vocab.json": json.dumps(self.vocab, ensure_ascii=False),
            "merges.txt": "".join(["#version: 0.2\n"] + [
                f"{first} {second}\n" for first, second in sorted(self.ranks,
                                                                  key=self.ranks.get)]),
            "special_tokens_map.json": json.dumps(special, indent=2),
            "tokenizer_config.json": json.dumps(
                {**special, "model_max_length": self.max_length,
                 "tokenizer_class": "CLIPTokenizer"}, indent=2),
        }
        with atomic_directory(path) as tmp:
            for name, text in files.items():
                with open(os.path.join(tmp, name), "w", encoding="utf-8") as fh:
                    fh.write(text)

    def _bpe(self, piece: str) -> list[int]:
        """One pre-tokenised piece -> its BPE token ids (cached)."""
        if piece in self._cache:
            return self._cache[piece]
        word = [self._byte_map[b] for b in piece.encode("utf-8")]
        word[-1] += "</w>"
        while len(word) > 1:
            pair = min(zip(word, word[1:]), key=lambda p: self.ranks.get(p, _NO_MERGE))
            if pair not in self.ranks:
                break
            first, second = pair
            merged, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        ids = [self.vocab.get(symbol, self.unk_id) for symbol in word]
        if len(self._cache) < 100_000:
            self._cache[piece] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """The ids of `text` without BOS/EOS, untruncated."""
        ids: list[int] = []
        rest = text
        while rest:
            found = [(rest.find(s), s) for s in self.special if s in rest]
            start, token = min(found) if found else (len(rest), None)
            for piece in pre_tokenize(normalize(rest[:start])):
                ids.extend(self._bpe(piece))
            if token is None:
                break
            ids.append(self.special[token])
            rest = rest[start + len(token):]
        return ids

    def tokenize(self, prompts: Sequence[str]) -> np.ndarray:
        """prompts (N strings) -> ids [N, max_length] int32: BOS, the prompt's ids truncated
        to max_length - 2, EOS, then the pad id."""
        if isinstance(prompts, str):
            raise TypeError("tokenize takes a list of prompts, got a single string")
        out = np.full((len(prompts), self.max_length), self.pad_id, np.int32)
        for row, prompt in enumerate(prompts):
            ids = [self.bos_id, *self.encode(prompt)[:self.max_length - 2], self.eos_id]
            out[row, :len(ids)] = ids
        return out

    __call__ = tokenize
