"""Parsers on tiny files in the real raw formats."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from s2gr_core.data import beauty, movielens
from s2gr_core.data.tables import DataFormatError, clean_text, key_sort_order
from tests.fixtures import write_beauty, write_ml100k


def test_movielens_sequences_are_chronological_with_ties_by_item_id(tmp_path: Path) -> None:
    tables = movielens.parse(write_ml100k(tmp_path / "ml"))
    inter = tables.interactions
    assert len(inter) == 12 * 7
    for _, user in inter.groupby("user_id"):
        user = user.sort_values("position")
        assert user["position"].tolist() == list(range(len(user)))
        ts = user["timestamp"].to_numpy()
        assert (ts[1:] >= ts[:-1]).all()
        keys = user["item_key"].astype(int).to_numpy()
        tied = ts[1:] == ts[:-1]
        assert tied.any(), "the fixture must contain timestamp ties"
        assert (keys[1:][tied] > keys[:-1][tied]).all()


def test_movielens_ids_come_from_original_keys_not_file_order(tmp_path: Path) -> None:
    a = movielens.parse(write_ml100k(tmp_path / "a", seed=1))
    lines = (tmp_path / "a" / "ml-100k.item").read_text().splitlines()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "ml-100k.item").write_text("\n".join([lines[0], *reversed(lines[1:])]) + "\n")
    (tmp_path / "b" / "ml-100k.inter").write_text((tmp_path / "a" / "ml-100k.inter").read_text())
    b = movielens.parse(tmp_path / "b")
    cols = ["item_id", "item_key", "title"]
    pd.testing.assert_frame_equal(a.items[cols], b.items[cols])
    assert a.items["item_key"].astype(int).tolist() == list(range(1, 41))  # numeric, not "1","10","11"
    pd.testing.assert_frame_equal(
        a.interactions[["user_id", "item_id", "position"]], b.interactions[["user_id", "item_id", "position"]]
    )


def test_movielens_item_fields(tmp_path: Path) -> None:
    items = movielens.parse(write_ml100k(tmp_path / "ml")).items
    first = items.iloc[0]
    assert first["title"] == "Movie 1 & Friends"  # HTML entity unescaped
    assert first["year"] == 1981
    assert len(first["categories"]) == 2
    assert first["text"].startswith("Title: Movie 1 & Friends. Year: 1981. Genres: ")
    assert pd.isna(items.iloc[2]["year"])  # 'unkonwn' in the real file -> null


def test_beauty_quoted_tab_entities_and_quirks(tmp_path: Path) -> None:
    tables = beauty.parse(write_beauty(tmp_path / "b"))
    items = tables.items.set_index("item_key")
    assert items.loc["B0001ZYL3Q", "title"] == "TheraNeem Cream Vanilla"  # quoted tab kept in one field
    assert items.loc["B000SDI6MI", "title"] == "Kiwi & Pear Lotion"
    assert pd.isna(items.loc["B000GZES7A", "title"])
    assert pd.isna(items.loc["B000GZES7A", "price"])
    assert pd.isna(items.loc["B008UAIM52", "brand"])  # placeholder brand "Unknown"
    assert list(items.loc["9788072216", "categories"]) == ["Beauty", "Fragrance", "Women's"]
    assert items.loc["9788072216", "text"] == (
        "Title: Prada Candy Eau De Parfum. Brand: Prada. Categories: Fragrance > Women's. Price: $65.86."
    )
    assert items.loc["B000GZES7A", "text"] == "Categories: Skin Care > Eyes > Creams."


def test_beauty_ids_follow_asin_order_not_p5_ids(tmp_path: Path) -> None:
    tables = beauty.parse(write_beauty(tmp_path / "b"))
    items = tables.items
    assert items["item_key"].tolist() == sorted(items["item_key"].tolist())
    assert items["item_id"].tolist() == list(range(6))
    inter = tables.interactions
    # user "A9REVIEWER" (P5 user 1) sorts last among reviewer ids
    last_user = inter[inter["user_id"] == inter["user_id"].max()]
    assert last_user["user_key"].iloc[0] == "A9REVIEWER"
    asin_of_p5 = {
        str(i + 1): k
        for i, k in enumerate(["B0001ZYL3Q", "B000SDI6MI", "B000GZES7A", "9788072216", "B008UAIM52", "7806397051"])
    }
    assert last_user.sort_values("position")["item_key"].tolist() == [asin_of_p5[str(i)] for i in [1, 2, 3, 4, 5]]
    assert inter["timestamp"].isna().all()


def test_beauty_unknown_p5_item_names_the_line(tmp_path: Path) -> None:
    folder = write_beauty(tmp_path / "b", sequences=[[1, 2, 3], [4, 99, 5]])
    with pytest.raises(DataFormatError, match=r"sequential_data.txt: line 2: item id 99 is not in datamaps"):
        beauty.parse(folder)


def test_beauty_malformed_sequence_line(tmp_path: Path) -> None:
    folder = write_beauty(tmp_path / "b")
    (folder / "sequential_data.txt").write_text("1 1 2 3\n2,4,5,6\n")
    with pytest.raises(DataFormatError, match=r"line 2: expected space-separated integers"):
        beauty.parse(folder)


def test_beauty_maps_must_have_id2item(tmp_path: Path) -> None:
    folder = write_beauty(tmp_path / "b")
    (folder / "datamaps.json").write_text(json.dumps({"id2user": {}}))
    with pytest.raises(DataFormatError, match=r"datamaps.json: missing mapping\(s\) \['id2item'\]"):
        beauty.parse(folder)


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (["10", "9", "100"], ["9", "10", "100"]),
        (["B2", "A1", "10"], ["10", "A1", "B2"]),
        (["9" * 30, "12", "7", "007"], ["007", "7", "12", "9" * 30]),  # no int64 overflow; ties by key
    ],
)
def test_key_sort_order(keys: list[str], expected: list[str]) -> None:
    assert key_sort_order(pd.Series(keys, dtype="string")).tolist() == expected


@pytest.mark.parametrize(("raw", "clean"), [("A &amp; B", "A & B"), ("  x \t y ", "x y"), ("", None), (None, None)])
def test_clean_text(raw: str | None, clean: str | None) -> None:
    assert clean_text(raw) == clean


def spreadsheet_export(data: bytes) -> bytes:
    """A text file's bytes as a spreadsheet exports them: UTF-8 byte-order mark, CRLF line endings."""
    return b"\xef\xbb\xbf" + data.replace(b"\n", b"\r\n")


