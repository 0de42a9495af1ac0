"""fastattr.models.load_model (what `--model FILE` runs): torch.export programs and TorchScript load
without unpickling; a pickled module only with trust_pickle; every bad file is a UserError saying
what the file is and how to save one that loads (issue 16 item 2, "Safe model loading", item 15)."""
import io
import json
import pathlib
import textwrap
import zipfile

import pytest
import torch
from conftest import make_small_cnn
from torch import nn

import fastattr
from fastattr.engine import uses_conv2d
from fastattr.errors import UserError
from fastattr.models import EXPORT_RECIPE, exported_module, load_model

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


class ManyActivations(nn.Module):
    """Every activation family the guided backward handles, in module and functional forms, with
    BatchNorm and Dropout (eval mode) and both max-pool forms."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.relu = nn.ReLU(inplace=True)
        self.relu6 = nn.ReLU6()
        self.hardswish = nn.Hardswish()
        self.pool = nn.MaxPool2d(2)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(6, 5)

    def forward(self, x):
        x = self.pool(self.hardswish(self.relu6(self.relu(self.bn(self.conv(x))))))
        x = nn.functional.silu(x) + nn.functional.gelu(x) + nn.functional.leaky_relu(x, 0.1) + torch.relu(x)
        x, _ = nn.functional.max_pool2d(x, 2, return_indices=True)
        return self.fc(self.drop(x.mean((2, 3))))


def _model() -> nn.Module:
    torch.manual_seed(0)
    m = ManyActivations()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        m.bn.running_mean.uniform_(-0.5, 0.5)
        m.bn.running_var.uniform_(0.5, 2.0)
    return m.eval()


def _export(model: nn.Module, path, dynamic: bool = True, x=None):
    x = torch.rand(2, 3, 16, 16) if x is None else x
    shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
    program = torch.export.export(model, (x,), dynamic_shapes=shapes)
    torch.export.save(program, path)
    return program


@pytest.fixture(scope="module")
def pt2(tmp_path_factory):
    path = tmp_path_factory.mktemp("pt2") / "model.pt2"
    _export(_model(), path)
    return path


def test_exported_program_gives_the_eager_models_gradients(pt2):
    """Gradients w.r.t. the input flow through ExportedProgram.module(): IG maps of the loaded
    program equal the eager model's, NCHW and channels-last, standard and guided backward."""
    eager, loaded = _model(), load_model(pt2)
    assert not loaded.training and all(not m.training for m in loaded.modules())
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    for backward in ("standard", "guided"):
        for channels_last in (False, True):
            kw = dict(method="ig", steps=6, backward=backward, channels_last=channels_last)
            a = fastattr.attribute(eager, x, **kw)
            b = fastattr.attribute(loaded, x, **kw)
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)
            assert float(a.abs().sum()) > 0
    # the guided backward really differs here, so the equality above is not vacuous
    assert not torch.allclose(fastattr.attribute(eager, x, steps=6, backward="guided", channels_last=False),
                              fastattr.attribute(eager, x, steps=6, channels_last=False))


def test_guided_backward_needs_the_rewrite_of_aten_nodes(pt2):
    """The guided TorchFunctionMode sees an exported graph's calls as aten OpOverloads, which it
    does not know: on the raw program module it silently gives the standard gradient. load_model
    points those nodes at the Python-level functions the mode intercepts."""
    raw = torch.export.load(pt2).module()
    for m in raw.modules():  # it claims training=True, and torch refuses .eval() on it
        m.training = False
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    raw_guided = fastattr.attribute(raw, x, steps=4, backward="guided", channels_last=False)
    standard = fastattr.attribute(_model(), x, steps=4, channels_last=False)
    torch.testing.assert_close(raw_guided, standard)  # what a user would silently get
    targets = {str(n.target) for n in load_model(pt2).graph.nodes if n.op == "call_function"}
    assert "aten.relu_.default" not in targets and "aten.max_pool2d_with_indices.default" not in targets


def test_uses_conv2d_recognises_exported_convolutions(tmp_path):
    """Channels-last is the default for conv models: an exported program has conv2d nodes (or
    aten.convolution after decompositions), not Conv2d modules."""
    program = _export(_model(), tmp_path / "m.pt2")
    assert uses_conv2d(load_model(tmp_path / "m.pt2"))
    assert uses_conv2d(program.run_decompositions().module())
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5), nn.ReLU(), nn.Linear(5, 3)).eval()
    _export(mlp, tmp_path / "mlp.pt2", x=torch.rand(2, 3, 4, 4))
    assert not uses_conv2d(load_model(tmp_path / "mlp.pt2"))
    conv1d = nn.Sequential(nn.Conv1d(3, 4, 3), nn.Flatten(), nn.Linear(8, 2)).eval()
    assert not uses_conv2d(torch.export.export(conv1d, (torch.rand(2, 3, 4),)).run_decompositions().module())


def test_fixed_batch_or_training_mode_exports_are_refused(tmp_path):
    _export(_model(), tmp_path / "fixed.pt2", dynamic=False)
    with pytest.raises(UserError, match=r"fixed batch size of 2.*dynamic_shapes"):
        load_model(tmp_path / "fixed.pt2")
    _export(_model().train(), tmp_path / "train.pt2")
    with pytest.raises(UserError, match=r"exported in training mode .*training=True.*model\.eval\(\)"):
        load_model(tmp_path / "train.pt2")


