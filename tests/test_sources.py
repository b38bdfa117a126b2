"""Model sources: each kind loads a real (briefly trained) network that computes exactly
what the original computes; tap discovery finds the known encoder layers; bad files give
one clear line naming the file, and a pickle with code in it is never executed."""

from __future__ import annotations

import os
import pickle
import sys

import pytest
import torch
from monai.networks.nets import DynUNet, SegResNet, UNet
from safetensors.torch import save_file

from napari_invert.audit_config import parse_model_config
from napari_invert.cli import main
from napari_invert.errors import ConfigError, DataError, NapariInvertError
from napari_invert.models.sources import load_model_source
from tests.own_model_helpers import (
    build_nnunet_net,
    dynunet_args,
    monai_unet_args,
    segresnet_args,
    train_few_steps,
    write_bundle,
    write_nnunet,
)

X = torch.rand(2, 1, 24, 24, 24)
Y = (X[:, 0] * 3).long().clamp(max=2)


def _same(adapter, net) -> None:
    with torch.no_grad():
        assert torch.allclose(adapter.forward(X), net.eval()(X), atol=1e-5)


def _one_line(exc: pytest.ExceptionInfo, *needles: str) -> str:
    text = str(exc.value)
    assert "\n" not in text
    for needle in needles:
        assert needle in text, text
    return text


def _cfg(block: dict, base=None):
    return parse_model_config(block, base=base)


# -- the sources ---------------------------------------------------------------------------------


def test_monai_state_dict(tmp_path):
    net = train_few_steps(UNet(**monai_unet_args()), X, Y)
    torch.save(net.state_dict(), tmp_path / "unet.pt")
    a = load_model_source(
        _cfg({"kind": "monai", "network": "UNet", "args": monai_unet_args(), "weights": "unet.pt"}, tmp_path)
    )
    _same(a, net)
    assert a.in_channels == 1 and a.out_channels == 3 and a.multiple_of == 4
    d = a.discovery
    # MONAI's UNet concatenates its last down block (model.1.submodule.0) with the bottom block
    assert d.roles == {
        "bottleneck": "model.1.submodule.1.submodule",
        "level0": "model.0",
        "level1": "model.1.submodule.0",
    }
    _, layers = a.resolve_tap("bottleneck+skips")
    assert layers == ["model.1.submodule.1.submodule", "model.0", "model.1.submodule.0"]
    taps = a.tapper("bottleneck+skips")(X[:1])
    assert [tuple(t.shape) for t in taps] == [(1, 16, 6, 6, 6), (1, 4, 12, 12, 12), (1, 8, 6, 6, 6)]
    control, reason = a.untrained()
    assert reason is None
    assert not torch.allclose(control.forward(X), a.forward(X))


def test_safetensors_segresnet_and_discovery(tmp_path):
    net = train_few_steps(SegResNet(**segresnet_args()), X, Y)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "w.safetensors"))
    a = load_model_source(
        _cfg(
            {
                "kind": "monai",
                "network": "SegResNet",
                "args": segresnet_args(),
                "weights": str(tmp_path / "w.safetensors"),
            }
        )
    )
    _same(a, net)
    assert a.discovery.roles == {
        "bottleneck": "down_layers.2",
        "level0": "down_layers.0",
        "level1": "down_layers.1",
    }
    assert a.multiple_of == 4


def test_bundle_dynunet(tmp_path):
    net = train_few_steps(DynUNet(**dynunet_args()), X, Y)
    folder = write_bundle(tmp_path / "bundle", net, {"_target_": "DynUNet", **dynunet_args()})
    a = load_model_source(_cfg({"kind": "bundle", "path": str(folder)}))
    _same(a, net)
    assert a.discovery.roles == {
        "bottleneck": "bottleneck",
        "level0": "input_block",
        "level1": "downsamples.0",
    }
    assert a.description["class"] == "DynUNet"


