"""sphinx-gallery image scraper for the figures skinfuse's plot functions return.

skinfuse draws with ``matplotlib.figure.Figure`` (never pyplot, so plotting leaves no
global state), which sphinx-gallery's matplotlib scraper cannot see. This scraper picks up
every ``Figure`` bound to a name in the example (``fig = plot_grad_cam(...)``) after each
code block, once, and writes it like the matplotlib scraper does.
"""

from __future__ import annotations

import weakref
from pathlib import PurePosixPath

from matplotlib.figure import Figure
from sphinx_gallery.scrapers import figure_rst

_SEEN: weakref.WeakSet = weakref.WeakSet()


def skinfuse_figures(block, block_vars, gallery_conf, **kwargs):
    """Save the not yet shown ``Figure`` objects of the example's namespace."""
    figures = [
        value
        for value in block_vars["example_globals"].values()
        if isinstance(value, Figure) and value not in _SEEN
    ]
    paths, titles = [], []
    for fig, image_path in zip(figures, block_vars["image_path_iterator"]):
        image_path = PurePosixPath(image_path)
        fig.savefig(image_path, bbox_inches="tight")
        _SEEN.add(fig)
        paths.append(image_path)
        titles.append(fig._suptitle.get_text() if fig._suptitle is not None else "")
    if not paths:
        return ""
    return figure_rst(paths, gallery_conf["src_dir"], " ".join(t for t in titles if t))
