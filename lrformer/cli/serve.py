"""``lrformer serve``: a web page and an HTTP API for a model, on 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import argparse

HELP = "serve a model: a web page to try it in a browser and an HTTP API (needs lrformer[serve])"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .common import add_max_pixels_argument, add_model_arguments, add_precision_argument, positive_int

    add_model_arguments(parser)
    add_precision_argument(parser)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 for the network)")  # fmt: skip
    parser.add_argument("--port", type=positive_int, default=8000)
    parser.add_argument("--palette", default=None, help="as lrformer predict's (colours and class names)")
    parser.add_argument("--max-upload-mb", type=positive_int, default=32, help="largest upload accepted (MB)")
    add_max_pixels_argument(parser)
    parser.add_argument("--queue", type=positive_int, default=32, help="requests waiting at most; beyond: 503")
    parser.add_argument("--max-batch", type=positive_int, default=8, help="requests run together (1: no batching)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a request may wait and run (504 beyond)")
    parser.epilog = "example: lrformer serve --weights work_dirs/demo/iter_500.pth   # then open http://127.0.0.1:8000"


def served_model_info(model, predictor, legend) -> dict:
    """What ``GET /model`` answers: variant, classes, palette and test settings."""
    import dataclasses

    count = predictor.num_classes
    names = list(legend.names) if legend.names is not None else [f"class {i}" for i in range(count)]
    return {
        "name": getattr(model, "config", {}).get("name"),
        "num_classes": count,
        "classes": names[:count],
        "palette": [list(map(int, color)) for color in legend.palette[:count]],
        "test": dataclasses.asdict(predictor.config),
    }


def run(args: argparse.Namespace) -> int:
    from ..inference import Predictor
    from ..inference.predictor import model_defaults
    from ..utils import require_extra
    from .common import check_run_options, load_model
    from .outputs import Legend

    uvicorn = require_extra("uvicorn", "serve", "lrformer serve")
    require_extra("starlette", "serve", "lrformer serve")
    from ..serving.app import ServeOptions, create_app

    check_run_options(args)
    model = load_model(args)
    predictor = Predictor(model, model_defaults(model), device=args.device, precision=args.precision)
    legend = Legend.for_model(model, predictor.num_classes, args.palette)
    options = ServeOptions(
        args.max_upload_mb << 20, args.queue, args.max_batch, args.timeout, max_pixels=args.max_pixels
    )
    info = served_model_info(model, predictor, legend)
    app = create_app(predictor, info, options)
    print(f"serving {info['name']} on http://{args.host}:{args.port} (Ctrl+C stops)")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=args.timeout)
    return 0
