"""`s2gr serve` on 127.0.0.1: the registered champion answers good requests, every bad one gets HTTP 400 naming
the field and value, the server never falls over, and the load benchmark's harness runs against it."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import BIN, project_env, promote
from tests.test_servers import free_port, server

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

pytestmark = pytest.mark.servers


def post(port: int, body: bytes | dict) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations", data=data, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_served_champion_answers_good_and_bad_requests(trained, tmp_path: Path, monkeypatch) -> None:
    from serve_latency import hammer, payloads

    root, params = trained
    uri = f"sqlite:///{tmp_path / 'registry.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    promote(root, params)
    env = project_env(root, MLFLOW_TRACKING_URI=uri, S2GR_ROOT=str(root))

    refused = subprocess.run(
        [str(BIN / "s2gr"), "serve", "--family", "tiger", "--alias", "nope"], env=env, capture_output=True, text=True
    )
    assert refused.returncode == 1 and "no model s2gr-ml-100k-tiger@nope" in refused.stderr

    port = free_port()
    with server([str(BIN / "s2gr"), "serve", "--port", str(port)], f"http://127.0.0.1:{port}/ping", env,
                tmp_path / "serve.log"):  # fmt: skip
        keys = pd.read_parquet(root / "data/processed/items.parquet")["item_key"].astype(str).tolist()
        user = str(pd.read_parquet(root / "data/processed/interactions.parquet")["user_key"].iloc[0])
        status, body = post(
            port,
            {
                "dataframe_records": [{"history": keys[:3], "user": None}, {"user": user, "history": None}],
                "params": {"k": 5},
            },
        )
        assert status == 200, body
        assert [len(p["item_ids"]) for p in body["predictions"]] == [5, 5]
        assert all(set(p) == {"item_ids", "item_keys", "titles", "scores"} for p in body["predictions"])

        too_many = {"dataframe_records": [{"history": keys[:2]}] * (params.serve.max_batch + 1)}
        for request, expected in [
            ({"dataframe_records": [{"history": [keys[0], "nope"]}]}, "unknown item key(s): ['nope']"),
            ({"dataframe_records": [{"history": []}]}, "history is empty"),
            ({"dataframe_records": [{"user": "nobody"}]}, "unknown user 'nobody'"),
            ({"dataframe_records": [{"history": keys[:2]}], "params": {"k": 0}}, "k=0: must be an integer"),
            ({"dataframe_records": [{"history": keys[:2]}], "params": {"k": "ten"}}, "'k'"),
            ({"dataframe_records": [{"history": "abc"}]}, "column history"),
            (too_many, f"at most {params.serve.max_batch} per call"),
            (b'{"dataframe_records": [{"history": [', "valid JSON"),
        ]:
            status, body = post(port, request)
            assert status == 400 and expected in body["message"], (request, body)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
            assert resp.status == 200  # still up after every bad request

        load = hammer("127.0.0.1", port, payloads([keys[i : i + 3] for i in range(10)], 1, 5), 4, 3.0, 1)
        summary = load.summary()
        assert summary["errors"] == 0 and summary["calls"] > 4
        assert 0 < summary["p50_ms"] <= summary["p95_ms"] <= summary["p99_ms"] <= summary["max_ms"]
