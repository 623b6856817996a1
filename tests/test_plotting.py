"""Figures a student can read: ticks where the measurements are, each curve on its own x values
(steps or field evaluations), and a suptitle that keeps clear of fixed-aspect panels."""
import matplotlib.pyplot as plt
import pytest
import torch

from minisd3.course.plotting import explorer, plot_against_steps, plot_points, settle_layout


def test_ticks_sit_at_the_measured_steps():
    fig, ax = plt.subplots()
    steps = [2, 5, 10, 20, 50, 100, 200]
    plot_against_steps(ax, steps, {"DDIM": [3.5, 0.8, 0.4, 0.3, 0.27, 0.25, 0.25]}, "quality", "SW", logy=True)
    assert list(ax.get_xticks()) == steps
    assert [label.get_text() for label in ax.get_xticklabels()] == [str(s) for s in steps]
    assert len(ax.xaxis.get_minorticklocs()) == 0
    plt.close(fig)


def test_each_curve_can_have_its_own_x_values():
    fig, ax = plt.subplots()
    nfe = {"euler": [1, 2, 4], "heun": [2, 4, 8]}
    plot_against_steps(ax, nfe, {"euler": [3.0, 1.0, 0.5], "heun": [2.0, 0.3, 0.1]}, "quality", "SW",
                       xlabel="field evaluations")
    assert [list(line.get_xdata()) for line in ax.get_lines()] == [[1, 2, 4], [2, 4, 8]]
    assert list(ax.get_xticks()) == [1, 2, 4, 8]
    assert ax.get_xlabel() == "field evaluations"
    plt.close(fig)


def test_x_values_that_do_not_match_a_curve_are_named():
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="steps: expected 3 x values for curve 'heun', got 2"):
        plot_against_steps(ax, {"heun": [1, 2]}, {"heun": [1.0, 0.5, 0.2]}, "quality", "SW")
    with pytest.raises(ValueError, match="curve 'euler', got none"):
        plot_against_steps(ax, {"heun": [1, 2]}, {"euler": [1.0, 0.5]}, "quality", "SW")
    plt.close(fig)


@pytest.mark.parametrize("rows, cols, size", [(1, 4, (17, 4.5)), (1, 5, (18, 3.9)), (2, 6, (17, 6))])
def test_settled_suptitle_and_rows_keep_clear_of_square_panels(rows, cols, size):
    # constrained layout alone lets these touch: it sizes margins from the stale first-draw panels
    fig, axes = plt.subplots(rows, cols, figsize=size, layout="constrained", squeeze=False)
    for ax in axes.ravel():
        plot_points(ax, torch.zeros(3, 2), title="a panel title of typical length, t = 0.75")
    fig.suptitle("an overall title above every panel")
    settle_layout(fig)
    renderer = fig.canvas.get_renderer()
    suptitle_bottom = fig._suptitle.get_window_extent(renderer).y0
    assert suptitle_bottom > max(ax.title.get_window_extent(renderer).y1 for ax in axes[0]) + 2
    for upper, lower in zip(axes[:-1], axes[1:]):
        lowest_label = min(ax.xaxis.label.get_window_extent(renderer).y0 for ax in upper)
        assert lowest_label > max(ax.title.get_window_extent(renderer).y1 for ax in lower) + 2
    plt.close(fig)


def test_explorer_without_widgets_draws_one_composed_figure(monkeypatch):
    """Headless (nbval, MINISD3_STATIC=1) the explorer's fallback is one figure: a grid with a row per
    value of the first static control, each panel drawn by ``render`` into its own axes."""
    monkeypatch.setenv("MINISD3_STATIC", "1")
    shown = []
    monkeypatch.setattr(plt, "show", lambda: shown.append(plt.gcf()))
    drawn = []

    def render(ax, steps, round_):
        drawn.append((steps, round_))
        ax.set_title(f"{steps} steps, round {round_}")

    assert explorer(render, controls={"steps": [1, 2, 8], "round_": [0, 1]},
                    static={"steps": [1, 8], "round_": [0, 1]}, title="overall") is None
    assert len(shown) == 1  # one figure, shown once
    fig = shown[0]
    assert drawn == [(1, 0), (1, 1), (8, 0), (8, 1)]
    assert [ax.get_title() for ax in fig.axes] == ["1 steps, round 0", "1 steps, round 1", "8 steps, round 0",
                                                   "8 steps, round 1"]
    assert fig.axes[2].get_subplotspec().rowspan.start == 1 and fig._suptitle.get_text() == "overall"
    plt.close(fig)


def test_explorer_panels_may_be_tall_and_fill_their_space(monkeypatch):
    """``panel_size=(w, h)`` gives each static panel that size; a picture panel then fills most of it."""
    import numpy as np

    monkeypatch.setenv("MINISD3_STATIC", "1")
    shown = []
    monkeypatch.setattr(plt, "show", lambda: shown.append(plt.gcf()))

    def render(ax, w):
        ax.imshow(np.zeros((60, 50, 3)))
        ax.set_axis_off()
        ax.set_title(f"w = {w}")

    explorer(render, controls={"w": [1, 3]}, static={"w": [1, 3]}, panel_size=(5.0, 6.0), title="tall")
    fig = shown[0]
    assert tuple(fig.get_size_inches()) == pytest.approx((5.0, 2 * 6.0 + 0.6))
    image = fig.axes[0].get_images()[0].get_window_extent()
    assert image.width > 0.9 * 5.0 * fig.dpi
    plt.close(fig)


def test_digit_frames_take_the_border_colour_and_black_stays_the_default():
    from matplotlib.colors import to_rgba

    from minisd3.course.plotting import plot_digits

    images = torch.linspace(-1, 1, 2 * 64).reshape(2, 1, 8, 8)
    for border, expected in ((None, to_rgba("black")), ("0.55", to_rgba("0.55"))):
        fig, ax = plt.subplots()
        plot_digits(ax, images, "two digits", nrow=2, **({} if border is None else {"border": border}))
        image = ax.get_images()[0]
        canvas = image.get_array()
        assert canvas.shape == (10, 19) and canvas.mask[0].all() and canvas.mask[:, 9].all()  # the frames
        assert tuple(image.to_rgba(canvas)[0, 0]) == pytest.approx(expected, abs=1 / 255)
        assert not canvas.mask[1:9, 1:9].any()
        plt.close(fig)


def test_a_picture_is_shown_pixel_for_pixel_under_its_wrapped_title():
    import io

    import numpy as np
    from PIL import Image

    from minisd3.course.plotting import show_picture
    from minisd3.figures import describe_figure, figure_problems

    pixels = np.random.default_rng(0).integers(0, 256, (120, 300, 3), dtype=np.uint8)
    fig = show_picture(Image.fromarray(pixels), "a title long enough to need wrapping at three hundred pixels " * 2)
    assert fig.get_size_inches()[0] * fig.dpi == pytest.approx(300)
    ax = fig.axes[0]
    assert ax.get_position().height * fig.get_size_inches()[1] * fig.dpi == pytest.approx(120)
    assert "\n" in ax.get_title()
    assert figure_problems(describe_figure(fig)) == []
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    drawn = np.asarray(Image.open(buffer).convert("RGB"))
    assert (drawn[-120:] == pixels).all()  # the picture's own pixels, unscaled
    with pytest.raises(ValueError, match="title"):
        show_picture(pixels, " ")
    plt.close("all")
