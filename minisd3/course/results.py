"""A check's result: the one type the checks make (:mod:`minisd3.course.checks`) and the grader
reads (:mod:`minisd3.course.grading`), and the log it travels in from a notebook's kernel to the grader.

A check returns a :class:`CheckResult` and shows it: it prints one line for the learner::

    [check] shift_time: PASS
    [check] shift_time: FAIL — applied the shift twice; apply it once

and appends the result to this process's log. The grader never reads the line, nor anything else a
cell prints or displays: right after each check cell it evaluates :data:`KERNEL_PROBE` in the kernel,
silently (a Jupyter ``user_expressions`` request, whose answer comes back on the shell channel and
never in the notebook), which hands over the results logged since its previous call. It asks after
every cell, so only what a check cell's own run logged is counted for that check.

This module imports nothing heavy, so a kernel answers the probe without loading torch.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

KERNEL_PROBE = ("(lambda log: log.take_results() if log is not None else '[]')"
                "(__import__('sys').modules.get('minisd3.course.results'))")
"""The expression the grader evaluates in a notebook's kernel after each cell: the JSON text of
:func:`take_results` (``'[]'`` while the kernel has not imported this module)."""


@dataclass(frozen=True)
class CheckResult:
    """What a check found: ``passed``, the ``mistake`` it named and a ``message`` in a learner's words.

    ``mistake`` is a short stable identifier of the wrong variant the learner's function matched
    (``"sign_flipped"``, ``"missing_sqrt"``, …), one per named mistake of the check; ``None`` when the
    check passed or the failure is not one of the catalogued variants (a wrong shape or type, an
    exception, values off in no usual way).
    """

    name: str
    passed: bool
    mistake: str | None
    message: str

    @property
    def line(self) -> str:
        """The text line: ``[check] NAME: PASS`` or ``[check] NAME: FAIL — message``."""
        return f"[check] {self.name}: PASS" if self.passed else f"[check] {self.name}: FAIL — {self.message}"

    def to_dict(self) -> dict[str, object]:
        """The fields as a JSON object."""
        return {"name": self.name, "passed": self.passed, "mistake": self.mistake, "message": self.message}

    @classmethod
    def from_dict(cls, data: object) -> CheckResult:
        """The result a :meth:`to_dict` object describes; ``ValueError`` when ``data`` is not one."""
        if isinstance(data, dict):
            name, passed, mistake, message = (data.get(key) for key in ("name", "passed", "mistake", "message"))
            if (isinstance(name, str) and isinstance(passed, bool) and isinstance(message, str)
                    and (mistake is None or isinstance(mistake, str))):
                return cls(name, passed, mistake, message)
        raise ValueError(f"expected a check result {{name, passed, mistake, message}}, got {data!r}")

    def show(self) -> None:
        """Print the line for the learner and log the result for the grader (:func:`take_results`)."""
        print(self.line)
        _LOG.append(self)


_LOG: list[CheckResult] = []
"""Every result shown in this process since :func:`take_results` last emptied it, in order."""

def take_results() -> str:
    """The results shown since the last call, as a JSON list of :meth:`CheckResult.to_dict` objects;
    the log is emptied."""
    taken = [result.to_dict() for result in _LOG]
    _LOG.clear()
    return json.dumps(taken, ensure_ascii=False)


def parse_results(text: str) -> list[CheckResult]:
    """The results in a :func:`take_results` text; ``ValueError`` when it is not one."""
    try:
        items = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"expected the JSON list of check results, got {text[:80]!r}") from err
    if not isinstance(items, list):
        raise ValueError(f"expected a JSON list of check results, got {type(items).__name__}")
    return [CheckResult.from_dict(item) for item in items]
