"""Test-wide settings: every lesson runs in fast mode, on one thread, and draws static figures instead of widgets.

Set here, before any kernel starts, so notebooks run by nbval inherit them.
"""
import os

os.environ.setdefault("MINISD3_FAST", "1")
os.environ.setdefault("MINISD3_STATIC", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# The lessons' networks are tiny: one thread is as fast as two on an idle machine and far faster on a
# busy one, where two threads spin-wait (measured 3–20× slower); notebook kernels inherit this.
os.environ.setdefault("OMP_NUM_THREADS", "1")
