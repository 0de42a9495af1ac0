"""Issue 22 item 6 and the structural fix: every bad value is one line `fastattr CMD: error: ...`
naming the option, exit code 2, no traceback, no --out created. The issue's list of values that
used to be raw tracebacks (or silently accepted), then one out-of-range value for every option
of every command generated from the parsers' own option lists (a new option is covered without
touching this file; a new argparse type must carry an `invalid` example). Parse-level refusals
happen before any model is loaded (checked). And runner/ and evaluation/ never import the
command line."""
import argparse
import ast
import subprocess
import sys
from pathlib import Path

import pytest
from clitools import ENV, FAST_EVAL, one_line_error, run_fastattr, user_folder

import fastattr
from fastattr.cli import build_parser, main

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A user folder (5 classes, exported at 32 px), a finished 32 px run of it, other images, a
    folder that is not a run and a plain file."""
    root = tmp_path_factory.mktemp("clierr")
    user_folder(root)
    assert main(["run", str(root / "data"), "--model", str(root / "model.pt2"), "--out", str(root / "run"),
                 "--size", "32", "--steps", "2", "--workers", "0", "--no-progress"]) == 0
    user_folder(root / "other", seed=4)
    (root / "notarun").mkdir()
    (root / "afile").write_text("x")
    return root


def _run(argv, capsys) -> tuple[int, str]:
    """main() in this process: (exit code, stderr)."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse's errors
        code = exc.code
    return code, capsys.readouterr().err


def _eval_args(files, out):
    return [files / "data", "--model", files / "model.pt2", "--size", "32", "--steps", "2", "--out", out, *FAST_EVAL]


# (extra eval options, words the error line must contain): the list
ITEM6 = [
    (["--steps", "0"], "argument --steps: must be >= 1, got 0"),
    (["--steps", "-3"], "argument --steps: must be >= 1, got -3"),
    (["--rule", "bogus"], "argument --rule: invalid choice: 'bogus'"),
    (["--size", "0"], "argument --size: must be >= 1, got 0"),
    (["--shard-size", "0"], "argument --shard-size: must be >= 1"),
    (["--bootstrap", "-1"], "argument --bootstrap: must be >= 0, got -1"),
    (["--target", "foo"], "argument --target: expected 'predicted', 'label' or a class index, got 'foo'"),
    (["--target", "label"], "target: 'label' needs an ImageFolder tree"),
    (["--target", "99"], "target: class indices must lie in [0, 5), got 99"),
    (["--target", "-1"], "argument --target: class index must be >= 0, got -1"),
    (["--masks", "{root}/missing"], "argument --masks: '{root}/missing' does not exist"),
    (["--maps", "{root}/missing"], "argument --maps: '{root}/missing' does not exist"),
    (["--maps", "{root}/notarun"], "argument --maps: '{root}/notarun' has no run.json"),
    (["--methods", "bogus"], "argument --methods: invalid choice: 'bogus'"),
    (["--max-images", "0"], "argument --max-images: must be >= 1, got 0"),
    (["--images-per-call", "0"], "argument --images-per-call: must be >= 1, got 0"),
    (["--workers", "-1"], "argument --workers: must be >= 0, got -1"),
    (["--threads", "0"], "argument --threads: must be >= 1, got 0"),
    (["--sample", "-1"], "argument --sample: must be >= 0, got -1"),
    (["--batch-size", "0"], "argument --batch-size: must be >= 1, got 0"),
    (["--metrics", "localization"], "metrics: localization needs object masks (--masks DIR)"),
    (["--min-pred", "2"], "argument --min-pred: must be a probability in [0, 1], got 2"),
    (["--min-pred", "nan"], "argument --min-pred: must be a probability in [0, 1], got nan"),
]
MAPS_ITEM6 = [  # eval DATA --maps RUN ... (the run is 32 px, of data/)
    (["{root}/data", "--size", "64"], "size: the maps of {root}/run are 32 px, not 64; leave out --size"),
    (["{root}/other/data"], "--maps: the run in {root}/run was made on other images than DATA"),
]


def _no_model_loading(monkeypatch):
    """Make loading a model fail the test: parse-level refusals must come first."""
    import fastattr.runner.preflight as preflight

    def refuse(*a, **k):
        raise AssertionError("a model was loaded before a parse-level refusal")

    monkeypatch.setattr(preflight, "load_model_id", refuse)


