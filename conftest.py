"""Collection settings for the doctests of the package (``--doctest-modules`` on skinfuse/)."""

import importlib.util

# The Dask side of embed_images imports distributed (pip install "skinfuse[distributed]").
collect_ignore = [] if importlib.util.find_spec("distributed") else ["skinfuse/_cache/dask.py"]
