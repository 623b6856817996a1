"""Plot helpers shared by the lessons: point clouds, vector fields, trajectories, digit grids,
curves against steps, adherence beside its chance rate, a layout pass that keeps suptitles clear of
fixed-aspect panels, a ready-made picture (a labelled sample grid) shown pixel for pixel under a title,
and an ipywidgets explorer that falls back to one composed static figure.

Each helper draws on a given matplotlib ``Axes`` and sets a title and axis labels; the lesson
adds the sentence that says what to see.
"""
from __future__ import annotations

import itertools
import textwrap
from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.ticker import NullLocator

from ..adherence import ATTRIBUTES
from ..digits import to_unit_range
from ..env import static_mode
from ..ode import Trajectory, VelocityField


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().float().cpu().numpy()


def plot_points(ax, points: torch.Tensor, title: str, color="tab:blue", size: float = 2.0, lim: float = 5.0,
                alpha: float = 0.5, label: str | None = None):
    """Scatter a (N, 2) point cloud on a square [−lim, lim]² frame."""
    p = _np(points)
    ax.scatter(p[:, 0], p[:, 1], s=size, c=color, alpha=alpha, linewidths=0, label=label)
    ax.set(title=title, xlabel="$x_1$", ylabel="$x_2$", xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal")
    return ax


def plot_vector_field(ax, velocity: VelocityField, t: float, title: str, lim: float = 5.0, n: int = 21,
                      color="tab:gray"):
    """Quiver plot of v(z, t) on an n×n grid at a fixed time t."""
    axis = torch.linspace(-lim, lim, n)
    grid = torch.cartesian_prod(axis, axis)
    with torch.no_grad():
        v = _np(velocity(grid, torch.full((grid.shape[0],), float(t))))
    g = _np(grid)
    ax.quiver(g[:, 0], g[:, 1], v[:, 0], v[:, 1], color=color, angles="xy", width=0.003)
    ax.set(title=title, xlabel="$z_1$", ylabel="$z_2$", xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal")
    return ax


def plot_trajectories(ax, trajectory: Trajectory | torch.Tensor, title: str, n: int = 64, lim: float = 5.0,
                      color="tab:orange"):
    """Draw the first ``n`` paths of a 2-D trajectory (states (N+1, B, 2)): noise start ○, data end ●."""
    states = _np(trajectory.states if isinstance(trajectory, Trajectory) else trajectory)[:, :n]
    ax.plot(states[:, :, 0], states[:, :, 1], color=color, lw=0.7, alpha=0.7)
    ax.scatter(states[0, :, 0], states[0, :, 1], s=8, facecolors="none", edgecolors="k", lw=0.5, label="start (t = 1)")
    ax.scatter(states[-1, :, 0], states[-1, :, 1], s=8, c="k", label="end (t = 0)")
    ax.set(title=title, xlabel="$z_1$", ylabel="$z_2$", xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal")
    return ax


def plot_digits(ax, images: torch.Tensor, title: str, nrow: int = 8, border="black"):
    """Tile (N, 1, H, W) images in [−1, 1] into one grey picture with ``nrow`` per row (ink dark on
    white), each framed by one-pixel lines of colour ``border`` (black, the colour of the ink, by
    default; a mid grey such as ``"0.55"`` keeps the frames visible against ink and paper alike)."""
    imgs = _np(to_unit_range(images[:, 0]))
    n, h, w = imgs.shape
    rows = int(np.ceil(n / nrow))
    canvas = np.full((rows * (h + 1) + 1, nrow * (w + 1) + 1), np.nan)  # NaN: the frames
    for i, img in enumerate(imgs):
        r, c = divmod(i, nrow)
        canvas[1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + c * (w + 1): 1 + c * (w + 1) + w] = img
    ax.imshow(canvas, cmap=plt.get_cmap("gray_r").with_extremes(bad=border), vmin=0, vmax=1, interpolation="nearest")
    ax.set(title=title, xticks=[], yticks=[])
    return ax


def plot_against_steps(ax, steps: Sequence[int] | dict[str, Sequence[int]], curves: dict[str, Sequence[float]],
                       title: str, ylabel: str, logy: bool = False, xlabel: str = "number of sampling steps"):
    """One line per method: a metric (quality, straightness, error) against the number of steps.

    ``steps`` is the x value of each point, shared by all curves, or a dict giving each curve its
    own (for example field evaluations, which differ between Euler and Heun at the same steps).
    The x axis is logarithmic with its ticks at the measured values.
    """
    xs = steps if isinstance(steps, dict) else {name: steps for name in curves}
    for name, values in curves.items():
        if name not in xs or len(xs[name]) != len(values):
            got = len(xs[name]) if name in xs else "none"
            raise ValueError(f"steps: expected {len(values)} x values for curve {name!r}, got {got}")
        ax.plot(xs[name], values, marker="o", label=name)
    ax.set_xscale("log", base=2)
    ticks = sorted({x for name in curves for x in xs[name]})
    ax.set_xticks(ticks, [f"{x:g}" for x in ticks])
    ax.xaxis.set_minor_locator(NullLocator())
    if logy:
        ax.set_yscale("log")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.legend()
    ax.grid(alpha=0.3)
    return ax


def plot_adherence(ax, settings: Sequence[float], adherence: Sequence[dict[str, float]],
                   chance: Sequence[dict[str, float]], title: str, xlabel: str, logx: bool = False):
    """Prompt adherence per attribute against a swept setting (steps, guidance w, …), each attribute
    a solid line with its chance rate dashed in the same colour.

    ``adherence[k]`` and ``chance[k]`` are the reports (attribute → fraction in [0, 1]) measured at
    ``settings[k]``, e.g. ``result["adherence"]`` and ``result["chance"]`` of
    :func:`minisd3.engine.evaluation.evaluate`; an attribute missing from the reports (``relation``
    without two-group prompts) is left out. Raises a ValueError when the three lengths differ.
    """
    if not len(settings) == len(adherence) == len(chance):
        raise ValueError(f"adherence, chance: expected one report per setting ({len(settings)}), got "
                         f"{len(adherence)} and {len(chance)}")
    for k, attribute in enumerate((*ATTRIBUTES, "overall")):
        if not all(attribute in report for report in (*adherence, *chance)):
            continue
        color = "black" if attribute == "overall" else f"C{k}"
        ax.plot(settings, [r[attribute] for r in adherence], marker="o", color=color, label=attribute)
        ax.plot(settings, [r[attribute] for r in chance], linestyle="--", color=color, alpha=0.8)
    ax.plot([], [], linestyle="--", color="grey", label="chance (dashed, same colour)")
    if logx:
        ax.set_xscale("log", base=2)
    ax.set(title=title, xlabel=xlabel, ylabel="fraction of prompts right", ylim=(0, 1.02))
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return ax


def settle_layout(fig: plt.Figure, max_passes: int = 5) -> plt.Figure:
    """Lay ``fig`` out until its panels stop moving, so that titles, labels and the suptitle keep clear.

    Constrained layout sizes the room around each panel from where the panel sat on the previous
    draw. A fixed-aspect panel (``aspect="equal"``, as :func:`plot_points` draws) changes shape with
    the layout, so on the first draw that room is stale and a suptitle or the next row's titles can
    sit on the panel titles. Drawing until the positions repeat (two or three passes) settles it;
    call this just before ``plt.show()``.
    """
    before = None
    for _ in range(max_passes):
        fig.canvas.draw()
        now = np.array([ax.get_position().bounds for ax in fig.axes])
        if before is not None and np.allclose(now, before, atol=1e-5):
            break
        before = now
    return fig


def widgets_available() -> bool:
    """True in a live Jupyter kernel with ipywidgets, unless ``MINISD3_STATIC=1`` asks for figures."""
    if static_mode():
        return False
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def explorer(render: Callable[..., None], controls: dict[str, Sequence], static: dict[str, Sequence] | None = None,
             title: str = "", panel_size: float | tuple[float, float] = 4.2):
    """Explore ``render(ax, **values)`` with one slider per entry of ``controls``.

    ``render`` draws one view into the given ``Axes`` (with its own panel title). In a live
    Jupyter kernel with ipywidgets each slider move redraws one panel. Without a widget frontend
    (plain Python, nbval, ``MINISD3_STATIC=1``) it draws every combination of ``static``
    (default: the first value of each control) as the panels of **one** composed figure, a grid
    with one row per value of the first ``static`` entry, under the suptitle ``title``.
    ``panel_size`` is one panel's side in inches, or its (width, height) for a panel that is not
    square (a tall picture). Either way the panel fills its space (constrained layout), so the live
    panel is drawn at the size of a static one. It shows its output itself (so a notebook cell shows
    it once) and returns None.
    """
    panel_w, panel_h = (panel_size, panel_size) if np.isscalar(panel_size) else panel_size
    if widgets_available():
        import ipywidgets as widgets

        def draw(**values):
            fig, ax = plt.subplots(figsize=(panel_w, panel_h), layout="constrained")
            render(ax, **values)
            plt.show()

        ui = {name: widgets.SelectionSlider(options=list(options), description=name) for name, options in controls.items()}
        from IPython.display import display

        display(widgets.interactive(draw, **ui))
        return None
    static = static or {name: [options[0]] for name, options in controls.items()}
    names = list(static)
    combos = list(itertools.product(*(static[name] for name in names)))
    rows = len(static[names[0]])
    cols = len(combos) // rows
    fig, axes = plt.subplots(rows, cols, figsize=(panel_w * cols, panel_h * rows + 0.6), layout="constrained",
                             squeeze=False)
    for ax, combo in zip(axes.ravel(), combos):
        render(ax, **dict(zip(names, combo)))
    if title:
        fig.suptitle(title)
    settle_layout(fig)
    plt.show()
    return None


def plot_losses(ax, losses: dict[str, Sequence[float]], title: str, window: int = 50, logy: bool = True):
    """Training loss against step, one line per run, as a moving average over ``window`` steps.

    The smoothed value at step i is mean(loss[i − window + 1 … i]) (fewer steps at the start).
    """
    if not isinstance(window, int) or window < 1:
        raise ValueError(f"window: expected a positive int, got {window!r}")
    for name, values in losses.items():
        values = np.asarray(values, dtype=float)
        csum = np.cumsum(np.insert(values, 0, 0.0))
        counts = np.minimum(np.arange(1, len(values) + 1), window)
        ax.plot(np.arange(1, len(values) + 1), (csum[1:] - csum[np.arange(len(values)) + 1 - counts]) / counts,
                label=name)
    if logy:
        ax.set_yscale("log")
    ax.set(title=title, xlabel="training step", ylabel=f"loss ({window}-step moving average)")
    ax.legend()
    ax.grid(alpha=0.3)
    return ax


def show_picture(picture, title: str, fontsize: float = 12.0) -> plt.Figure:
    """A ready-made picture (a PIL image such as :func:`minisd3.engine.grids.labelled_grid`, or an
    (H, W, 3) uint8 array) as a figure with ``title`` above it, one picture pixel per figure pixel at
    the figure's dpi, so that the text drawn into the picture stays sharp; returns the figure (call
    ``plt.show()``).

    The title is wrapped to the picture's width. Shown as a matplotlib figure, the picture carries the
    description of :mod:`minisd3.figures` like any other figure (a picture panel under a title).
    """
    pixels = np.asarray(picture.convert("RGB") if hasattr(picture, "convert") else picture)
    if pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        raise ValueError(f"picture: expected an RGB image (PIL, or an (H, W, 3) array), got shape {pixels.shape}")
    if not title.strip():
        raise ValueError("title: expected a title for the picture, got an empty string")
    height, width = pixels.shape[:2]
    dpi = float(plt.rcParams["figure.dpi"])
    points_to_pixels = dpi / 72
    characters = max(20, int(width / (0.58 * fontsize * points_to_pixels)))  # DejaVu Sans: about 0.58 em a character
    lines = textwrap.wrap(title, characters)
    title_height = (len(lines) * 1.25 * fontsize + 8) * points_to_pixels
    fig = plt.figure(figsize=(width / dpi, (height + title_height) / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, height / (height + title_height)))
    ax.imshow(pixels, interpolation="none", aspect="auto")
    ax.set(xticks=[], yticks=[])  # no tick labels, even hidden ones
    ax.set_axis_off()
    ax.set_title("\n".join(lines), fontsize=fontsize)
    return fig
