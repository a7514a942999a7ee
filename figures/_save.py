"""The one place figures are written: PNG and PDF side by side, then the figure is closed."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

DPI = 150


def save_png_pdf(fig, stem: Path) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf``; close ``fig``; return both paths."""
    paths = [Path(f"{stem}.{ext}") for ext in ("png", "pdf")]
    for path in paths:
        fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return paths
