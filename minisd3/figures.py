"""What a displayed figure says about itself, saved beside its picture in the notebook.

A PNG in a saved notebook cannot be read back for its titles and labels, so every matplotlib figure a
lesson displays also carries a small JSON description (MIME type :data:`FIGURE_MIME`): its title, each
panel's title and axis labels, and its smallest text at display size. ``tests/test_saved_notebooks.py``
reads these from the committed lessons and fails on a figure a reader cannot read (:func:`figure_problems`).

    describe_figure(fig)    → {"title", "width_in", "display_scale", "smallest_text_pt", "axes": [...]}
    figure_problems(desc)   → ["no title", "panel 2: no y label", ...]  (empty: readable)
    record_figures()        → registers the description with IPython's display (a lesson's first cell)
"""
from __future__ import annotations

import matplotlib.pyplot as plt

FIGURE_MIME = "application/vnd.minisd3.figure+json"
DISPLAY_WIDTH_PX = 900
"""Width of a notebook's output column in pixels (JupyterLab on a laptop, GitHub's rendering): a picture
wider than this at the figure's dpi is shrunk to it, and its text with it."""
MIN_TEXT_PT = 8.0
"""Smallest readable text at display size, in points (issue 12: "text ≥ 8 pt at display size")."""


def _is_picture(ax) -> bool:
    """A panel drawn without axes (switched off, or an image without ticks): it has no axes to label."""
    return not ax.axison or (bool(ax.images) and not ax.get_xticks().size and not ax.get_yticks().size)


def _visible_texts(fig) -> list:
    texts = [t for t in fig.findobj(plt.Text) if t.get_visible() and t.get_text().strip()]
    return [t for t in texts if t.axes is None or t.axes.get_visible()]


def describe_figure(fig: plt.Figure) -> dict:
    """The readable parts of ``fig``: its title (the suptitle, else the title of its only panel besides
    colour bars), its width in inches, the scale at which a notebook shows it (≤ 1: :data:`DISPLAY_WIDTH_PX`
    over its width in pixels), its smallest visible text in points at that scale, and per visible panel
    its title, x and y labels, whether it is a picture (drawn without axes) or a colour bar."""
    fig.canvas.draw()  # tick labels exist only once drawn
    width_in = float(fig.get_size_inches()[0])
    scale = min(1.0, DISPLAY_WIDTH_PX / (width_in * fig.dpi))
    sizes = [t.get_fontsize() for t in _visible_texts(fig)]
    axes = []
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        axes.append({"title": " ".join(t for t in (ax.get_title("left"), ax.get_title(), ax.get_title("right")) if t),
                     "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(),
                     "picture": _is_picture(ax), "colorbar": hasattr(ax, "_colorbar")})
    suptitle = fig._suptitle.get_text() if fig._suptitle is not None else ""
    panels = [ax for ax in axes if not ax["colorbar"]]
    title = suptitle or (panels[0]["title"] if len(panels) == 1 else "")
    return {"title": title, "width_in": round(width_in, 2), "display_scale": round(scale, 3),
            "smallest_text_pt": round(min(sizes) * scale, 1) if sizes else None, "axes": axes}


def figure_problems(description: dict) -> list[str]:
    """What keeps a reader from reading a described figure (empty when nothing does).

    A figure needs a title (a suptitle when it has several panels besides colour bars); a panel that
    plots data needs x and y labels (panels drawn without axes need none); a colour bar needs a label;
    no text may be smaller than :data:`MIN_TEXT_PT` at display size. Panel titles are not required.
    """
    problems = [] if description["title"] else ["no title"]
    panels = description["axes"]
    for i, ax in enumerate(panels, 1):
        name = f"panel {i}" + (f" ({ax['title']!r})" if ax["title"] else "")
        if ax["colorbar"]:
            if not (ax["xlabel"] or ax["ylabel"]):
                problems.append(f"{name}: colour bar without a label")
            continue
        if ax["picture"]:
            continue
        if not ax["xlabel"]:
            problems.append(f"{name}: no x label")
        if not ax["ylabel"]:
            problems.append(f"{name}: no y label")
    smallest = description["smallest_text_pt"]
    if smallest is not None and smallest < MIN_TEXT_PT:
        problems.append(f"text of {smallest} pt at display size (at least {MIN_TEXT_PT:g} pt)")
    return problems


def record_figures() -> bool:
    """Attach :func:`describe_figure`'s JSON to every figure IPython displays; True when running in IPython."""
    try:
        from IPython import get_ipython
        from IPython.core.formatters import JSONFormatter
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None:
        return False
    formatters = shell.display_formatter.formatters
    if FIGURE_MIME not in formatters:
        formatter = JSONFormatter(parent=shell.display_formatter)
        formatter.format_type = FIGURE_MIME
        formatters[FIGURE_MIME] = formatter
    formatters[FIGURE_MIME].for_type(plt.Figure, describe_figure)
    return True
