"""``lrformer serve``: a web page and an HTTP API for a model, on 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import argparse

HELP = "serve a model: a web page to try it in a browser and an HTTP API (needs lrformer[serve])"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .common import (
        add_max_pixels_argument,
        add_model_arguments,
        add_precision_argument,
        add_threads_argument,
        positive_int,
    )

    add_model_arguments(parser)
    add_precision_argument(parser)
    add_threads_argument(parser)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 for the network)")  # fmt: skip
    parser.add_argument("--port", type=positive_int, default=8000)
    parser.add_argument("--palette", default=None, help="as lrformer predict's (colours and class names)")
    parser.add_argument("--max-upload-mb", type=positive_int, default=32, help="largest upload accepted (MB)")
    add_max_pixels_argument(parser)
    parser.add_argument("--queue", type=positive_int, default=32, help="requests waiting at most; beyond: 503")
    parser.add_argument("--max-batch", type=positive_int, default=8, help="requests run together (1: no batching)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a request may wait and run (504 beyond)")
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


def run(args: argparse.Namespace) -> int:
    from ..inference import Predictor
    from ..inference.predictor import model_defaults
    from ..utils import require_extra
    from .common import check_run_options, load_model, predictor_options
    from .outputs import Legend

    uvicorn = require_extra("uvicorn", "serve", "lrformer serve")
    require_extra("starlette", "serve", "lrformer serve")
    from ..serving.app import ServeOptions, create_app

    check_run_options(args)
    model = load_model(args, exported=True)
    predictor = Predictor(model, model_defaults(model), **predictor_options(model, args))
    legend = Legend.for_model(predictor.network.description, predictor.num_classes, args.palette)
    options = ServeOptions(
        args.max_upload_mb << 20, args.queue, args.max_batch, args.timeout, max_pixels=args.max_pixels
    )
    info = served_model_info(predictor, legend)
    app = create_app(predictor, info, options)
    print(f"serving {info['name'] or args.weights} on http://{args.host}:{args.port} (Ctrl+C stops)")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=args.timeout)
    return 0
