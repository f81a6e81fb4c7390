"""The validation report as one self-contained HTML page (the project's data docs).

Great Expectations' own data docs load Bootstrap, jQuery and Vega from CDNs and stamp each page with
the render time and random element ids, so the same data would give a different file on every run.
This page carries the same content (every expectation by its GX type, the rule it stands for, its
severity, the failing rows and example source lines), with inline CSS and no scripts: it opens
offline, and unchanged data gives byte-identical HTML (so DVC's hash of it does not move).

Example::

    >>> page = render_html(report)          # a ValidationReport from validate_tables
    >>> page.startswith("<!DOCTYPE html>")
    True
"""

from __future__ import annotations

from html import escape

from s2gr_core.validation import CRITICAL, CheckResult, ValidationReport

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:72em;padding:0 1em;color:#1b1f24}
h1 .badge{font-size:.6em;vertical-align:middle}
.badge{display:inline-block;padding:.15em .6em;border-radius:.3em;color:#fff;font-weight:600}
.ok{background:#1a7f37}.fail{background:#cf222e}.warn{background:#9a6700}
table{border-collapse:collapse;width:100%;margin:.5em 0 1.5em}
th,td{border:1px solid #d0d7de;padding:.3em .5em;text-align:left;vertical-align:top}
th{background:#f6f8fa}code{font-size:.92em}
tr.fail td{background:#ffebe9}tr.warn td{background:#fff8c5}
ul.examples{margin:0;padding-left:1.2em}
"""


def _result(check: CheckResult) -> tuple[str, str]:
    if check.success:
        return "ok", "passed"
    return ("fail", "FAILED") if check.severity == CRITICAL else ("warn", "warning")


def _examples(check: CheckResult, source: str | None) -> str:
    if not check.examples:
        return "" if check.observed is None else f"observed: <code>{escape(str(check.observed))}</code>"
    items = []
    for ex in check.examples:
        line = ex.get("source_line")
        fields = ", ".join(f"{k}={v!r}" for k, v in ex.items() if k != "source_line")
        where = f"raw line {line} of {source}: " if line is not None and source else ""
        items.append(f"<li>{escape(where)}<code>{escape(fields)}</code></li>")
    return f"<ul class=examples>{''.join(items)}</ul>"


def render_html(report: ValidationReport) -> str:
    """One HTML page: status, counts, then every table's expectations with their results."""
    status = ("ok", "PASSED") if report.success else ("fail", "FAILED")
    counts = ", ".join(f"{escape(k)}: {v:,} rows" for k, v in report.row_counts.items())
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Data validation: {escape(report.dataset)}</title><style>{_CSS}</style></head><body>",
        f'<h1>Data validation: {escape(report.dataset)} <span class="badge {status[0]}">{status[1]}</span></h1>',
        f"<p>{len(report.checks)} expectations (Great Expectations), {len(report.failures)} failed, "
        f"{len(report.warnings)} warnings. {counts}.</p>",
    ]
    for title, checks in (("Failures", report.failures), ("Warnings", report.warnings)):
        if checks:
            out.append(f"<h2>{title}</h2><ul>")
            out += [f"<li>{escape(m)}</li>" for m in report.messages(checks)]
            out.append("</ul>")
    for table in dict.fromkeys(c.table for c in report.checks):
        source = report.sources.get(table)
        out.append(f"<h2>{escape(table)}</h2>")
        if source:
            out.append(f"<p>Rows refer to lines of <code>{escape(source)}</code>.</p>")
        out.append(
            "<table><tr><th>expectation</th><th>column</th><th>rule</th><th>severity</th>"
            "<th>result</th><th>failing rows</th><th>examples</th></tr>"
        )
        for c in (c for c in report.checks if c.table == table):
            cls, label = _result(c)
            failing = f"{c.unexpected_count:,} of {c.element_count:,}" if c.unexpected_count else "0"
            out.append(
                f'<tr class="{cls}"><td><code>{escape(c.expectation)}</code></td><td>{escape(c.column or "")}</td>'
                f"<td>{escape(c.rule)}</td><td>{c.severity}</td>"
                f'<td><span class="badge {cls}">{label}</span></td><td>{failing}</td>'
                f"<td>{_examples(c, source)}</td></tr>"
            )
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
