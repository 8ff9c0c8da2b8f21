"""The people-style query set: queries written by looking at test-split pictures, not their titles.

Models trained on clip-art titles do well on titles; what people type when they
search is different. ``data/people_queries/queries.csv`` holds two queries for
each of 82 test-split drawings (see ``data/people_queries/README.md``):

* ``short``: a short everyday phrase (2-5 words), e.g. ``red apple``;
* ``description``: 5-15 words describing what is visible without the object's
  name, e.g. ``round shiny red fruit with a brown stem and one green leaf``.

The set is for reporting only. Every model choice (hyper-parameters, fusion
weights, early stopping) is made on val; scoring on this set is a final read-out,
like the test captions.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError, QueryError
from .base import CaptionedImages

#: The committed set, next to the clip art: ``<repo>/data/people_queries/queries.csv``.
DEFAULT_PATH = Path(__file__).resolve().parents[2] / "data" / "people_queries" / "queries.csv"
#: The two kinds of query, in the order they are documented.
KINDS = ("short", "description")
_HEADER = ["id", "kind", "query"]


@dataclass
class QuerySet:
    """Text queries, each with one target image in the test split of a dataset.

    ``texts[q]`` is query ``q``; ``kinds[q]`` is ``"short"`` or ``"description"``;
    ``ids[q]`` is the target's item id; ``targets[q]`` is the target's position in
    the test split, i.e. an index into ``np.flatnonzero(ds.split == "test")``,
    so it indexes rows of the test split's image features ``(N_test, d)``.
    """

    name: str
    texts: list[str]
    kinds: np.ndarray  # (Q,) str
    ids: list[str]
    targets: np.ndarray  # (Q,) int64

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, kind: str) -> QuerySet:
        """The queries of one kind (``"short"`` or ``"description"``), named ``"<name>/<kind>"``."""
        if kind not in KINDS:
            raise QueryError(f"unknown query kind {kind!r}; use one of {', '.join(KINDS)}.")
        keep = np.flatnonzero(self.kinds == kind)
        return QuerySet(
            name=f"{self.name}/{kind}",
            texts=[self.texts[i] for i in keep],
            kinds=self.kinds[keep],
            ids=[self.ids[i] for i in keep],
            targets=self.targets[keep],
        )

    def __repr__(self) -> str:
        counts = ", ".join(f"{k}={int(np.sum(self.kinds == k))}" for k in KINDS)
        return f"QuerySet({self.name!r}, {len(self)} queries: {counts}, {len(set(self.ids))} targets)"


def load_people_queries(
    ds: CaptionedImages | None = None, path: Path | str | None = None
) -> QuerySet:
    """Load the people-style queries and resolve each target id to its test-split position.

    ``ds`` defaults to :func:`crosslab.data.load_clipart` (the set was written for its
    test split); ``path`` defaults to the committed ``data/people_queries/queries.csv``
    (UTF-8 CSV with header ``id,kind,query``). Raises :class:`DataError` naming the
    file and line for a missing file, a bad header or row, an unknown kind, an empty
    query, or an id that is not in ``ds`` or not in its test split.
    """
    if ds is None:
        from .clipart import load_clipart

        ds = load_clipart()
    path = Path(path) if path is not None else DEFAULT_PATH
    if not path.is_file():
        raise DataError(
            f"people-style query file not found: {path}. It ships with the crosslab repository "
            "under data/people_queries/; pass path= to use your own CSV (id,kind,query)."
        )
    test_idx = np.flatnonzero(np.asarray(ds.split) == "test")
    pos_in_test = {ds.ids[i]: p for p, i in enumerate(test_idx)}
    split_of = dict(zip(ds.ids, np.asarray(ds.split), strict=True))

    texts, kinds, ids, targets = [], [], [], []
    try:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None or [h.strip().lstrip("\ufeff") for h in header] != _HEADER:
                raise DataError(
                    f"{path}:1: header must be {','.join(_HEADER)}, got "
                    f"{','.join(header) if header else 'an empty file'}; fix the first line."
                )
            for row in reader:
                where = f"{path}:{reader.line_num}"
                if not row or all(not c.strip() for c in row):
                    continue  # blank lines carry no query
                if len(row) != 3:
                    raise DataError(
                        f"{where}: expected 3 fields (id,kind,query), got {len(row)}; "
                        "quote a query that contains commas."
                    )
                item, kind, text = (c.strip() for c in row)
                if kind not in KINDS:
                    raise DataError(
                        f"{where}: unknown kind {kind!r}; use one of {', '.join(KINDS)}."
                    )
                if not text:
                    raise DataError(f"{where}: empty query for {item!r}; write one or drop the line.")
                if item not in split_of:
                    raise DataError(
                        f"{where}: id {item!r} is not in dataset {ds.name!r}; check the id "
                        "or pass the dataset the queries were written for (ds=)."
                    )
                if item not in pos_in_test:
                    raise DataError(
                        f"{where}: id {item!r} is in the {split_of[item]!r} split of {ds.name!r}, "
                        "not in test; people-style queries must target test images only."
                    )
                texts.append(text)
                kinds.append(kind)
                ids.append(item)
                targets.append(pos_in_test[item])
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason}); save it as UTF-8.") from None
    except csv.Error as e:
        raise DataError(f"{path}: malformed CSV ({e}); check the quoting.") from None
    if not texts:
        raise DataError(f"{path} holds no queries; add rows id,kind,query under the header.")
    return QuerySet(
        name="people",
        texts=texts,
        kinds=np.asarray(kinds, dtype=str),
        ids=ids,
        targets=np.asarray(targets, dtype=np.int64),
    )