def test_item6_bad_values_of_eval_are_one_line(files, capsys, monkeypatch):
    cases = [(_eval_args(files, files / "out") + extra, msg) for extra, msg in ITEM6]
    cases += [(extra + ["--maps", "{root}/run", "--out", files / "out", *FAST_EVAL], msg) for extra, msg in MAPS_ITEM6]
    for argv, message in cases:
        argv = ["eval", *[str(a).format(root=files) for a in argv]]
        code, err = _run(argv, capsys)
        assert code == 2, (argv, err)
        assert message.format(root=files) in one_line_error(err, "eval"), (argv, err)
        assert not (files / "out").exists(), argv
    # the parse-level ones never reach the model
    _no_model_loading(monkeypatch)
    for extra, message in ITEM6:
        if message.startswith("argument"):
            argv = ["eval", *[str(a).format(root=files) for a in _eval_args(files, files / "out") + extra]]
            assert _run(argv, capsys)[0] == 2, argv


def test_item6_sample_in_a_subprocess(files, tmp_path):
    """The same refusals from the installed command: exit code 2, one line, nothing written."""
    for extra, message in (ITEM6[8], ITEM6[22]):  # one needs the model, one is parse-level
        res = run_fastattr("eval", *_eval_args(files, tmp_path / "out"), *extra)
        assert res.returncode == 2, res.stderr
        assert message.format(root=files) in one_line_error(res.stderr, "eval")
        assert not (tmp_path / "out").exists()


def _subparsers(parser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _bad_value(action: argparse.Action, paths: dict) -> list[str]:
    """Command-line words giving `action` a value it must refuse."""
    opt = action.option_strings[0] if action.option_strings else None
    if action.nargs == 0:  # a flag: a value given to it
        return [f"{opt}=yes"]
    if action.choices is not None:
        bad = "bogus"
    else:
        assert hasattr(action.type, "invalid"), f"{opt or action.dest}: its type has no `invalid` example"
        bad = action.type.invalid.format(**paths)
    return [bad] if opt is None else [opt, bad]


def _named(action: argparse.Action, line: str) -> bool:
    names = action.option_strings or [action.dest]
    return any(n in line for n in names)


def test_every_option_of_every_command_refuses_an_out_of_range_value(files, tmp_path, capsys, monkeypatch):
    """Generated from the parsers: every option (flags given a value, choices given 'bogus', typed
    options their type's `invalid` example, positionals a missing path) is refused at parse time,
    before any model is loaded, as one line naming it; --out is never created."""
    _no_model_loading(monkeypatch)
    out = tmp_path / "out"
    paths = {"missing": str(tmp_path / "missing"), "file": str(files / "afile")}
    base = {"explain": [], "eval": [], "run": [str(files / "data"), "--out", str(out)]}
    seen = 0
    for command, sub in _subparsers(build_parser()).items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            args = list(base[command])
            if action.dest == "out":
                args = args[:1] if command == "run" else []
            if action.dest in ("input", "data") and command == "run":
                args = args[1:]
            code, err = _run([command, *args, *_bad_value(action, paths)], capsys)
            assert code == 2, (command, action.dest, err)
            line = one_line_error(err, command)
            assert _named(action, line), (command, action.dest, line)
            assert not out.exists(), (command, action.dest)
            seen += 1
    assert seen >= 50


def test_generated_refusals_in_a_subprocess(files, tmp_path):
    """A sample of the generated refusals through the installed command and `python -m fastattr`."""
    out = tmp_path / "out"
    res = run_fastattr("run", files / "data", "--out", out, "--images-per-call", "0")
    assert res.returncode == 2 and "argument --images-per-call: must be >= 1, got 0" in one_line_error(res.stderr, "run")
    res = subprocess.run([sys.executable, "-m", "fastattr", "explain", "--idgi=yes", "--out", str(out)], env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "argument --idgi: ignored explicit argument 'yes'" in one_line_error(res.stderr, "explain")
    assert not out.exists()


def test_runner_and_evaluation_do_not_import_the_command_line():
    """The import circle cli -> evaluate -> evaluation -> runner -> cli is gone: in a fresh process,
    importing every module of fastattr.runner and fastattr.evaluation loads no fastattr.cli; and no
    import statement there (in functions too) names it."""
    code = ("import importlib, pkgutil, sys\n"
            "import fastattr.runner, fastattr.evaluation\n"
            "for pkg in (fastattr.runner, fastattr.evaluation):\n"
            "    for m in pkgutil.iter_modules(pkg.__path__):\n"
            "        importlib.import_module(f'{pkg.__name__}.{m.name}')\n"
            "print(sorted(k for k in sys.modules if k.startswith('fastattr.cli')))\n")
    res = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "[]"
    package = Path(fastattr.__file__).parent
    for folder in ("runner", "evaluation"):
        for path in (package / folder).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                assert not any(n == "fastattr.cli" or n.startswith("fastattr.cli.") or n == "fastattr.evaluate"
                               for n in names), (path, names)

