"""Amazon Beauty 2014 5-core: ``sequential_data.txt`` + ``datamaps.json`` + ``Amazon_Beauty.item``.

Join: sequence integer id -> ``datamaps.json`` ``id2item`` -> ASIN -> item row.
The integer ids of the P5 files were given in order of first appearance, so they
are only used to join; users and items are re-numbered from reviewer ids and
ASINs. There are no timestamps: list order is chronological.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pandas as pd

from s2gr_core.data.tables import (
    DataFormatError,
    Tables,
    clean_text,
    dense_ids,
    item_text,
    key_sort_order,
    read_atomic_file,
    read_text,
    to_number,
)

SEQUENCE_FILE = "sequential_data.txt"
MAPS_FILE = "datamaps.json"
ITEM_FILE = "Amazon_Beauty.item"


def parse_categories(value: object) -> list[str]:
    """``"'Beauty', 'Makeup', \"Women's\""`` -> ``['Beauty', 'Makeup', "Women's"]``."""
    if value is None or value is pd.NA:
        return []
    text = str(value).strip()
    try:
        parsed = ast.literal_eval(f"[{text}]")
        return [clean_text(v) for v in parsed if clean_text(v)]
    except (ValueError, SyntaxError):
        return [p for p in (clean_text(v.strip(" '\"")) for v in text.split(",")) if p]


def parse_items(path: Path) -> pd.DataFrame:
    raw = read_atomic_file(path, ["item_id", "title", "categories", "price", "brand"], quoted=True)
    prices = to_number(raw, "price", "float64", path)
    titles = raw["title"].map(clean_text)
    # 20 real items carry the placeholder brand "Unknown": it is no brand.
    brands = raw["brand"].map(clean_text).replace("Unknown", pd.NA)
    categories = raw["categories"].map(parse_categories)
    items = pd.DataFrame(
        {
            "item_id": dense_ids(raw["item_id"], key_sort_order(raw["item_id"])),
            "item_key": raw["item_id"],
            "title": titles,
            "brand": brands,
            "categories": categories,
            "price": prices,
            "year": pd.array([pd.NA] * len(raw), dtype="Int32"),
            "source_line": raw["source_line"],
        }
    )
    items["text"] = [
        item_text(
            t,
            {
                "Brand": b,
                # The leading 'Beauty' is shared by every item and carries no signal.
                # A category path (names may contain commas), so joined with ' > '.
                "Categories": " > ".join(c for c in cats if c != "Beauty"),
                "Price": None if np.isnan(p) else f"${p:.2f}",
            },
        )
        for t, b, cats, p in zip(titles, brands, categories, prices, strict=True)
    ]
    return items.sort_values("item_id", kind="stable", na_position="last").reset_index(drop=True)


def load_maps(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    try:
        maps = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{path}: not valid JSON ({exc})") from exc
    missing = [k for k in ("id2item", "id2user") if not isinstance(maps.get(k), dict)]
    if missing:
        raise DataFormatError(f"{path}: missing mapping(s) {missing}")
    return maps["id2item"], maps["id2user"]


def parse_sequences(path: Path, id2item: dict[str, str], id2user: dict[str, str]) -> pd.DataFrame:
    """One row per (user, position) from ``user item item ...`` lines."""
    text = read_text(path)
    users: list[str] = []
    item_ids: list[str] = []
    positions: list[int] = []
    lines: list[int] = []
    for line_no, line in enumerate(text.split("\n"), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if not all(t.isdigit() for t in tokens):
            raise DataFormatError(
                f"{path}: line {line_no}: expected space-separated integers "
                f"'user_id item_id ...', got {line.strip()[:80]!r}"
            )
        user, *seq = tokens
        if user not in id2user:
            raise DataFormatError(f"{path}: line {line_no}: user id {user} is not in datamaps.json id2user")
        users += [id2user[user]] * len(seq)
        item_ids += seq
        positions += range(len(seq))
        lines += [line_no] * len(seq)
    if not lines:
        raise DataFormatError(f"{path}: file is empty (expected one 'user_id item_id ...' line per user)")
    unknown = sorted({i for i in item_ids if i not in id2item}, key=int)
    if unknown:
        line_of = lines[item_ids.index(unknown[0])]
        raise DataFormatError(
            f"{path}: line {line_of}: item id {unknown[0]} is not in datamaps.json id2item "
            f"({len(unknown)} unknown id(s) in all)"
        )
    return pd.DataFrame(
        {
            "user_key": pd.array(users, dtype="string"),
            "item_key": pd.array([id2item[i] for i in item_ids], dtype="string"),
            "position": pd.array(positions, dtype="Int32"),
            "source_line": np.asarray(lines, dtype="int32"),
        }
    )


def parse(raw_dir: Path) -> Tables:
    items = parse_items(raw_dir / ITEM_FILE)
    id2item, id2user = load_maps(raw_dir / MAPS_FILE)
    frame = parse_sequences(raw_dir / SEQUENCE_FILE, id2item, id2user)
    frame["user_id"] = dense_ids(frame["user_key"], key_sort_order(frame["user_key"]))
    frame["item_id"] = dense_ids(frame["item_key"], key_sort_order(items["item_key"]))
    frame["timestamp"] = pd.array([pd.NA] * len(frame), dtype="Int64")
    frame["rating"] = np.full(len(frame), np.nan, dtype="float32")
    frame = frame.sort_values(["user_id", "position", "source_line"], kind="stable", na_position="last")
    return Tables(interactions=frame.reset_index(drop=True), items=items)
