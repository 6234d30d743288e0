"""The vocabulary tables: other datasets' diagnosis, site and sex words in HAM10000's words.

Every map is a plain ``dict`` from a dataset's own word to a HAM10000 word, or to ``None``
when HAM10000 has no such word (a label: the rows are dropped, with a warning; a site or a
sex: a missing value). Keys are matched without regard to case or surrounding spaces.
Copy a map, change it, and pass it to :func:`skinfuse.datasets.load_lesion_table` (or to a
preset's ``label_map=`` / ``site_map=``)::

    my_map = {**LABEL_MAPS["isic2019"], "SCC": None}  # drop SCC instead of calling it akiec

Choices made here (the rest is a plain translation):

- ``SCC`` (squamous cell carcinoma, ISIC 2019 and PAD-UFES-20) -> ``akiec``. HAM10000's
  ``akiec`` holds actinic keratoses and intraepithelial carcinoma (Bowen's disease, SCC in
  situ), not invasive SCC: no HAM class is exact, ``akiec`` is the nearest (the same
  keratinocyte lineage, and where a HAM10000-trained model puts these lesions). Map it to
  ``None`` to drop those images instead.
- Derm7pt's melanosis and miscellaneous, ISIC 2019's ``UNK`` and ISIC 2020's ``unknown``
  (benign, no diagnosis), ``cafe-au-lait macule`` and ``atypical melanocytic proliferation``
  have no HAM class: ``None`` (dropped, with a warning saying how many).
- Head and neck as one site (Derm7pt ``head neck``, ISIC ``head/neck``) -> ``face``, the
  most frequent head-and-neck site of HAM10000 (about two thirds of its head and neck
  images; the others are scalp, neck and ear).
- ISIC's torso without a side (``torso``, ``anterior torso``, ``lateral torso``) ->
  ``trunk`` (HAM10000's torso without a side); ``posterior torso`` -> ``back``.
  ``palms/soles`` -> ``acral``; ``oral/genital`` -> ``genital``; Derm7pt's ``buttocks`` ->
  ``trunk``.
"""

from __future__ import annotations

__all__ = ["HAM10000_SITES", "LABEL_MAPS", "SEX_MAP", "SITE_MAPS"]

#: HAM10000's localization words (``"unknown"`` is read as a missing value).
HAM10000_SITES = (
    "abdomen",
    "acral",
    "back",
    "chest",
    "ear",
    "face",
    "foot",
    "genital",
    "hand",
    "lower extremity",
    "neck",
    "scalp",
    "trunk",
    "upper extremity",
)

_DERM7PT_LABELS = {
    # nevi
    "blue nevus": "nv",
    "clark nevus": "nv",
    "combined nevus": "nv",
    "congenital nevus": "nv",
    "dermal nevus": "nv",
    "recurrent nevus": "nv",
    "reed or spitz nevus": "nv",
    # melanomas
    "melanoma": "mel",
    "melanoma (in situ)": "mel",
    "melanoma (less than 0.76 mm)": "mel",
    "melanoma (0.76 to 1.5 mm)": "mel",
    "melanoma (more than 1.5 mm)": "mel",
    "melanoma metastasis": "mel",
    # benign keratosis-like
    "seborrheic keratosis": "bkl",
    "lentigo": "bkl",
    "basal cell carcinoma": "bcc",
    "vascular lesion": "vasc",
    "dermatofibroma": "df",
    # no HAM10000 class
    "melanosis": None,
    "miscellaneous": None,
}

_ISIC2019_LABELS = {
    "MEL": "mel",
    "NV": "nv",
    "BCC": "bcc",
    "AK": "akiec",
    "BKL": "bkl",
    "DF": "df",
    "VASC": "vasc",
    "SCC": "akiec",
    "UNK": None,
}

_ISIC2020_LABELS = {
    "nevus": "nv",
    "melanoma": "mel",
    "seborrheic keratosis": "bkl",
    "lentigo NOS": "bkl",
    "solar lentigo": "bkl",
    "lichenoid keratosis": "bkl",
    "unknown": None,
    "cafe-au-lait macule": None,
    "atypical melanocytic proliferation": None,
}

_PAD_UFES20_LABELS = {
    "ACK": "akiec",
    "BCC": "bcc",
    "MEL": "mel",
    "NEV": "nv",
    "SCC": "akiec",
    "SEK": "bkl",
}

#: Diagnosis words of each preset's dataset -> HAM10000 class code (or ``None``: no class).
LABEL_MAPS = {
    "derm7pt": _DERM7PT_LABELS,
    "isic2019": _ISIC2019_LABELS,
    "isic2020": _ISIC2020_LABELS,
    "pad_ufes20": _PAD_UFES20_LABELS,
}

_DERM7PT_SITES = {
    "abdomen": "abdomen",
    "acral": "acral",
    "back": "back",
    "buttocks": "trunk",
    "chest": "chest",
    "genital areas": "genital",
    "head neck": "face",
    "lower limbs": "lower extremity",
    "upper limbs": "upper extremity",
}

_ISIC_SITES = {
    "anterior torso": "trunk",
    "foot": "foot",
    "hand": "hand",
    "head/neck": "face",
    "lateral torso": "trunk",
    "lower extremity": "lower extremity",
    "oral/genital": "genital",
    "palms/soles": "acral",
    "posterior torso": "back",
    "torso": "trunk",
    "upper extremity": "upper extremity",
}

_PAD_UFES20_SITES = {
    "ABDOMEN": "abdomen",
    "ARM": "upper extremity",
    "BACK": "back",
    "CHEST": "chest",
    "EAR": "ear",
    "FACE": "face",
    "FOOT": "foot",
    "FOREARM": "upper extremity",
    "HAND": "hand",
    "LIP": "face",
    "NECK": "neck",
    "NOSE": "face",
    "SCALP": "scalp",
    "THIGH": "lower extremity",
}

#: Site words of each preset's dataset -> HAM10000 localization (or ``None``: missing).
SITE_MAPS = {
    "derm7pt": _DERM7PT_SITES,
    "isic2019": dict(_ISIC_SITES),
    "isic2020": dict(_ISIC_SITES),
    "pad_ufes20": _PAD_UFES20_SITES,
}

#: Sex words -> HAM10000's ``male`` / ``female`` (or ``None``: missing).
SEX_MAP = {
    "female": "female",
    "f": "female",
    "woman": "female",
    "male": "male",
    "m": "male",
    "man": "male",
    "unknown": None,
}
