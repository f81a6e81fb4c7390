"""Open the MLflow UI in headless Chromium and check that it shows the pipeline's runs and metrics.

Starts ``mlflow ui`` on a free loopback port over a tracking store, loads the experiment's runs page
and the newest pipeline run's page as a browser renders them (the UI is a JavaScript app, so the HTML
the server sends names no run), checks that the run names and the stage metrics are on the rendered
pages, and saves a screenshot of each. Needs Debian's ``chromium`` (``apt-get install chromium``).

    python infra/ui_check.py                        # the project's mlflow.db -> reports/mlflow-ui-*.png
    python infra/ui_check.py --store sqlite:///other.db --out /tmp/shots
"""

from __future__ import annotations

import argparse
import html
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RENDER_MS = 20_000  # Chromium's virtual time for the app to fetch and draw


@dataclass(slots=True)
class UICheck:
    runs_url: str
    run_url: str
    run_names: list[str]  # pipeline runs the runs page shows
    metrics_shown: list[str]  # the pipeline run's metric keys its page shows
    metrics_missing: list[str]
    screenshots: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.run_names) and bool(self.metrics_shown) and not self.metrics_missing


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    raise SystemExit("no Chromium found: install Debian's chromium (apt-get install chromium)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def browse(url: str, *extra: str) -> str:
    """What headless Chromium renders at ``url`` (the DOM after the app ran), or writes (``--screenshot``)."""
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars"]
    cmd += ["--window-size=1600,1100", f"--virtual-time-budget={RENDER_MS}", *extra, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=True).stdout


def visible_text(dom: str) -> str:
    """The rendered page's text, one element's text per line."""
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    text = html.unescape(re.sub(r"<[^>]+>", "\n", dom))
    return "\n".join(line.strip() for line in text.split("\n") if line.strip())


def start_ui(store: str, port: int) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    mlflow = Path(sys.executable).with_name("mlflow")
    cmd = [str(mlflow), "ui", "--backend-store-uri", store, "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 90
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"mlflow ui exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                if resp.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"mlflow ui on port {port} did not answer /health within 90 s")


def check(store: str, out: Path, experiment: str = "s2gr") -> UICheck:
    """Render the runs page and the newest pipeline run's page; ``out``/mlflow-ui-{runs,run}.png."""
    from mlflow.tracking import MlflowClient

    port = free_port()
    proc = start_ui(store, port)
    try:
        base = f"http://127.0.0.1:{port}"
        mlf = MlflowClient(base)
        exp = mlf.get_experiment_by_name(experiment)
        if exp is None:
            raise SystemExit(f"{store}: no experiment {experiment!r}; run the pipeline first")
        parents = mlf.search_runs(
            [exp.experiment_id], "tags.`s2gr.kind` = 'pipeline'", order_by=["attributes.start_time DESC"]
        )
        if not parents:
            raise SystemExit(f"{store}: experiment {experiment!r} has no pipeline run")
        newest = parents[0]
        runs_url = f"{base}/#/experiments/{exp.experiment_id}/runs"
        run_url = f"{runs_url}/{newest.info.run_id}"
        runs_page = visible_text(browse(runs_url, "--dump-dom"))
        run_page = visible_text(browse(run_url, "--dump-dom"))
        runs_lines, run_lines = set(runs_page.split("\n")), set(run_page.split("\n"))
        names = [r.info.run_name for r in parents if r.info.run_name in runs_lines]
        # the test metrics of every evaluated model, as the parent run carries them (`evaluate_s2gr/test.ndcg_at_10`)
        wanted = sorted(k for k in newest.data.metrics if re.fullmatch(r"evaluate_\w+/test\.(ndcg|recall)_at_10", k))
        shown = [k for k in wanted if k in run_lines]
        result = UICheck(runs_url, run_url, names, shown, [k for k in wanted if k not in shown])
        out.mkdir(parents=True, exist_ok=True)
        for name, url in (("runs", runs_url), ("run", run_url)):
            shot = out / f"mlflow-ui-{name}.png"
            browse(url, f"--screenshot={shot}")
            result.screenshots.append(shot)
        return result
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default=f"sqlite:///{ROOT / 'mlflow.db'}", help="tracking store (default: mlflow.db)")
    ap.add_argument("--out", type=Path, default=ROOT / "reports", help="folder for the screenshots (default reports/)")
    ap.add_argument("--experiment", default="s2gr")
    args = ap.parse_args(argv)
    res = check(args.store, args.out, args.experiment)
    print(f"runs page {res.runs_url}: shows {len(res.run_names)} pipeline run(s), e.g. {res.run_names[:3]}")
    print(
        f"run page {res.run_url}: shows {len(res.metrics_shown)} of {len(res.metrics_shown) + len(res.metrics_missing)}"
    )
    print(f"  evaluation metrics checked, e.g. {res.metrics_shown[:3]}; missing: {res.metrics_missing or 'none'}")
    print("screenshots: " + ", ".join(str(p) for p in res.screenshots))
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