@pytest.mark.parametrize(
    ("dataset", "write", "files"),
    [
        (movielens, write_ml100k, ["ml-100k.inter", "ml-100k.item"]),
        (beauty, write_beauty, ["sequential_data.txt", "datamaps.json", "Amazon_Beauty.item"]),
    ],
    ids=["ml-100k", "amazon-beauty"],
)
def test_a_bom_and_crlf_parse_to_the_same_tables(tmp_path: Path, dataset, write, files: list[str]) -> None:
    clean = dataset.parse(write(tmp_path / "clean"))
    exported = write(tmp_path / "exported")
    for name in files:
        (exported / name).write_bytes(spreadsheet_export((exported / name).read_bytes()))
    got = dataset.parse(exported)
    pd.testing.assert_frame_equal(got.interactions, clean.interactions)
    pd.testing.assert_frame_equal(got.items, clean.items)


@pytest.mark.parametrize(
    ("name", "garble", "message"),
    [
        ("ml-100k.inter", lambda b: b[:40] + b"\x80" + b[40:], r"ml-100k.inter: byte 40 \(0x80, line 1\) is not UTF-8"),
        ("ml-100k.item", lambda b: b.replace(b"Movie 2", b"Movi\xe9 2"), r"ml-100k.item: byte \d+ \(0xe9, line 3\)"),
        (
            "ml-100k.inter",
            lambda b: b.decode().encode("utf-16"),
            r"ml-100k.inter: starts with a UTF-16 byte-order mark",
        ),
        ("ml-100k.item", lambda b: bytes(range(256)) * 4, r"ml-100k.item: byte 128 \(0x80, line 2\) is not UTF-8"),
    ],
    ids=["stray-byte", "latin-1", "utf-16", "binary"],
)
def test_undecodable_text_names_file_byte_and_encoding(tmp_path: Path, name: str, garble, message: str) -> None:
    folder = write_ml100k(tmp_path / "ml")
    (folder / name).write_bytes(garble((folder / name).read_bytes()))
    with pytest.raises(DataFormatError, match=message + r".*expected UTF-8") as err:
        movielens.parse(folder)
    assert "UnicodeDecodeError" not in str(err.value)


def test_undecodable_beauty_sequences_name_the_file(tmp_path: Path) -> None:
    folder = write_beauty(tmp_path / "b")
    (folder / "sequential_data.txt").write_bytes(b"1 1 2 3\n2 4 \xff 6\n")
    with pytest.raises(DataFormatError, match=r"sequential_data.txt: byte 12 \(0xff, line 2\) is not UTF-8"):
        beauty.parse(folder)
