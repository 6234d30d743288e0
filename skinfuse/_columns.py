"""Names of the input columns, defined once for the loaders, the preprocessors and the models.

Every loader in :mod:`skinfuse.datasets` returns ``data`` with the columns
``IMAGE_COLUMN, *METADATA_COLUMNS``, and every model reads them under these names
by default.
"""

#: Column of image file paths.
IMAGE_COLUMN = "image_path"

#: Numeric clinical metadata (years).
NUMERIC_METADATA = ("age",)

#: Categorical clinical metadata.
CATEGORICAL_METADATA = ("sex", "localization")

#: All metadata columns, numeric first.
METADATA_COLUMNS = NUMERIC_METADATA + CATEGORICAL_METADATA

__all__ = ["CATEGORICAL_METADATA", "IMAGE_COLUMN", "METADATA_COLUMNS", "NUMERIC_METADATA"]