def test_export_recipe_in_the_messages_works(tmp_path):
    """The one-line recipe every refusal prints, run as printed on the bundled model's shape."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    exec(EXPORT_RECIPE.replace("'model.pt2'", repr(str(tmp_path / "model.pt2"))), {"torch": torch, "model": model})
    loaded = load_model(str(tmp_path / "model.pt2"))
    x = torch.rand(3, 3, 224, 224)
    torch.testing.assert_close(loaded(x), model(x))


def test_torchscript_loads(tmp_path):
    model = make_small_cnn()
    torch.jit.save(torch.jit.script(model), tmp_path / "ts.pt")
    loaded = load_model(tmp_path / "ts.pt")
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(loaded(x), model(x))
    assert uses_conv2d(loaded)


class _Touch:
    """Unpickling this creates `path`: a stand-in for the audit's os.system payload."""

    def __init__(self, path):
        self.path = pathlib.Path(path)

    def __reduce__(self):
        return pathlib.Path.touch, (self.path,)


def test_pickled_module_needs_trust_pickle(tmp_path):
    """Item 2: a torch.save file whose unpickling runs code never runs without trust_pickle, even
    when it holds a working model; with trust_pickle=True it loads (and the payload does run,
    which shows the refusal above was meaningful)."""
    marker = tmp_path / "payload-ran"
    torch.save([_Touch(marker), make_small_cnn()], tmp_path / "evil.pt")
    with pytest.raises(UserError, match=r"pickled Python object.*--trust-pickle.*torch\.export\.export"):
        load_model(tmp_path / "evil.pt")
    assert not marker.exists()
    with pytest.raises(UserError, match="holds a list, not a torch.nn.Module"):
        load_model(tmp_path / "evil.pt", trust_pickle=True)
    assert marker.exists()
    torch.save(make_small_cnn(), tmp_path / "whole.pt")
    with pytest.raises(UserError, match="trust-pickle"):
        load_model(tmp_path / "whole.pt")
    model = load_model(tmp_path / "whole.pt", trust_pickle=True)
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(model(x), make_small_cnn()(x))
    torch.save(make_small_cnn().state_dict(), tmp_path / "sd.pt")  # read by the safe unpickler
    with pytest.raises(UserError, match=r"holds a OrderedDict \(a state_dict\?\), not a model"):
        load_model(tmp_path / "sd.pt")


def _rewrite_zip(src, dst, change):
    """Copy zip src to dst with change(name, data) -> data applied to every member."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, change(info.filename, zin.read(info.filename)))


def test_pt2_holding_pickles_is_refused_without_running_them(pt2, tmp_path):
    """torch.export.load itself unpickles pickled weights and falls back to a full unpickle for
    sample inputs the safe unpickler rejects (its docstring warns); load_model checks the archive
    first. Each crafted archive runs its payload under torch.export.load, and not under load_model."""
    payload = io.BytesIO()
    torch.save(_Touch(tmp_path / "unused"), payload)

    def evil_weight(name, data):
        if name.endswith("model_weights_config.json"):
            cfg = json.loads(data)
            next(iter(cfg["config"].values()))["use_pickle"] = True
            return json.dumps(cfg).encode()
        if name.endswith("data/weights/weight_0"):
            return payload_bytes
        return data

    def evil_sample(name, data):
        return payload_bytes if name.endswith("data/sample_inputs/model.pt") else data

    for kind, change in (("weight", evil_weight), ("sample", evil_sample)):
        marker = tmp_path / f"ran-{kind}"
        buf = io.BytesIO()
        torch.save(_Touch(marker), buf)
        payload_bytes = buf.getvalue()
        path = tmp_path / f"evil-{kind}.pt2"
        _rewrite_zip(pt2, path, change)
        with pytest.raises(UserError, match=r"torch\.export archive that holds .*would unpickle.*--trust-pickle"):
            load_model(path)
        assert not marker.exists(), kind
        try:
            torch.export.load(path)
        except Exception:  # noqa: BLE001 - the archive is broken after the payload ran
            pass
        assert marker.exists(), f"the {kind} payload does not run under torch.export.load: the test proves nothing"


@pytest.mark.parametrize("content, message", [
    (b"", "is empty"),
    (b"not a model at all\n", "is not a model file"),
    ("truncated", "is not a model file"),
    ("junk zip", "is not a model file"),
    ("truncated pt2 member", "cannot load"),
])
def test_bad_model_files_are_named_errors(tmp_path, pt2, content, message):
    """Item 15: text, truncated, empty and junk-zip files are one UserError each, no traceback."""
    path = tmp_path / "bad.pt2"
    if content == "truncated":
        data = pt2.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif content == "junk zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("hello.txt", "hi")
    elif content == "truncated pt2 member":
        _rewrite_zip(pt2, path, lambda n, d: d[:10] if n.endswith("models/model.json") else d)
    else:
        path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        load_model(path)
    with pytest.raises(UserError, match="no such file"):
        load_model(tmp_path / "missing.pt2")


def test_exported_module_rejects_programs_with_several_inputs():
    class Two(nn.Module):
        def forward(self, a, b):
            return a.flatten(1) + b.flatten(1)

    program = torch.export.export(Two(), (torch.rand(2, 3), torch.rand(2, 3)))
    with pytest.raises(UserError, match="takes 2 inputs"):
        exported_module(program)


def test_readme_saving_recipe_loads(tmp_path, monkeypatch):
    """The torch.export code block of the README's "Saving a model for the CLI", run as printed."""
    readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
    section = readme[readme.index("## Saving a model for the CLI"):]
    code = section[section.index("```python") + len("```python"):section.index("```", section.index("```python") + 9)]
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    monkeypatch.chdir(tmp_path)
    exec(textwrap.dedent(code), {"model": model})
    x = torch.rand(2, 3, 224, 224)
    torch.testing.assert_close(load_model("model.pt2")(x), model(x))
