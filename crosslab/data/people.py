"""The people-style query sets: queries written by looking at pictures, not at their titles.

Models trained on clip-art titles do well on titles; what people type when they
search is different. ``data/people_queries/queries.csv`` holds two queries for
each of 82 test-split drawings, and ``queries_val.csv`` the same for drawings of
the val split (see ``data/people_queries/README.md``):

* ``short``: a short everyday phrase (2-5 words), e.g. ``red apple``;
* ``description``: 5-15 words describing what is visible without the object's
  name, e.g. ``round shiny red fruit with a brown stem and one green leaf``.

The test set is for reporting only. Every model choice (hyper-parameters, fusion
weights, early stopping) is made on val; scoring the test set is a final read-out,
like the test captions. The val set exists so that choices meant for people's
queries (the fusion weight) can be made on queries like them, on val images.
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
#: The committed val-split set, written by the same rules: ``queries_val.csv``.
VAL_PATH = DEFAULT_PATH.with_name("queries_val.csv")
_PATHS = {"test": DEFAULT_PATH, "val": VAL_PATH}
#: The two kinds of query, in the order they are documented.
KINDS = ("short", "description")
_HEADER = ["id", "kind", "query"]


@dataclass
class QuerySet:
    """Text queries, each with one target image in one split (``split``) of a dataset.

    ``texts[q]`` is query ``q``; ``kinds[q]`` is ``"short"`` or ``"description"``;
    ``ids[q]`` is the target's item id; ``targets[q]`` is the target's position in
    its split, i.e. an index into ``np.flatnonzero(ds.split == split)``, so it
    indexes rows of that split's image features ``(N_split, d)``.
    """

    name: str
    texts: list[str]
    kinds: np.ndarray  # (Q,) str
    ids: list[str]
    targets: np.ndarray  # (Q,) int64
    split: str = "test"

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
            split=self.split,
        )

    def __repr__(self) -> str:
        counts = ", ".join(f"{k}={int(np.sum(self.kinds == k))}" for k in KINDS)
        return f"QuerySet({self.name!r}, {len(self)} queries: {counts}, {len(set(self.ids))} targets)"


def load_people_queries(
    ds: CaptionedImages | None = None, path: Path | str | None = None, *, split: str = "test"
) -> QuerySet:
    """Load people-style queries and resolve each target id to its position in ``split``.

    ``split`` is ``"test"`` (the reporting set) or ``"val"`` (for choices);
    ``ds`` defaults to :func:`crosslab.data.load_clipart` (the sets were written for it);
    ``path`` defaults to the committed ``data/people_queries/queries.csv`` for test and
    ``queries_val.csv`` for val (UTF-8 CSV with header ``id,kind,query``). Raises
    :class:`DataError` naming the file and line for a missing file, a bad header or
    row, an unknown kind, an empty query, or an id that is not in ``ds`` or not in
    ``split``.
    """
    if split not in _PATHS:
        raise QueryError(f"split must be 'test' or 'val', got {split!r}.")
    if ds is None:
        from .clipart import load_clipart

        ds = load_clipart()
    path = Path(path) if path is not None else _PATHS[split]
    if not path.is_file():
        raise DataError(
            f"people-style query file not found: {path}. It ships with the crosslab repository "
            "under data/people_queries/; pass path= to use your own CSV (id,kind,query)."
        )
    split_idx = np.flatnonzero(np.asarray(ds.split) == split)
    pos_in_split = {ds.ids[i]: p for p, i in enumerate(split_idx)}
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
                if item not in pos_in_split:
                    raise DataError(
                        f"{where}: id {item!r} is in the {split_of[item]!r} split of {ds.name!r}, "
                        f"not in {split}; these people-style queries must target {split} images only."
                    )
                texts.append(text)
                kinds.append(kind)
                ids.append(item)
                targets.append(pos_in_split[item])
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason}); save it as UTF-8.") from None
    except csv.Error as e:
        raise DataError(f"{path}: malformed CSV ({e}); check the quoting.") from None
    if not texts:
        raise DataError(f"{path} holds no queries; add rows id,kind,query under the header.")
    return QuerySet(
        name="people" if split == "test" else f"people-{split}",
        texts=texts,
        kinds=np.asarray(kinds, dtype=str),
        ids=ids,
        targets=np.asarray(targets, dtype=np.int64),
        split=split,
    )
