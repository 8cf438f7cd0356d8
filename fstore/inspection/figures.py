"""Pictures of :class:`ActivationGrid` and :class:`FilterGrid`, drawn with matplotlib's Agg.

Figures are built with ``matplotlib.figure.Figure`` and an Agg canvas, never pyplot, so no GUI
backend or global state is touched. Each tile shows exactly the array the library returned.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from fstore.errors import OutputPathError
from fstore.fsutil import commit_file, tmp_path_for

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from fstore.inspection.featuremaps import ActivationGrid, FilterGrid

DEFAULT_CMAP = "viridis"
_TILE_INCHES = 1.1


def _grid_figure(panels: int, title: str) -> tuple[Figure, list]:
    import textwrap

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = math.ceil(math.sqrt(panels))
    rows = math.ceil(panels / cols)
    lines = textwrap.wrap(title, width=max(40, int(cols * _TILE_INCHES * 14)))
    head = 0.3 + 0.18 * len(lines)  # inches above the tiles, one line of title each
    fig = Figure(figsize=(cols * _TILE_INCHES, rows * _TILE_INCHES + head), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle("\n".join(lines), fontsize=9)
    fig.subplots_adjust(
        left=0.01,
        right=0.99,
        bottom=0.01,
        top=1 - head / fig.get_figheight(),
        wspace=0.08,
        hspace=0.3,
    )
    return fig, axes[:panels]


def activation_figure(grid: ActivationGrid, cmap: str = DEFAULT_CMAP) -> Figure:
    """The input image, then one tile per channel (``grid.tiles[c]``, titled ``c``)."""
    fig, axes = _grid_figure(
        grid.channels + 1,
        f"{grid.layer} of {grid.path.name} ({grid.weights_origin}): channels 0-"
        f"{grid.channels - 1}, each scaled to its own min-max",
    )
    axes[0].imshow(grid.image, interpolation="nearest")
    axes[0].set_title("input", fontsize=7)
    for channel, ax in enumerate(axes[1:]):
        ax.imshow(grid.tiles[channel], cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(str(channel), fontsize=7)
    return fig


def filter_figure(grid: FilterGrid) -> Figure:
    """conv1_1's filters, one RGB tile each (``grid.tiles[f]``, titled ``f``)."""
    fig, axes = _grid_figure(
        len(grid.tiles),
        f"conv1_1 filters ({grid.weights_origin}), each scaled to its own min-max",
    )
    for index, ax in enumerate(axes):
        ax.imshow(grid.tiles[index], interpolation="nearest")
        ax.set_title(str(index), fontsize=7)
    return fig


def save_figure(fig: Figure, output: Path) -> Path:
    """Write ``fig`` to ``output`` atomically, in the format its extension names (PNG if none)."""
    output = Path(output)
    fmt = output.suffix[1:].lower() or "png"
    supported = fig.canvas.get_supported_filetypes()
    if fmt not in supported:
        raise OutputPathError(
            f"cannot write a picture as .{fmt}; use one of: "
            + ", ".join(f".{ext}" for ext in sorted(supported))
        )
    parent = output.parent
    if output.is_dir():
        raise OutputPathError(f"cannot write picture to {output}: it is a folder")
    if not parent.is_dir():
        raise OutputPathError(f"cannot write picture to {output}: folder {parent} does not exist")
    tmp = tmp_path_for(output)
    try:
        fig.savefig(tmp, format=fmt)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputPathError(f"cannot write picture to {output}: {exc.strerror or exc}") from None
    commit_file(tmp, output)
    return output
