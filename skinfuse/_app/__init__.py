"""``skinfuse serve``: a local web page that explains one image of a lesion at a time.

:mod:`._handler` turns an upload (image bytes, optional age, sex and body site) into the
page's result without any server; :mod:`._server` serves the page and that handler with the
standard library's HTTP server, bound to the loopback address unless told otherwise.
"""

from ._handler import InputError, ModelPage, analyse
from ._server import make_server

__all__ = ["InputError", "ModelPage", "analyse", "make_server"]
