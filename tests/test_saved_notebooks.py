"""What a reader sees in the committed lessons without running them: loops shown finished, the
environment report once, no widget state that only a live kernel could draw."""
from pathlib import Path

import nbformat
import pytest

LESSONS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def outputs(path):
    nb = nbformat.read(path, as_version=4)
    return [(i, o) for i, c in enumerate(nb.cells) if c.cell_type == "code" for o in c.get("outputs", [])]


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_saved_progress_is_finished_and_no_widget_is_needed(path):
    for index, output in outputs(path):
        data = output.get("data", {})
        assert "application/vnd.jupyter.widget-view+json" not in data, f"cell {index}: a widget view was saved"
        text = output.get("text", "") + str(data.get("text/plain", ""))
        for line in text.splitlines():
            if "it/s]" in line or "s/it]" in line:  # a tqdm line
                assert "100%" in line, f"cell {index}: a progress bar saved unfinished: {line!r}"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_the_environment_report_prints_once(path):
    reports = [o for _, o in outputs(path) if "cpu threads" in (o.get("text", "") + str(o.get("data", {})))]
    assert len(reports) == 1, f"{len(reports)} environment reports"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_every_saved_figure_has_a_title_labelled_axes_and_readable_text(path):
    from minisd3.figures import FIGURE_MIME, figure_problems

    pictures = [(i, o) for i, o in outputs(path) if "image/png" in o.get("data", {})]
    assert pictures, "a lesson with no figure"
    for index, output in pictures:
        description = output["data"].get(FIGURE_MIME)
        assert description is not None, f"cell {index}: a figure saved without its description (re-run the lesson)"
        assert figure_problems(description) == [], f"cell {index}: {figure_problems(description)}"
