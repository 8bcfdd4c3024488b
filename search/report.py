"""Dashboard: compute what to draw (pure, tested), then render one self-contained plotly page."""
from __future__ import annotations

import html
from pathlib import Path

from .objectives import for_budget
from .pareto import feasible, front, hypervolume
from .run_dir import atomic_write_text

RUN_COLORS = ("#1f77b4", "#9467bd", "#8c564b", "#17becf", "#e377c2", "#7f7f7f")


def history(rows: list[dict], budget: dict) -> list[dict]:
    """After each completed trial (in trial order): hypervolume within the budget, best feasible quality
    (accuracy, or a language model's KLD / agreement / perplexity ratio; key `best_feasible_quality`)."""
    q = for_budget(budget)[0]
    out, seen = [], []
    for r in sorted(rows, key=lambda r: r["trial"]):
        seen.append(r["metrics"])
        ok = [m[q.name] for m in seen if feasible(m, budget)]
        out.append({"trial": r["trial"], "hypervolume": hypervolume(seen, budget),
                    "best_feasible_quality": (max(ok) if q.sign > 0 else min(ok)) if ok else None})
    return out


def front_info(rows: list[dict], budget: dict, teacher: dict | None, selected_trial: int | None,
               importances: dict | None = None) -> dict:
    """Points split into front / other feasible / infeasible, plus the teacher, the selected trial,
    the search's progress over time and (when given) parameter importances for accuracy."""
    ok = {r["trial"] for r in rows if feasible(r["metrics"], budget)}
    front_ids = {r["trial"] for r in front([r["metrics"] | {"trial": r["trial"]} for r in rows if r["trial"] in ok],
                                           for_budget(budget))}
    groups = {"front": [], "feasible": [], "infeasible": []}
    for r in rows:
        key = "front" if r["trial"] in front_ids else "feasible" if r["trial"] in ok else "infeasible"
        groups[key].append(r)
    selected = next((r for r in rows if r["trial"] == selected_trial), None)
    return {"groups": groups, "teacher": teacher, "selected": selected, "budget": budget, "rows": rows,
            "history": history(rows, budget), "importances": importances or {}}


def _axis(label: str, values: list) -> dict:
    """A parallel-coordinates axis: numbers as they are; a categorical knob (strings, or numbers mixed with
    strings such as group_size 32/64/channel) as one tick per option. Not sampled in a trial -> blank."""
    present = [v for v in values if v is not None]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return {"label": label, "values": [float("nan") if v is None else v for v in values]}
    options = sorted({str(v) for v in present})
    return {"label": label, "values": [float("nan") if v is None else options.index(str(v)) for v in values],
            "tickvals": list(range(len(options))), "ticktext": options}


def _hover(run: str, r: dict, budget: dict) -> str:
    m = r["metrics"]
    q, lat, _ = for_budget(budget)
    recipe = "<br>".join(f"{k} = {v}" for k, v in r["params"].items())
    return (f"{html.escape(run)} trial {r['trial']}<br>{q.name} {m[q.name]:.4f}<br>{lat.name} "
            f"{m[lat.name]:.2f} ms ({m['latency_source']})<br>memory {m['memory_mb']:.2f} MB<br>{recipe}")


