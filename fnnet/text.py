"""Character-level text: a corpus that ships with Python, as ids, cut into windows for a language model.

The corpus is Python's own documentation, `pydoc_data.topics.topics` (about 465,000 characters;
part of the standard library, nothing is downloaded), its topics concatenated in sorted key
order. The last `held_out` fraction of the characters is held out; the vocabulary is the
training part's characters, sorted, plus one unknown symbol (id `len(chars)`) for any
character the training part never shows.

A language model reads windows of `T` ids and predicts, at every position, the next id:
`windows(ids, T)` gives inputs `(n, T)` and targets `(n, T)`, the targets being the inputs
shifted by one.

>>> corpus = python_docs()
>>> corpus.vocab, len(corpus.train) + len(corpus.held_out)
(104, 464970)
>>> X, y = windows(corpus.train[:641], 64)
>>> X.shape, bool((X[:, 1:] == y[:, :-1]).all())
((10, 64), True)
"""

from typing import NamedTuple

import numpy as np

from fnnet._checks import is_int


class Corpus(NamedTuple):
    """A text as character ids.

    Attributes:
      train: the training part, `(n,)` int32 ids.
      held_out: the held-out part (the text's end), `(m,)` int32 ids.
      chars: the training part's distinct characters, sorted: id i is `chars[i]`, and id
        `len(chars)` every other character.
    """

    train: np.ndarray
    held_out: np.ndarray
    chars: tuple

    @property
    def vocab(self) -> int:
        """Distinct ids: the characters and the unknown symbol."""
        return len(self.chars) + 1

    def encode(self, text: str) -> np.ndarray:
        """`(len(text),)` int32 ids; characters outside the vocabulary get the unknown id."""
        index = {c: i for i, c in enumerate(self.chars)}
        return np.array([index.get(c, len(self.chars)) for c in text], np.int32)

    def decode(self, ids) -> str:
        """The text of `ids`, "�" for the unknown symbol."""
        return "".join(self.chars[i] if i < len(self.chars) else "�" for i in np.asarray(ids).tolist())


def python_docs(held_out: float = 0.1) -> Corpus:
    """Python's documentation topics (`pydoc_data.topics`), concatenated in sorted key order, the
    last `held_out` fraction (in (0, 1)) of its characters held out."""
    if not 0 < held_out < 1:
        raise ValueError(f"python_docs: held_out must be a fraction in (0, 1), got {held_out!r}")
    from pydoc_data.topics import topics

    text = "".join(topics[k] for k in sorted(topics))
    cut = int((1 - held_out) * len(text))
    chars = tuple(sorted(set(text[:cut])))
    corpus = Corpus(np.zeros(0, np.int32), np.zeros(0, np.int32), chars)
    return corpus._replace(train=corpus.encode(text[:cut]), held_out=corpus.encode(text[cut:]))


def windows(ids, T: int):
    """`(X, y)`: the non-overlapping windows of `T` ids of `ids` `(n,)`, X `(⌊(n − 1)/T⌋, T)`, and
    their targets y, each id's successor (ids that fill no whole window are left out)."""
    ids = np.asarray(ids)
    if not is_int(T, 1):
        raise ValueError(f"windows: T must be a positive int, got {T!r}")
    count = (len(ids) - 1) // T
    if count < 1:
        raise ValueError(f"windows: {len(ids)} ids fill no window of {T} (with the targets, {T + 1} are needed)")
    X = ids[:count * T].reshape(count, T)
    y = ids[1:count * T + 1].reshape(count, T)
    return X, y