@pytest.mark.parametrize(
    ("network_def", "needle"),
    [
        (
            {"_target_": "DynUNet", **dynunet_args(), "filters": "$__import__('os').system('touch HACKED')"},
            "expression",
        ),
        ({"_target_": "os.system", "command": "touch HACKED"}, "_target_ 'os.system' refused"),
        ({"_target_": "DynUNet", "_requires_": "@x", **dynunet_args()}, "_requires_"),
    ],
)
def test_bundle_refuses_code(tmp_path, network_def, needle, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = write_bundle(tmp_path / "bundle", DynUNet(**dynunet_args()), network_def)
    with pytest.raises(DataError) as exc:
        load_model_source(_cfg({"kind": "bundle", "path": str(folder)}))
    _one_line(exc, "inference.json", needle)
    assert not (tmp_path / "HACKED").exists()


@pytest.mark.parametrize("mode", ["script", "trace"])
def test_torchscript(tmp_path, mode):
    net = train_few_steps(UNet(**monai_unet_args()), X, Y)
    scripted = torch.jit.script(net) if mode == "script" else torch.jit.trace(net, X[:1])
    scripted.save(str(tmp_path / "m.ts"))
    a = load_model_source(
        _cfg({"kind": "torchscript", "path": str(tmp_path / "m.ts"), "input_size": [24, 24, 24]})
    )
    _same(a, net)
    tapper = a.tapper("bottleneck+skips")
    hook_taps = load_model_source(_cfg({"kind": "monai", "network": "UNet", "args": monai_unet_args()}))
    shapes = [(1, 16, 6, 6, 6), (1, 4, 12, 12, 12), (1, 8, 6, 6, 6)]
    assert [tuple(t.shape) for t in tapper(X[:1])] == shapes
    # the graph tap of the bottleneck equals the hooked module output of the same network
    ref = hook_taps.module
    ref.load_state_dict(net.state_dict())
    from napari_invert.attack import HookTapper

    expected = HookTapper(ref, ["model.1.submodule.1.submodule", "model.0", "model.1.submodule.0"])(X[:1])
    for got, want in zip(tapper(X[:1]), expected):
        assert torch.allclose(got, want, atol=1e-5)
    control, reason = a.untrained(seed=1)
    assert reason is None
    assert not torch.allclose(control.forward(X), a.forward(X))
    _same(a, net)  # the audited network itself is unchanged


def test_nnunet_folder(tmp_path):
    net = train_few_steps(build_nnunet_net(), X, Y)
    folder = write_nnunet(tmp_path / "nnunet", net)
    a = load_model_source(_cfg({"kind": "nnunet", "path": str(folder)}))
    _same(a, net)
    assert a.patch_size == (24, 24, 24) and a.multiple_of == 4 and a.in_channels == 1
    assert a.discovery.roles["bottleneck"].startswith("encoder.stages.2")


def test_nnunet_checkpoint_with_training_state_is_refused_with_export_hint(tmp_path):
    import datetime

    net = build_nnunet_net()
    folder = write_nnunet(
        tmp_path / "nnunet", net, {"logging": {"epoch_start": [datetime.datetime(2024, 1, 1)]}}
    )
    with pytest.raises(DataError) as exc:
        load_model_source(_cfg({"kind": "nnunet", "path": str(folder)}))
    _one_line(exc, "checkpoint_final.pth", "datetime", "torch.save(c['network_weights']", "model.weights")
    torch.save(net.state_dict(), tmp_path / "weights.pth")
    a = load_model_source(
        _cfg({"kind": "nnunet", "path": str(folder), "weights": str(tmp_path / "weights.pth")})
    )
    _same(a, net)


def test_entry_point(tmp_path, monkeypatch):
    (tmp_path / "my_nets.py").write_text(
        "from monai.networks.nets import UNet\n"
        "def make(width=4):\n"
        "    return UNet(3, 1, 3, channels=(width, 2 * width, 4 * width), strides=(2, 2))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    net = train_few_steps(UNet(**monai_unet_args()), X, Y)
    torch.save(net.state_dict(), tmp_path / "w.pt")
    a = load_model_source(
        _cfg(
            {
                "kind": "entry_point",
                "entry_point": "my_nets:make",
                "args": {"width": 4},
                "weights": str(tmp_path / "w.pt"),
            }
        )
    )
    _same(a, net)
    with pytest.raises(ConfigError, match="has no attribute 'nope'"):
        load_model_source(_cfg({"kind": "entry_point", "entry_point": "my_nets:nope"}))
    sys.modules.pop("my_nets", None)


# -- bad files -----------------------------------------------------------------------------------


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _unet_block(weights) -> dict:
    return {"kind": "monai", "network": "UNet", "args": monai_unet_args(), "weights": str(weights)}


def test_missing_file(tmp_path):
    with pytest.raises(DataError) as exc:
        load_model_source(_cfg(_unet_block(tmp_path / "nope.pt")))
    _one_line(exc, "nope.pt", "not found")


def test_truncated_files(tmp_path):
    net = UNet(**monai_unet_args())
    torch.save(net.state_dict(), tmp_path / "full.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "full.pt").read_bytes()[:300])
    with pytest.raises(DataError) as exc:
        load_model_source(_cfg(_unet_block(tmp_path / "cut.pt")))
    _one_line(exc, "cut.pt", "truncated")
    save_file(net.state_dict(), str(tmp_path / "full.safetensors"))
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "full.safetensors").read_bytes()[:200])
    with pytest.raises(DataError) as exc:
        load_model_source(_cfg(_unet_block(tmp_path / "cut.safetensors")))
    _one_line(exc, "cut.safetensors", "truncated")
    torch.jit.script(net).save(str(tmp_path / "full.ts"))
    (tmp_path / "cut.ts").write_bytes((tmp_path / "full.ts").read_bytes()[:500])
    with pytest.raises(DataError) as exc:
        load_model_source(_cfg({"kind": "torchscript", "path": str(tmp_path / "cut.ts")}))
    _one_line(exc, "cut.ts", "TorchScript")


def test_pickle_with_code_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "PAYLOAD_RAN"
    state = dict(UNet(**monai_unet_args()).state_dict())
    state["extra"] = _Payload(str(marker))
    torch.save(state, tmp_path / "evil.pt")
    # a plain pickle too (what torch.load would also open)
    with open(tmp_path / "evil.pth", "wb") as fh:
        pickle.dump(_Payload(str(marker)), fh)
    for name in ("evil.pt", "evil.pth"):
        with pytest.raises(DataError) as exc:
            load_model_source(_cfg(_unet_block(tmp_path / name)))
        _one_line(exc, name, "refused", "system")
    assert not marker.exists()


def test_wrong_architecture_lists_first_mismatching_keys(tmp_path):
    torch.save(SegResNet(**segresnet_args()).state_dict(), tmp_path / "segresnet.pt")
    with pytest.raises(DataError) as exc:
        load_model_source(_cfg(_unet_block(tmp_path / "segresnet.pt")))
    text = _one_line(exc, "segresnet.pt", "do not fit UNet", "missing from the file (model.0.conv.weight")
    assert "unexpected key(s) (convInit.conv.weight" in text
    wide = UNet(**{**monai_unet_args(), "channels": [8, 16, 32]})
    torch.save(wide.state_dict(), tmp_path / "wide.pt")
    with pytest.raises(DataError) as exc:
        load_model_source(_cfg(_unet_block(tmp_path / "wide.pt")))
    _one_line(exc, "wide.pt", "shape mismatch", "model.0.conv.weight (8, 1, 3, 3, 3) vs (4, 1, 3, 3, 3)")


def test_state_dict_given_as_torchscript(tmp_path):
    torch.save(UNet(**monai_unet_args()).state_dict(), tmp_path / "sd.pt")
    with pytest.raises(DataError) as exc:
        load_model_source(_cfg({"kind": "torchscript", "path": str(tmp_path / "sd.pt")}))
    _one_line(exc, "sd.pt", "TorchScript")


# -- config and CLI ------------------------------------------------------------------------------


def test_wrong_layer_name_lists_valid_ones():
    a = load_model_source(
        _cfg({"kind": "monai", "network": "UNet", "args": monai_unet_args(), "input_size": [24, 24, 24]})
    )
    with pytest.raises(ConfigError) as exc:
        a.tapper("bottleneck+model.9")
    _one_line(exc, "'model.9' is neither a role", "model.1.submodule.0", "bottleneck")
    with pytest.raises(ConfigError, match="no level3"):
        a.tapper("level3")


def test_bad_model_blocks():
    with pytest.raises(ConfigError, match=r"not a network class of monai\.networks\.nets"):
        load_model_source(_cfg({"kind": "monai", "network": "NoSuchNet"}))
    with pytest.raises(ConfigError, match=r"'keras' .* does not match"):
        _cfg({"kind": "keras", "path": "x"})
    with pytest.raises(ConfigError, match="cannot be built"):
        load_model_source(_cfg({"kind": "monai", "network": "UNet", "args": {"spatial_dims": 3}}))


def test_cli_taps(tmp_path, capsys):
    (tmp_path / "m.yaml").write_text(
        "model:\n  kind: monai\n  network: SegResNet\n"
        "  args: {spatial_dims: 3, in_channels: 1, out_channels: 3, "
        "init_filters: 8, blocks_down: [1, 1, 1], blocks_up: [1, 1]}\n  input_size: [32, 32, 32]\n"
    )
    assert main(["taps", str(tmp_path / "m.yaml")]) == 0
    out = capsys.readouterr().out
    assert "down_layers.2" in out and "bottleneck" in out and "(32, 8, 8, 8)" in out and "1/4" in out
    (tmp_path / "bad.yaml").write_text(
        "model:\n  kind: monai\n  network: UNet\n  weights: missing.pt\n  args: {}\n"
    )
    assert main(["taps", str(tmp_path / "bad.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "napari-invert: error:" in err
    assert issubclass(DataError, NapariInvertError)


def test_plugin_entry_points(tmp_path):
    """What the Study widget calls: a model block as a dict -> adapter -> discovered taps."""
    from napari_invert.models.sources import discover_taps, model_adapter_from_dict

    net = UNet(**monai_unet_args())
    torch.save(net.state_dict(), tmp_path / "w.pt")
    block = {
        "kind": "monai",
        "network": "UNet",
        "args": monai_unet_args(),
        "weights": "w.pt",
        "input_size": [16] * 3,
    }
    adapter = model_adapter_from_dict(block, base=tmp_path)
    found = discover_taps(adapter)
    assert found.roles["bottleneck"] == "model.1.submodule.1.submodule"
    assert found.to_dict()["layers"][0]["name"] == "model.0.conv"
    _same(adapter, net)
