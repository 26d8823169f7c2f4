"""Pictures for the lessons: a text chart always, and a PNG too when matplotlib is installed (`pip install
-e ".[plots]"`).

    >>> print(chart("tokens per forward", ["ngram", "early-exit:6"], {"code": [2.5, 1.5]}, width=10))
    tokens per forward
      ngram         code  ██████████ 2.500
      early-exit:6  code  ██████     1.500
"""

from __future__ import annotations

import os
from pathlib import Path

FILLS = "█▒░▓#=*+"  # one fill character per series


def out_dir() -> Path:
    """Where PNGs go: `$TINYSPEC_OUT` if set; `lessons/out/` in a source checkout; else `./tinyspec-out/`."""
    env = os.environ.get("TINYSPEC_OUT")
    if env:
        return Path(env).expanduser()
    repo = Path(__file__).resolve().parent.parent
    if (repo / "pyproject.toml").exists() and (repo / "lessons").is_dir():
        return repo / "lessons" / "out"
    return Path.cwd() / "tinyspec-out"


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def text_chart(title: str, labels, series: dict, width: int = 40, fmt: str = "{:.3f}") -> str:
    """Horizontal bars, one row per (label, series), scaled so the largest value fills `width` characters."""
    values = [float(v) for vs in series.values() for v in vs]
    top = max([abs(v) for v in values] + [1e-300])
    label_w = max(len(str(label)) for label in labels)
    name_w = max(len(str(name)) for name in series)
    lines = [title]
    for i, label in enumerate(labels):
        for j, (name, vs) in enumerate(series.items()):
            v = float(vs[i])
            bar = FILLS[j % len(FILLS)] * int(round(width * max(v, 0.0) / top))
            shown_label = str(label) if j == 0 else ""
            lines.append(f"  {shown_label:<{label_w}}  {str(name):<{name_w}}  {bar:<{width}} {fmt.format(v)}")
    return "\n".join(lines)


MARKERS = "*o+x#@%&"  # one marker per series in a text line chart


def text_line_chart(title: str, xs, series: dict, height: int = 12, col: int = 5, fmt: str = "{:.3f}") -> str:
    """Series over numeric xs as points on a character grid (one marker per series), with a legend."""
    values = [float(v) for vs in series.values() for v in vs]
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    grid = [[" "] * (col * len(xs)) for _ in range(height)]
    for j, vs in enumerate(series.values()):
        for i, v in enumerate(vs):
            row = height - 1 - int(round((float(v) - lo) / span * (height - 1)))
            for c in (i * col + col // 2, i * col + col // 2 - 1, i * col + col // 2 + 1):  # dodge a taken cell
                if grid[row][c] == " ":
                    grid[row][c] = MARKERS[j % len(MARKERS)]
                    break
    labels = {0: fmt.format(hi), height - 1: fmt.format(lo), (height - 1) // 2: fmt.format(lo + span / 2)}
    label_w = max(len(text) for text in labels.values())
    lines = [title]
    for r, cells in enumerate(grid):
        lines.append(f"  {labels.get(r, ''):>{label_w}} |" + "".join(cells).rstrip())
    lines.append(f"  {'':>{label_w}} +" + "-" * (col * len(xs)))
    lines.append(f"  {'':>{label_w}}  " + "".join(f"{str(x):^{col}}" for x in xs).rstrip())
    lines.append("  " + "   ".join(f"{MARKERS[j % len(MARKERS)]} {name}" for j, name in enumerate(series)))
    return "\n".join(lines)


def save_png(path, title: str, labels, series: dict, kind: str = "bar", xlabel: str = "", ylabel: str = "",
             hline: float | None = None) -> Path | None:
    """Save the chart as a PNG with matplotlib; None (and nothing written) when matplotlib is not installed.

    kind "bar": grouped bars per label; kind "line": one line per series over numeric labels."""
    if not have_matplotlib():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    n = len(series)
    if kind == "line":
        for name, vs in series.items():
            ax.plot(list(labels), list(vs), marker="o", label=str(name))
    else:
        x = range(len(labels))
        w = 0.8 / max(n, 1)
        for j, (name, vs) in enumerate(series.items()):
            ax.bar([i + (j - (n - 1) / 2) * w for i in x], list(vs), width=w, label=str(name))
        ax.set_xticks(list(x))
        ax.set_xticklabels([str(label) for label in labels], rotation=30 if len(labels) > 6 else 0)
    if hline is not None:
        ax.axhline(hline, color="grey", linestyle="--", linewidth=1)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if n > 1:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def chart(title: str, labels, series: dict, png: str | None = None, kind: str = "bar", xlabel: str = "",
          ylabel: str = "", width: int = 40, fmt: str = "{:.3f}", hline: float | None = None) -> str:
    """The text chart (bars, or points on a grid for kind "line"); if `png` names a file (inside out_dir()) and
    matplotlib is installed, also that PNG."""
    if kind == "line":
        text = text_line_chart(title, labels, series, fmt=fmt)
    else:
        text = text_chart(title, labels, series, width, fmt)
    if png is not None:
        saved = save_png(out_dir() / png, title, labels, series, kind, xlabel, ylabel, hline)
        text += f"\n  (picture: {saved})" if saved else "\n  (no picture: matplotlib is not installed)"
    return text