def render(runs: list[tuple[str, dict]], path: Path, title: str) -> Path:
    """One page for one or several runs (fronts overlaid, one colour per run); plotly.js inlined."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    q, lat, _ = for_budget(runs[0][1]["budget"])  # runs overlaid on one page share their objectives
    fig = make_subplots(rows=1, cols=2, subplot_titles=(f"{q.name} vs {lat.name}", f"{q.name} vs memory"))
    for i, (name, info) in enumerate(runs):
        color, budget = RUN_COLORS[i % len(RUN_COLORS)], info["budget"]
        tag = f"{name}: " if len(runs) > 1 else ""
        for col, x in ((1, lat.name), (2, "memory_mb")):
            styles = {"front": (f"{tag}Pareto front (within budget)", color, 11, 1.0),
                      "feasible": (f"{tag}within budget", color, 7, 0.45),
                      "infeasible": (f"{tag}over budget", "#aaaaaa", 7, 0.6)}
            for key, (label, c, size, alpha) in styles.items():
                pts = sorted(info["groups"][key], key=lambda r: r["metrics"][x])
                fig.add_trace(go.Scatter(
                    x=[r["metrics"][x] for r in pts], y=[r["metrics"][q.name] for r in pts],
                    mode="markers", name=label, legendgroup=f"{name}-{key}", showlegend=col == 1,
                    marker={"color": c, "size": size, "opacity": alpha},
                    hovertext=[_hover(name, r, budget) for r in pts], hoverinfo="text"), row=1, col=col)
            for label, point, symbol, c in ((f"{tag}teacher (fp32)", info["teacher"], "star", "#d62728"),
                                            (f"{tag}selected", info["selected"] and info["selected"]["metrics"],
                                             "diamond-open", "#2ca02c")):
                if point:
                    fig.add_trace(go.Scatter(x=[point[x]], y=[point[q.name]], mode="markers", name=label,
                                             legendgroup=f"{name}-{label}", showlegend=col == 1,
                                             marker={"symbol": symbol, "size": 18, "color": c,
                                                     "line": {"width": 2, "color": c}}), row=1, col=col)
            fig.add_vline(x=budget[x], line_dash="dash", line_color=color, row=1, col=col,
                          annotation_text=f"{tag}budget {budget[x]:g}",
                          annotation_position=("top right", "bottom right")[i % 2])
            fig.add_vrect(x0=budget[x], x1=max(budget[x], _largest(runs, x)) * 1.05, fillcolor="#d62728",
                          opacity=0.05, line_width=0, row=1, col=col)  # the over-budget region
            fig.add_hline(y=budget[q.budget_key], line_dash="dot", line_color=color, row=1, col=col,
                          annotation_text=f"{tag}{'floor' if q.sign > 0 else 'ceiling'} {budget[q.budget_key]:.4f}",
                          annotation_position=("top left", "bottom left")[i % 2])
    for col, x in ((1, lat.name), (2, "memory_mb")):
        fig.update_xaxes(title_text=x, row=1, col=col)
        fig.update_yaxes(title_text="validation accuracy" if q.name == "accuracy" else f"{q.name} ({q.unit})",
                         row=1, col=col)
    fig.update_layout(title=title, height=600, template="plotly_white")
    divs = [fig.to_html(include_plotlyjs=True, full_html=False, div_id="fronts")]  # inlined: works offline
    divs += [f.to_html(include_plotlyjs=False, full_html=False, div_id=name) for name, f in _extra_figures(runs)]
    return _write(path, title, divs, runs)


def _extra_figures(runs: list[tuple[str, dict]]):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    q, lat, _ = for_budget(runs[0][1]["budget"])
    cube = go.Figure()
    for i, (name, info) in enumerate(runs):
        rows = info["rows"]
        cube.add_trace(go.Scatter3d(
            x=[r["metrics"][lat.name] for r in rows], y=[r["metrics"]["memory_mb"] for r in rows],
            z=[r["metrics"][q.name] for r in rows], mode="markers", name=name,
            marker={"size": 5, "color": RUN_COLORS[i % len(RUN_COLORS)]},
            hovertext=[_hover(name, r, info["budget"]) for r in rows], hoverinfo="text"))
    cube.update_layout(title="all three objectives", height=600, template="plotly_white",
                       scene={"xaxis_title": lat.name, "yaxis_title": "memory_mb", "zaxis_title": q.name})
    yield "objectives-3d", cube

    name, info = runs[0]
    rows = info["rows"]
    if rows:
        dims = [_axis(k, [r["params"].get(k) for r in rows]) for k in sorted({k for r in rows for k in r["params"]})]
        dims += [{"label": m, "values": [r["metrics"][m] for r in rows]}
                 for m in (lat.name, "memory_mb", q.name)]
        par = go.Figure(go.Parcoords(dimensions=dims, line={"color": [r["metrics"][q.name] for r in rows],
                                                            "colorscale": "Viridis", "showscale": True}))
        par.update_layout(title=f"knobs vs metrics ({name})", height=500)
        yield "parallel", par

    prog = make_subplots(rows=1, cols=3, subplot_titles=("hypervolume within the budget",
                                                         f"best {q.name} within every budget",
                                                         f"knob importance for {q.name} (PED-ANOVA)"))
    for i, (name, info) in enumerate(runs):
        color = RUN_COLORS[i % len(RUN_COLORS)]
        hist = info["history"]
        prog.add_trace(go.Scatter(x=[h["trial"] for h in hist], y=[h["hypervolume"] for h in hist],
                                  mode="lines+markers", name=f"{name} hypervolume", line={"color": color}), 1, 1)
        prog.add_trace(go.Scatter(x=[h["trial"] for h in hist], y=[h["best_feasible_quality"] for h in hist],
                                  mode="lines+markers", name=f"{name} best feasible {q.name}",
                                  line={"color": color, "dash": "dot"}), 1, 2)
        imp = info["importances"]
        prog.add_trace(go.Bar(x=list(imp.values()), y=list(imp.keys()), orientation="h", name=f"{name} importance",
                              marker={"color": color}), 1, 3)
    prog.update_xaxes(title_text="trial", row=1, col=1)
    prog.update_xaxes(title_text="trial", row=1, col=2)
    prog.update_layout(height=450, template="plotly_white", title="the search over time")
    yield "progress", prog


def _largest(runs: list[tuple[str, dict]], key: str) -> float:
    values = [r["metrics"][key] for _, info in runs for g in info["groups"].values() for r in g]
    values += [info["teacher"][key] for _, info in runs if info["teacher"]]
    return max(values, default=0.0)


SORT_JS = """<script>
// click a header to sort the front table (numbers numerically)
document.querySelectorAll('#front-table th').forEach((th, col) => th.addEventListener('click', () => {
  const table = th.closest('table'), rows = Array.from(table.querySelectorAll('tr')).slice(1);
  const asc = th.dataset.asc !== '1'; th.dataset.asc = asc ? '1' : '0';
  const key = r => { const t = r.children[col].textContent; const n = parseFloat(t); return isNaN(n) ? t : n; };
  rows.sort((a, b) => (key(a) > key(b) ? 1 : key(a) < key(b) ? -1 : 0) * (asc ? 1 : -1));
  rows.forEach(r => table.appendChild(r));
}));
</script>"""


def _write(path: Path, title: str, divs: list[str], runs: list[tuple[str, dict]]) -> Path:
    q, lat, _ = for_budget(runs[0][1]["budget"])
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{r['trial']}</td><td>{r['metrics'][q.name]:.4f}</td>"
        f"<td>{r['metrics'][lat.name]:.2f}</td><td>{r['metrics']['memory_mb']:.2f}</td>"
        f"<td>{html.escape(r.get('label', ''))}</td></tr>"
        for name, info in runs for r in sorted(info["groups"]["front"], key=lambda r: -q.sign * r["metrics"][q.name]))
    head = "p99 ms" if lat.name == "p99_latency_ms" else f"{lat.name}"
    table = ("<h3>Pareto front (within budget)</h3><table id='front-table' border=1 cellpadding=4 "
             f"style='border-collapse:collapse'><tr><th>run</th><th>trial</th><th>{q.name}</th><th>{head}</th>"
             f"<th>memory MB</th><th>recipe</th></tr>{rows}</table>")
    atomic_write_text(path, f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                            f"</head><body style='font-family:sans-serif'>{''.join(divs)}{table}{SORT_JS}</body></html>")
    return path
