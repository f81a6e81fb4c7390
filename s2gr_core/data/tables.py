"""The two tables every dataset is turned into, and the helpers that build them.

``interactions`` (one row per user event, chronological per user)::

    user_id  item_id  position  timestamp  rating  user_key  item_key  source_line
    0        241      0         881250949  3.0     "1"       "242"     17

``items`` (one row per catalogue item)::

    item_id  item_key  title  brand  categories  price  year  text

Ids are dense, 0-based and assigned by sorting the *original* keys (MovieLens
ids numerically, ASINs lexicographically), never by order of first appearance,
so the same catalogue always gets the same ids.
"""

from __future__ import annotations

import csv
import html
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

INTERACTIONS_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.int32(), nullable=True),
        pa.field("item_id", pa.int32(), nullable=True),
        pa.field("position", pa.int32(), nullable=True),
        pa.field("timestamp", pa.int64(), nullable=True),
        pa.field("rating", pa.float32(), nullable=True),
        pa.field("user_key", pa.string(), nullable=True),
        pa.field("item_key", pa.string(), nullable=True),
        pa.field("source_line", pa.int32(), nullable=False),
    ]
)

ITEMS_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.int32(), nullable=True),
        pa.field("item_key", pa.string(), nullable=True),
        pa.field("title", pa.string(), nullable=True),
        pa.field("brand", pa.string(), nullable=True),
        pa.field("categories", pa.list_(pa.string()), nullable=True),
        pa.field("price", pa.float64(), nullable=True),
        pa.field("year", pa.int32(), nullable=True),
        pa.field("text", pa.string(), nullable=True),
        pa.field("source_line", pa.int32(), nullable=False),
    ]
)


class DataFormatError(ValueError):
    """A raw file cannot be read as the documented format; the message names file and line."""


@dataclass(frozen=True, slots=True)
class Tables:
    interactions: pd.DataFrame
    items: pd.DataFrame


def key_sort_order(keys: pd.Series) -> pd.Series:
    """Sorted unique keys: numerically when every key is an integer, else lexicographically.

    Integers of any size (a 30-digit id does not overflow): by digit count, then digits,
    leading zeros ignored, then the key itself ("007" before "7"), so the order never
    depends on the file's.
    """
    unique = pd.Series(keys.dropna().unique(), dtype="string")
    if len(unique) and unique.str.fullmatch(r"\d+").all():
        numeric = sorted(unique.tolist(), key=lambda k: (len(k.lstrip("0")), k.lstrip("0"), k))
        return pd.Series(numeric, dtype="string")
    return unique.sort_values(kind="stable").reset_index(drop=True)


def dense_ids(keys: pd.Series, vocabulary: pd.Series) -> pd.Series:
    """Map keys to their index in ``vocabulary``; keys outside it become <NA>."""
    lookup = pd.Series(np.arange(len(vocabulary), dtype="int32"), index=vocabulary.to_numpy())
    return keys.map(lookup).astype("Int32")


def clean_text(value: object) -> str | None:
    """Unescape HTML entities (``&amp;`` -> ``&``) and fold whitespace; empty -> None."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    text = " ".join(html.unescape(str(value)).split())
    return text or None


def _present(value: object) -> bool:
    return value is not None and value is not pd.NA and str(value) != ""


def item_text(title: str | None, fields: dict[str, str | None]) -> str:
    """The one string per item that content embeddings are computed from.

    >>> item_text("Toy Story", {"Year": "1995", "Genres": "Animation, Comedy"})
    'Title: Toy Story. Year: 1995. Genres: Animation, Comedy.'
    """
    parts = [f"Title: {str(title).rstrip('.')}."] if _present(title) else []
    parts += [f"{name}: {str(value).rstrip('.')}." for name, value in fields.items() if _present(value)]
    return " ".join(parts)


ENCODING = "UTF-8"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def read_text(path: Path) -> str:
    """A raw file's text under the project's encoding policy: UTF-8, a leading byte-order mark
    dropped (what spreadsheet exports write), line endings left to the parser (CRLF is read as LF).

    Anything else raises :class:`DataFormatError` naming the file, the byte offset and the
    expected encoding, e.g. ``ratings.inter: byte 128 (0x80) is not UTF-8 …``.
    """
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found")
    data = path.read_bytes()
    if data.startswith(UTF16_BOMS):
        raise DataFormatError(
            f"{path}: starts with a UTF-16 byte-order mark; expected {ENCODING} text (re-save it as {ENCODING})"
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataFormatError(
            f"{path}: byte {exc.start} (0x{data[exc.start]:02x}, line {line}) is not {ENCODING}: {exc.reason}; "
            f"expected {ENCODING} text (a byte-order mark is accepted)"
        ) from None


def read_atomic_file(path: Path, required: list[str], quoted: bool = False) -> pd.DataFrame:
    """Read a RecBole atomic file (tab-separated, typed header ``name:type``) as strings.

    Returns a frame with the bare column names plus ``source_line`` (1-based
    line of the record in the file; the header is line 1). Raises
    :class:`DataFormatError` naming the file for an empty file, a wrong
    delimiter, missing columns or a malformed row.
    """
    text = read_text(path)
    header_line = text.split("\n", 1)[0].rstrip("\r")
    if not header_line.strip():
        raise DataFormatError(f"{path}: file is empty (expected a tab-separated header line)")
    header = [h.split(":", 1)[0] for h in header_line.split("\t")]
    if len(header) == 1 and any(sep in header_line for sep in (",", ";", "|", " ")):
        raise DataFormatError(
            f"{path}: line 1 has a single column {header_line[:80]!r}; the file must be tab-separated"
        )
    missing = [c for c in required if c not in header]
    if missing:
        raise DataFormatError(f"{path}: missing column(s) {missing} in header (found: {header})")
    rows: list[list[str]] = []
    lines: list[int] = []
    with io.StringIO(text, newline="") as fh:
        reader = csv.reader(fh, delimiter="\t", quotechar='"', quoting=csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE)
        next(reader)
        for record in reader:
            line_no = reader.line_num  # line on which the record ended
            if not record:
                continue
            if len(record) != len(header):
                raise DataFormatError(
                    f"{path}: line {line_no} has {len(record)} field(s), the header has {len(header)}"
                    f" ({header}); is the row tab-separated?"
                )
            rows.append(record)
            lines.append(line_no)
    if not rows:
        raise DataFormatError(f"{path}: no data rows after the header")
    frame = pd.DataFrame(rows, columns=header, dtype="string")
    frame = frame.replace("", pd.NA)
    frame["source_line"] = np.asarray(lines, dtype="int32")
    return frame


def to_number(frame: pd.DataFrame, column: str, dtype: str, path: Path, lenient: bool = False) -> pd.Series:
    """Parse a string column as numbers; a non-number names its file and line.

    ``lenient`` turns non-numbers into <NA> instead (for descriptive fields such
    as MovieLens' release year, which is ``'unkonwn'`` for one real movie).
    """
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() & frame[column].notna()
    if bad.any() and not lenient:
        row = frame[bad].iloc[0]
        raise DataFormatError(f"{path}: line {row['source_line']}: column {column!r} is not a number: {row[column]!r}")
    if dtype.lower().startswith("int"):
        values = values.round()
    return values.astype(dtype)
