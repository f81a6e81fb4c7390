"""MovieLens-100K in RecBole atomic format (``ml-100k.inter``, ``ml-100k.item``).

Each user's ratings become a chronological sequence: ordered by timestamp,
ties broken by the original MovieLens item id (numerically).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from s2gr_core.data.tables import (
    Tables,
    clean_text,
    dense_ids,
    item_text,
    key_sort_order,
    read_atomic_file,
    to_number,
)

INTER_FILE = "ml-100k.inter"
ITEM_FILE = "ml-100k.item"


def parse_items(path: Path) -> pd.DataFrame:
    raw = read_atomic_file(path, ["item_id", "movie_title", "release_year", "class"])
    titles = raw["movie_title"].map(clean_text)
    years = to_number(raw, "release_year", "Int32", path, lenient=True)
    genres = raw["class"].map(lambda g: [] if g is pd.NA else str(g).split())
    vocabulary = key_sort_order(raw["item_id"])
    items = pd.DataFrame(
        {
            "item_id": dense_ids(raw["item_id"], vocabulary),
            "item_key": raw["item_id"],
            "title": titles,
            "brand": pd.Series([None] * len(raw), dtype="string"),
            "categories": genres,
            "price": np.full(len(raw), np.nan),
            "year": years,
            "source_line": raw["source_line"],
        }
    )
    items["text"] = [
        item_text(t, {"Year": None if pd.isna(y) else str(y), "Genres": ", ".join(g)})
        for t, y, g in zip(items["title"], items["year"], items["categories"], strict=True)
    ]
    return items.sort_values("item_id", kind="stable", na_position="last").reset_index(drop=True)


def parse_interactions(path: Path, items: pd.DataFrame) -> pd.DataFrame:
    raw = read_atomic_file(path, ["user_id", "item_id", "timestamp"])
    timestamps = to_number(raw, "timestamp", "Int64", path)
    ratings = to_number(raw, "rating", "float32", path) if "rating" in raw else np.nan
    item_vocab = key_sort_order(items["item_key"])
    # Tie-break on the numeric MovieLens id, matching how items are numbered.
    item_order = pd.to_numeric(raw["item_id"], errors="coerce")
    frame = pd.DataFrame(
        {
            "user_key": raw["user_id"],
            "item_key": raw["item_id"],
            "timestamp": timestamps,
            "rating": ratings,
            "source_line": raw["source_line"],
            "_item_order": item_order,
        }
    )
    frame["user_id"] = dense_ids(frame["user_key"], key_sort_order(frame["user_key"]))
    frame["item_id"] = dense_ids(frame["item_key"], item_vocab)
    frame = frame.sort_values(["user_id", "timestamp", "_item_order", "source_line"], kind="stable", na_position="last")
    frame["position"] = frame.groupby("user_id", dropna=False).cumcount().astype("Int32")
    return frame.drop(columns="_item_order").reset_index(drop=True)


def parse(raw_dir: Path) -> Tables:
    items = parse_items(raw_dir / ITEM_FILE)
    interactions = parse_interactions(raw_dir / INTER_FILE, items)
    return Tables(interactions=interactions, items=items)
