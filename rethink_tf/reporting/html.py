"""A workdir -> one self-contained HTML report (figures embedded, the runs table, the comparison with the paper),
a single file a user can mail to a colleague. Reads results files only; never re-trains.

    python -m rethink_tf.runs --results=runs/fig1 --html=report.html

The figures are drawn by reporting.figures into a temporary folder and embedded as base64 PNG; the tables are the
runs listing (rethink_tf.runs) and the comparison (reporting.compare). A small script marks, once the page has
loaded, how many images rendered (body[data-images-rendered]): the test reads it from a headless browser.
"""

import base64
import html
import os
import tempfile
import time

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.note { color: #666; font-size: 0.85em; }
"""

SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images-rendered', ok + '/' + imgs.length);
});
"""


def _table(columns, rows, numeric=()):
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = []
    for row in rows:
        cells = "".join(f"<td{' class=num' if c in numeric else ''}>{html.escape(str(row.get(c, '')))}</td>"
                        for c in columns)
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _comparison(rows):
    from rethink_tf.reporting import compare

    shown = [dict(zip(compare.DISPLAY_COLUMNS, compare.display_cells(r))) for r in rows]
    return _table(compare.DISPLAY_COLUMNS, shown, numeric=("measured", "paper", "measured − paper"))


def report(patterns, title=None, fit_threshold=None, figures=None, comparison=None):
    """The HTML text of the report of the runs under `patterns` (run folders, folders of them, globs).

    figures, comparison: PNG paths and comparison rows already made from these runs (reproduce draws them for its
    workdir): embedded as they are instead of drawn and computed again.
    """
    from rethink_tf import results, runs
    from rethink_tf.reporting import compare
    from rethink_tf.reporting import figures as plots

    dirs = runs.run_dirs(patterns)
    found = [r for r in results.load_all(dirs) if results.valid_results(
        os.path.join(r["run_dir"], results.RESULTS), r.get("kind", "train"))]
    title = title or "rethink_tf runs: " + ", ".join(patterns if isinstance(patterns, list) else [patterns])
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p class=note>{len(dirs)} run(s), {len(found)} finished; written {time.strftime('%Y-%m-%d %H:%M')} "
             "by rethink_tf.reporting.html from the runs' results files.</p>",
             "<h2>Runs</h2>", _table(runs.COLUMNS, [runs.row(d) for d in dirs],
                                     numeric=("epochs", "train acc", "test acc"))]
    with tempfile.TemporaryDirectory() as tmp:
        if figures is None:
            figures = plots.all_figures(found, tmp, fit_threshold) if found else []  # kernel runs: kernels_vs_p
        pngs = [p for p in figures if p.endswith(".png")]
        parts.append("<h2>Figures</h2>")
        if not pngs:
            parts.append("<p>No figure yet: not enough finished runs of one protocol.</p>")
        for path in pngs:
            with open(path, "rb") as f:
                data = base64.b64encode(f.read()).decode("ascii")
            name = os.path.splitext(os.path.basename(path))[0]
            parts.append(f"<figure><img alt='{name}' src='data:image/png;base64,{data}'>"
                         f"<figcaption class=note>{name}</figcaption></figure>")
    rows = comparison if comparison is not None else (compare.comparison_rows(found) if found else [])
    parts += ["<h2>Measured beside the paper</h2>",
              "<p class=note>Provenance tags: P = the paper's own words or tables, S = secondary sources, R = "
              "recalled; a run with no paper counterpart has an empty paper column.</p>",
              _comparison(rows) if rows else "<p>No finished run.</p>"]
    return ("<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style><script>{SCRIPT}</script></head>"
            f"<body>{''.join(parts)}</body></html>\n")


def write(patterns, path, title=None, fit_threshold=None, figures=None, comparison=None):
    """Writes report(...) to `path`; returns the path."""
    text = report(patterns, title, fit_threshold, figures, comparison)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path
