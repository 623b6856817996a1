"""The course's own tooling: what runs around the lessons, not what they teach.

    checks      checks the practice notebooks call (one result type, one module per lesson)
    exercises   practice notebooks generated from solutions/ (the single source)
    grading     run a student's notebook and score its checks; class reports
    notebooks   execute lessons (full length or fast), headless
    plotting    figures and interactive explorers with a static fallback

The course imports the engine and lesson modules; nothing below imports it.
"""
