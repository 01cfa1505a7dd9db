"""``lrformer serve``: a web page and an HTTP API for a model, on 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import ConfigError

TOKEN_VARIABLE = "LRFORMER_SERVE_TOKEN"
"""The environment variable ``--token`` defaults to."""

HELP = "serve a model: a web page to try it in a browser and an HTTP API (needs lrformer[serve])"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .common import (
        add_max_pixels_argument,
        add_model_arguments,
        add_precision_argument,
        add_threads_argument,
        positive_float,
        positive_int,
    )

    add_model_arguments(parser)
    add_precision_argument(parser)
    add_threads_argument(parser)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 for the network)")  # fmt: skip
    parser.add_argument("--port", type=positive_int, default=8000, help="port to listen on (default 8000)")
    parser.add_argument("--token", default=None,
                        help=f"secret every request but /health must carry (default: ${TOKEN_VARIABLE}, which, "
                        "unlike a command line, other users cannot see)")  # fmt: skip
    parser.add_argument("--allow-host", action="append", default=None, metavar="NAME",
                        help="a further host name the browser may use to reach the server (repeatable; * allows any)")  # fmt: skip
    parser.add_argument("--palette", default=None, help="as lrformer predict's (colours and class names)")
    parser.add_argument("--max-upload-mb", type=positive_int, default=32, help="largest upload accepted (MB)")
    add_max_pixels_argument(parser, default="2^25 = 33.5 megapixels, a server's cap")
    parser.add_argument("--max-queued-mp", type=positive_float, default=None, metavar="MEGAPIXELS",
                        help="decoded megapixels of all requests admitted and not answered yet (default 134; beyond: 503)")  # fmt: skip
    parser.add_argument("--queue", type=positive_int, default=32, help="requests waiting at most; beyond: 503")
    parser.add_argument("--max-batch", type=positive_int, default=8, help="requests run together (1: no batching)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a request may wait and run (504 beyond)")
    parser.add_argument("--max-uploads", type=positive_int, default=None,
                        help="uploads being received at once (default 16; beyond: 503)")  # fmt: skip
    parser.add_argument("--upload-timeout", type=positive_float, default=None, metavar="SECONDS",
                        help="seconds an upload may take to arrive, whole (default 30; beyond: 408)")  # fmt: skip
    parser.add_argument("--header-timeout", type=positive_float, default=10.0, metavar="SECONDS",
                        help="seconds a connection may take to send its request headers (default 10; then closed)")  # fmt: skip
    parser.add_argument("--max-connections", type=positive_int, default=512,
                        help="connections open at once (default 512; beyond: closed, and requests answered 503)")  # fmt: skip
    parser.epilog = (
        "examples: lrformer serve --weights work_dirs/demo/iter_500.pth   # then open http://127.0.0.1:8000\n"
        "  lrformer serve --weights lrformer_t_int8.xml --threads 4        # an exported model (OpenVINO)"
    )


def served_model_info(predictor, legend) -> dict:
    """What ``GET /model`` answers: variant, classes, palette, test settings and, for an exported
    model, its ``export`` entry (runtime, input size, precision, quantisation)."""
    import dataclasses

    count = predictor.num_classes
    description = predictor.network.description
    names = list(legend.names) if legend.names is not None else [f"class {i}" for i in range(count)]
    return {
        "name": (description.get("model") or {}).get("name"),
        "num_classes": count,
        "classes": names[:count],
        "palette": [list(map(int, color)) for color in legend.palette[:count]],
        "test": dataclasses.asdict(predictor.config),
        "export": description.get("export"),
    }


def resolve_token(given: str | None) -> str | None:
    """``--token``, else ``$LRFORMER_SERVE_TOKEN`` (unset or empty: no token), without surrounding
    spaces; an empty ``--token`` is refused."""
    if given is None:
        return os.environ.get(TOKEN_VARIABLE, "").strip() or None
    if not given.strip():
        raise ConfigError(f"--token is empty: give a secret (e.g. $(openssl rand -hex 16)), or set {TOKEN_VARIABLE}")
    return given.strip()


def allowed_hosts(names: list[str] | None) -> tuple[str, ...]:
    """The ``--allow-host`` names, lower-cased; one with a scheme, a port or a path is refused."""
    from ..serving.guard import is_ip

    hosts = []
    for name in names or ():
        host = name.strip().lower()
        bare = host.strip("[]")
        if not host or "/" in host or (":" in bare and not is_ip(bare)) or " " in host:
            raise ConfigError(f"--allow-host {name!r} is not a host name: give the name alone (no scheme, port or "
                              "path), e.g. --allow-host myserver.lan, or * to allow any")  # fmt: skip
        hosts.append(host)
    return tuple(hosts)


def serve_options(args: argparse.Namespace, max_pixels: int | None, token: str | None, allow_hosts: tuple):
    """The server's :class:`~lrformer.serving.app.ServeOptions` from the command line; an option
    left out keeps ``ServeOptions``' default (``max_pixels=None``: the server's cap)."""
    from ..serving.app import ServeOptions

    optional = {
        "max_uploads": args.max_uploads,
        "upload_timeout_s": args.upload_timeout,
        "max_queued_pixels": None if args.max_queued_mp is None else max(1, round(args.max_queued_mp * 1e6)),
    }
    return ServeOptions(
        args.max_upload_mb << 20, args.queue, args.max_batch, args.timeout, max_pixels=max_pixels,
        host=args.host, allow_hosts=allow_hosts, token=token,
        **{name: value for name, value in optional.items() if value is not None},
    )  # fmt: skip


def banner(name: str, host: str, port: int, token: bool) -> str:
    """The line printed once the server is bound and the model loaded: the URL to open (a
    loopback one for a wildcard bind) and, with a token, how the page gets it (never the token)."""
    from ..serving.server import is_wildcard, url

    page = url(host, port)
    line = f"serving {name} on {page} ({'listening on all interfaces; ' if is_wildcard(host) else ''}Ctrl+C stops)"
    if token:
        line += f"; the page asks for the token: open {page}/?token=YOUR_TOKEN once"
    return line


def exposure_warning(address: str, port: int, token: bool) -> str | None:
    """A one-line warning when the server is reachable from the network (``address``, the bound
    one, is not loopback): anyone can use it without a token; with one, it travels in clear."""
    from ..serving.server import is_loopback, is_wildcard

    if is_loopback(address):
        return None
    where = f"{address} (all interfaces)" if is_wildcard(address) else address
    if token:
        return (f"warning: listening on {where} over plain HTTP: the token and the images cross the network "
                "unencrypted; beyond a trusted network, put an HTTPS proxy in front")  # fmt: skip
    return (f"warning: listening on {where} without a token: anyone who can reach port {port} of this machine can "
            f"use the model; set {TOKEN_VARIABLE} (or --token) to require a secret")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from ..utils import require_extra

    require_extra("uvicorn", "serve", "lrformer serve")
    require_extra("starlette", "serve", "lrformer serve")
    from ..serving.server import bind, serve

    token = resolve_token(args.token)
    allow_hosts = allowed_hosts(args.allow_host)
    max_pixels = args.max_pixels  # None: the server's cap (check_run_options puts the command line's in args)
    sock = bind(args.host, args.port)  # before the model loads: a busy port fails at once
    try:
        from ..inference import Predictor
        from ..inference.predictor import model_defaults
        from ..serving.app import create_app
        from .common import check_run_options, load_model, predictor_options
        from .outputs import Legend

        check_run_options(args)
        model = load_model(args, exported=True)
        predictor = Predictor(model, model_defaults(model), **predictor_options(model, args))
        legend = Legend.for_model(predictor.network.description, predictor.num_classes, args.palette)
        info = served_model_info(predictor, legend)
        app = create_app(predictor, info, serve_options(args, max_pixels, token, allow_hosts))
        address, port = sock.getsockname()[:2]
        print(banner(info["name"] or args.weights, args.host, port, bool(token)), flush=True)
        warning = exposure_warning(address, port, bool(token))
        if warning:
            print(warning, file=sys.stderr, flush=True)
        serve(app, sock, header_timeout_s=args.header_timeout, max_connections=args.max_connections,
              graceful_s=args.timeout)  # fmt: skip
    finally:
        sock.close()  # uvicorn closes it on shutdown; here for a failure before
    return 0
