"""A self-contained HTML head view of a translation: query tokens on the left, key tokens on the
right, a line between them as dark as the attention weight; a menu picks the kind of attention,
the layer and the head (or their mean), and pointing at a token shows its lines alone. One file,
no network: the weights are embedded as JSON and drawn by a few lines of JavaScript."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path

from torch import Tensor

PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
.tok {{ font-size: 13px; cursor: default; }}
.tok.on {{ font-weight: bold; fill: #c0392b; }}
</style></head>
<body>
<h3>{title}</h3>
<label>attention <select id="kind"></select></label>
<label>layer <select id="layer"></select></label>
<label>head <select id="head"></select></label>
<p style="font-size: 12px">queries on the left, keys on the right; a line's darkness is the
attention weight; point at a token to see its lines alone.</p>
<svg id="view" width="560"></svg>
<script>
const DATA = {data};
const kind = document.getElementById("kind"), layer = document.getElementById("layer"),
      head = document.getElementById("head"), svg = document.getElementById("view");
const NS = "http://www.w3.org/2000/svg", ROW = 20, LEFT = 150, RIGHT = 410;
function options(select, labels) {{
  select.innerHTML = "";
  labels.forEach((text, i) => select.add(new Option(text, i)));
}}
function weights() {{
  const g = DATA[kind.value], maps = g.maps[layer.value], h = Number(head.value);
  if (h < maps.length) return maps[h];
  return maps[0].map((row, i) => row.map((_, j) =>
    maps.reduce((sum, m) => sum + m[i][j], 0) / maps.length));
}}
function text(x, y, label, anchor, side, index) {{
  const t = document.createElementNS(NS, "text");
  Object.entries({{x: x, y: y, "text-anchor": anchor, class: "tok"}})
    .forEach(([k, v]) => t.setAttribute(k, v));
  t.textContent = label;
  t.onmouseenter = () => draw(side, index);
  t.onmouseleave = () => draw(null, null);
  svg.appendChild(t);
}}
function draw(side, index) {{
  const g = DATA[kind.value], w = weights();
  svg.innerHTML = "";
  svg.setAttribute("height", ROW * (Math.max(g.queries.length, g.keys.length) + 1));
  w.forEach((row, i) => row.forEach((value, j) => {{
    if (value < 0.01 || (side === "q" && i !== index) || (side === "k" && j !== index)) return;
    const line = document.createElementNS(NS, "line");
    Object.entries({{x1: LEFT + 5, y1: ROW * (i + 1) - 4, x2: RIGHT - 5, y2: ROW * (j + 1) - 4,
                    stroke: "#2c3e50", "stroke-opacity": value, "stroke-width": 2}})
      .forEach(([k, v]) => line.setAttribute(k, v));
    svg.appendChild(line);
  }}));
  g.queries.forEach((label, i) => text(LEFT, ROW * (i + 1), label, "end", "q", i));
  g.keys.forEach((label, j) => text(RIGHT, ROW * (j + 1), label, "start", "k", j));
}}
function pickKind() {{
  const g = DATA[kind.value];
  options(layer, g.maps.map((_, i) => "layer " + i));
  pickLayer();
}}
function pickLayer() {{
  const heads = DATA[kind.value].heads[layer.value];
  options(head, [...heads.map(h => "head " + h), "mean of heads"]);
  head.value = heads.length;
  draw(null, null);
}}
options(kind, DATA.map(g => g.name));
kind.onchange = pickKind; layer.onchange = pickLayer; head.onchange = () => draw(null, null);
pickKind();
</script></body></html>
"""


def head_view(
    title: str,
    groups: Sequence[tuple[str, list[str], list[str], list[Tensor], list[Sequence[int]]]],
    path: Path,
) -> Path:
    """Write the head view of ``groups`` to ``path``.

    Args:
        title: shown on the page.
        groups: (name, query tokens (Nq), key tokens (Nk), per layer weights (H, Nq, Nk),
            per layer the heads' indices in the original model).
    """
    data = [{"name": name, "queries": queries, "keys": keys,
             "maps": [[[[round(float(v), 4) for v in row] for row in head] for head in m.tolist()]
                      for m in maps],
             "heads": [list(h) for h in heads]}
            for name, queries, keys, maps, heads in groups]
    payload = json.dumps(data).replace("</", "<\\/")  # no early end of the script element
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(PAGE.format(title=html.escape(title), data=payload), encoding="utf-8")
    return path
