"""The figure description saved beside every lesson figure, and the problems it catches (issue 12, item 10)."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from minisd3.figures import describe_figure, figure_problems  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_a_titled_labelled_plot_has_no_problem():
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot([1, 2, 3], [2, 1, 3])
    ax.set(title="loss against steps", xlabel="step", ylabel="loss")
    assert figure_problems(describe_figure(fig)) == []


def test_missing_title_and_labels_are_each_named():
    fig, axes = plt.subplots(1, 2, figsize=(6, 3))
    for ax in axes:
        ax.plot([0, 1], [0, 1])
    axes[0].set(title="a", xlabel="x")
    problems = figure_problems(describe_figure(fig))
    assert problems == ["no title", "panel 1 ('a'): no y label", "panel 2: no x label", "panel 2: no y label"]


def test_an_image_without_axes_needs_no_labels_but_a_colour_bar_does():
    fig, ax = plt.subplots(figsize=(4, 4))
    image = ax.imshow(np.zeros((4, 4)))
    ax.set_axis_off()
    ax.set_title("an image")
    colour_bar = fig.colorbar(image)
    assert figure_problems(describe_figure(fig)) == ["panel 2: colour bar without a label"]
    colour_bar.set_label("value")
    assert figure_problems(describe_figure(fig)) == []


def test_text_is_measured_at_the_size_a_notebook_shows_the_figure():
    fig, ax = plt.subplots(figsize=(18, 3), dpi=100)  # 1800 px, twice the output column: shown at half size
    ax.plot([0, 1], [0, 1])
    ax.set(title="wide", xlabel="x", ylabel="y")
    ax.tick_params(labelsize=12)
    for text in (ax.title, ax.xaxis.label, ax.yaxis.label):
        text.set_fontsize(12)
    description = describe_figure(fig)
    assert description["display_scale"] == 0.5 and description["smallest_text_pt"] == 6.0
    assert figure_problems(description) == ["text of 6.0 pt at display size (at least 8 pt)"]


def test_a_suptitle_titles_a_figure_of_several_panels():
    fig, axes = plt.subplots(1, 2, figsize=(6, 3))
    for ax in axes:
        ax.plot([0, 1], [0, 1])
        ax.set(title="panel", xlabel="x", ylabel="y")
    assert figure_problems(describe_figure(fig)) == ["no title"]
    fig.suptitle("two panels")
    assert figure_problems(describe_figure(fig)) == []
