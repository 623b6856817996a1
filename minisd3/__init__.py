"""minisd3: Stable Diffusion 3, built up lesson by lesson.

The course's time direction is SD3's: t = 0 is data, t = 1 is noise; sampling runs 1 → 0.
"""
from .env import env_report, fast_mode, full_or_fast, get_device
from .seeding import make_generator, seed_everything

__all__ = ["env_report", "fast_mode", "full_or_fast", "get_device", "make_generator", "seed_everything"]
__version__ = "0.1.0"
