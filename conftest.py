"""Test-wide settings: every lesson runs in fast mode and draws static figures instead of widgets.

Set here, before any kernel starts, so notebooks run by nbval inherit them.
"""
import os

os.environ.setdefault("MINISD3_FAST", "1")
os.environ.setdefault("MINISD3_STATIC", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
