"""The course's own tooling: what runs around the lessons, not what they teach.

    results     the result a check returns, shared by the checks and the grader, and how it leaves the kernel
    checks      checks the practice notebooks call (one module per lesson)
    check_cells how the solutions mark their check cells and declare each one's points
    exercises   practice notebooks generated from solutions/ (the single source)
    nbgrader_metadata  nbgrader's cell metadata in the solutions, derived from their check cells and solution blocks
    grading     grade one notebook: check cells restored, run cell by cell, each check scored from its result
    gradebook   grade a class: many notebooks, a CSV row each, a summary per check
    notebooks   execute notebooks headlessly (lessons top to bottom; practice cell by cell with time limits)
    plotting    figures and interactive explorers with a static fallback
    lesson_code which package code each lesson imports (read from its import lines), for the website's links
    site_pages  the website's own pages (landing, practice, instructors, API) as MyST text, from README and solutions
    site        the course website, built by Sphinx from the committed notebooks without running them

The course imports the engine and lesson modules; nothing below imports it.
"""
