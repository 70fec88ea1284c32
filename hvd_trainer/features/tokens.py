"""Tokenizers and token vocabularies shared by the set and text features.

Tokenizers behave as Ludwig's of the same name (ludwig/utils/tokenizers.py): `space` splits on
single spaces and drops empty tokens, `space_punct` keeps runs of word characters and each
punctuation character as tokens, `comma`/`underscore` split on the separator with the spaces
around it, `characters` is one token per character, `untokenized`/`stripped` the whole value.
Ludwig's language tokenizers (spaCy), `ngram` and the pretrained ones are refused by each type.

A vocabulary is built over the whole training set: every rank counts the tokens of its own rows,
and the counts travel through the Reducer (one allgather_object for all features of a type, the
path category values take too), so every rank builds the same vocabulary from the same totals.
Ties in frequency are broken by the token (Ludwig's Counter keeps insertion order, which would
differ between shards).
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Callable, Dict, Iterable, List, Mapping, Sequence, Tuple

import numpy as np

from hvd_trainer.features.arrays import missing_mask, ranked
from hvd_trainer.features.config import FeatureConfig
from hvd_trainer.features.reducer import Reducer

_COMMA = re.compile(r"\s*,\s*")
_UNDERSCORE = re.compile(r"\s*_\s*")


def _space(text: str) -> List[str]:
    return [t for t in text.strip().split(" ") if t]


def _space_punct(text: str) -> List[str]:
    tokens: List[str] = []
    word: List[str] = []
    for c in text:
        if c.isalnum() or c == "_":
            word.append(c)
            continue
        if word:
            tokens.append("".join(word))
            word = []
        if not c.isspace():
            tokens.append(c)
    if word:
        tokens.append("".join(word))
    return tokens


TOKENIZERS: Dict[str, Callable[[str], List[str]]] = {
    "space": _space,
    "space_punct": _space_punct,
    "comma": lambda text: _COMMA.split(text.strip()),
    "underscore": lambda text: _UNDERSCORE.split(text.strip()),
    "characters": list,
    "untokenized": lambda text: [text],
    "stripped": lambda text: [text.strip()],
}

#: Tokenizers Ludwig offers that hvd_trainer does not (spaCy language pipelines, n-grams, pretrained).
LUDWIG_OTHER_TOKENIZERS: Tuple[str, ...] = ("ngram", "hf_tokenizer", "sentencepiece", "clip", "gpt2bpe",
                                             "bert") + tuple(
    f"{lang}_{kind}" for lang in ("english", "italian", "spanish", "german", "french", "portuguese", "dutch",
                                  "greek", "norwegian", "lithuanian", "danish", "polish", "romanian", "japanese",
                                  "chinese", "multi")
    for kind in ("tokenize", "tokenize_filter", "tokenize_remove_stopwords", "lemmatize", "lemmatize_filter",
                 "lemmatize_remove_stopwords"))


def tokenize(text: str, tokenizer: str, lowercase: bool, unknown: str = "<UNK>") -> List[str]:
    """The tokens of one value, lowercased first when asked (as Ludwig does).

    A value that is exactly the unknown symbol (the default fill of a missing value) is that one
    token; Ludwig would split "<UNK>" into "<", "UNK", ">" with space_punct.
    """
    if text == unknown:
        return [text]
    return TOKENIZERS[tokenizer](text.lower() if lowercase else text)


def filled(values: np.ndarray, fill: str) -> List[str]:
    """The values with missing ones replaced by `fill` (a string)."""
    missing = missing_mask(values)
    return [fill if m else v for v, m in zip(values.tolist(), missing.tolist())]


def local_token_stats(texts: Iterable[str], tokenizer: str, lowercase: bool,
                      unknown: str = "<UNK>") -> Tuple[Dict[str, int], int]:
    """(token counts, the most tokens in one value) of this rank's rows."""
    counts: Counter = Counter()
    longest = 0
    for text in texts:
        tokens = tokenize(text, tokenizer, lowercase, unknown)
        counts.update(tokens)
        longest = max(longest, len(tokens))
    return dict(counts), longest


def global_token_stats(features: Sequence[FeatureConfig], texts: Mapping[str, List[str]], reducer: Reducer,
                       name: str) -> Dict[str, Tuple[Counter, int]]:
    """{feature: (token counts, longest value in tokens)} over every rank's rows: one collective for all."""
    local = {f.name: local_token_stats(texts[f.name], f.preprocessing.tokenizer, f.preprocessing.lowercase,
                                       getattr(f.preprocessing, "unknown_symbol", "<UNK>"))
             for f in features}
    per_rank = reducer.gather(local, name=name)
    out = {}
    for f in features:
        counts: Counter = Counter()
        longest = 0
        for rank_stats in per_rank:
            rank_counts, rank_longest = rank_stats[f.name]
            counts.update(rank_counts)
            longest = max(longest, rank_longest)
        out[f.name] = (counts, longest)
    return out


def vocabulary(counts: Mapping[str, int], most_common: int, specials: Sequence[str]) -> List[str]:
    """`specials` first, then the `most_common` most frequent other tokens (ties by token)."""
    kept = [t for t in ranked(counts) if t not in set(specials)][:most_common]
    return list(specials) + kept


def token_ids(tokens: Sequence[str], str2idx: Mapping[str, int], unknown: int) -> Tuple[List[int], int]:
    """(vocabulary ids of the tokens, how many were unseen in training and became `unknown`)."""
    ids = [str2idx.get(t, unknown) for t in tokens]
    return ids, sum(1 for t in tokens if t not in str2idx)
