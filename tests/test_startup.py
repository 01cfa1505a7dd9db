"""A fast start: ``lrformer --help``, every ``lrformer COMMAND --help`` and ``--version`` import
neither PyTorch nor OpenCV (nor numpy), and ``import lrformer`` alone loads none of them until a
public name is used."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from lrformer.cli.main import COMMANDS

from .helpers import run_bounded

HEAVY = ("torch", "cv2", "numpy")


def loaded_after(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; what it printed last (JSON) and which of :data:`HEAVY`
    it had imported by then."""
    script = textwrap.dedent(code) + textwrap.dedent(f"""
        import json, sys
        print(json.dumps({{"result": result, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
    """)
    done = run_bounded([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


HELP_CALLS = [["--help"], ["--version"], *([name, "--help"] for name in COMMANDS), ["convert", "weights", "--help"]]


@pytest.mark.parametrize("argv", HELP_CALLS, ids=" ".join)
def test_help_and_version_import_neither_torch_nor_opencv(argv):
    outcome = loaded_after(f"""
        import contextlib, io
        from lrformer.cli.main import main
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            code = main({argv!r})
        result = [code, printed.getvalue()]
    """)
    code, printed = outcome["result"]
    assert code == 0
    assert printed.startswith("lrformer 0.") if argv == ["--version"] else printed.startswith("usage: lrformer")
    assert outcome["heavy"] == []


def test_python_m_lrformer_help_prints_every_command():
    done = run_bounded([sys.executable, "-m", "lrformer", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and all(name in done.stdout for name in COMMANDS)


def test_import_lrformer_is_light_until_a_name_is_used():
    outcome = loaded_after("""
        import lrformer
        light = [m for m in ("torch", "cv2", "numpy") if m in __import__("sys").modules]
        names = sorted(set(lrformer.__all__) - set(dir(lrformer)))  # every public name is listed
        from lrformer import create_model  # loads the models (and PyTorch) now
        result = [light, names, create_model.__module__, lrformer.models.factory.__name__]
    """)
    light, unlisted, module, factory = outcome["result"]
    assert light == [] and unlisted == []
    assert module == "lrformer.models.factory" and factory == "lrformer.models.factory"
    assert "torch" in outcome["heavy"]


def test_public_names_resolve_to_their_definitions():
    import lrformer
    from lrformer.errors import CheckpointMismatchError
    from lrformer.inference import Predictor
    from lrformer.models import create_model

    assert lrformer.create_model is create_model and lrformer.Predictor is Predictor
    assert lrformer.CheckpointMismatchError is CheckpointMismatchError
    assert all(getattr(lrformer, name) is not None for name in lrformer.__all__)
    with pytest.raises(AttributeError, match="has no attribute 'create_modle'"):
        lrformer.create_modle  # noqa: B018
