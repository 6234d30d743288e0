"""``skinfuse serve``: the model on a local web page (:mod:`skinfuse._app`)."""

from __future__ import annotations

import sys

from . import common

__all__ = ["run_serve"]


def run_serve(model, *, host="127.0.0.1", port=8000, device=None, verbose=1, ready=None):
    """Serve ``model`` (a model file) on ``host``:``port`` until Ctrl-C.

    ``ready``, when given, is called with the running server (tests use it to learn the
    port and to stop it with ``server.shutdown()``).
    """
    from .._app import ModelPage, make_server

    device = common.check_device(device)
    model_path = common.check_in_file(model, "model file", "MODEL")
    try:
        page = ModelPage.from_file(model_path)
    except TypeError as exc:  # untrusted types in the file: a user-facing refusal
        raise ValueError(str(exc)) from None
    common.set_verbose(page.model, 0)
    common.set_device(page.model, device)
    log = (lambda line: print(line, file=sys.stderr, flush=True)) if verbose > 1 else None
    try:
        server = make_server(page, host, port, log=log)
    except OSError as exc:
        raise ValueError(f"cannot listen on {host}:{port} ({exc.strerror or exc}): pass "
                         "another --port, or stop what uses it") from None  # fmt: skip
    bound_host, bound_port = server.server_address[:2]
    shown = f"[{bound_host}]" if ":" in str(bound_host) else bound_host
    common.say(verbose, f"serving {model_path} at http://{shown}:{bound_port}/ (Ctrl-C stops)")
    if host not in ("127.0.0.1", "localhost", "::1"):
        common.warn("serve", f"listening on {host}: anyone who can reach this machine can "
                             "use the page (no login, no encryption); see docs/serve.md")  # fmt: skip
    if ready is not None:
        ready(server)
    try:
        server.serve_forever()
    finally:
        server.server_close()
