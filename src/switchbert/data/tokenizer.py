"""bert-base-uncased WordPiece (docs/method.md §2) from the vocabulary shipped with the package.

The vocabulary file ``vocab.txt`` (30,522 entries, Apache-2.0, from Google's BERT release) lives next
to this module, so nothing is downloaded. Special ids: [PAD]=0 [UNK]=100 [CLS]=101 [SEP]=102
[MASK]=103.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from tokenizers import Tokenizer
from tokenizers.implementations import BertWordPieceTokenizer

from switchbert.data.errors import PathLike

VOCAB_PATH = Path(__file__).with_name("vocab.txt")
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = 0, 100, 101, 102, 103
VOCAB_SIZE = 30522
SPECIAL_IDS = frozenset({PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID})


def load_tokenizer(vocab_path: Optional[PathLike] = None) -> Tokenizer:
    """A lower-casing BERT WordPiece tokenizer (accent stripping, Chinese-char splitting as BERT).

    Args:
        vocab_path: a ``vocab.txt``; defaults to the bert-base-uncased vocabulary shipped here.

    Returns:
        A ``tokenizers.Tokenizer``. Use :func:`encode` rather than its own truncation so the
        tokenizer stays stateless (safe to share between datasets with different maximum lengths).
    """
    path = Path(vocab_path) if vocab_path is not None else VOCAB_PATH
    if not path.is_file():
        raise FileNotFoundError(f"WordPiece vocabulary not found: {path}")
    wrapper = BertWordPieceTokenizer(str(path), lowercase=True, strip_accents=None, clean_text=True)
    return wrapper._tokenizer


def encode(tokenizer: Tokenizer, text: str, max_length: int) -> list[int]:
    """``[CLS] wordpieces [SEP]``, the word pieces truncated so the whole has at most ``max_length`` ids."""
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2 ([CLS] and [SEP]), got {max_length}")
    pieces = tokenizer.encode(text, add_special_tokens=False).ids
    return [CLS_ID, *pieces[: max_length - 2], SEP_ID]


def encode_batch(tokenizer: Tokenizer, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """:func:`encode` for many texts at once (the Rust tokenizer runs them in parallel)."""
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2 ([CLS] and [SEP]), got {max_length}")
    encs = tokenizer.encode_batch(list(texts), add_special_tokens=False)
    return [[CLS_ID, *e.ids[: max_length - 2], SEP_ID] for e in encs]
