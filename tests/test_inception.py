"""FID Inception-v3: shapes, grey input, batching, weight-file errors, and (with torch +
pytorch-fid installed) equality with pytorch-fid's network on random weights."""

import importlib.util

import numpy as np
import pytest

from jaxinv.models import inception as inc


def _importable(*names: str) -> bool:
    try:
        for name in names:
            __import__(name)
    except Exception:  # e.g. a torchvision built for another torch
        return False
    return True


HAS_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="needs torch")
needs_pytorch_fid = pytest.mark.skipif(
    importlib.util.find_spec("pytorch_fid") is None
    or not _importable("torch", "pytorch_fid.inception"),
    reason="needs torch and pytorch-fid")


@pytest.fixture(scope="module")
def variables():
    return inc.random_variables(0)


def test_features_shape_grey_and_batching(variables):
    x = np.random.default_rng(0).random((3, 32, 32, 1), np.float32)
    grey = inc.inception_features(x, variables, batch=2)  # 2 batches, the last padded
    assert grey.shape == (3, inc.FEATURE_DIM) and grey.dtype == np.float32
    assert np.isfinite(grey).all() and grey.std() > 0
    colour = inc.inception_features(np.repeat(x[:2], 3, -1), variables)  # same compiled shape
    np.testing.assert_allclose(colour, grey[:2], rtol=1e-5, atol=1e-5)
    assert inc.inception_features(x[:0], variables).shape == (0, inc.FEATURE_DIM)


def test_bad_input_shape(variables):
    with pytest.raises(ValueError, match="1 or 3 channels"):
        inc.inception_features(np.zeros((2, 32, 32, 2)), variables)


def test_missing_weights_file(tmp_path):
    path = tmp_path / "nope.npz"
    with pytest.raises(FileNotFoundError) as e:
        inc.load_inception(path)
    msg = str(e.value)
    assert str(path) in msg and inc.WEIGHTS_FILE in msg and inc.WEIGHTS_URL in msg
    assert "python -m jaxinv.models.inception convert" in msg


def test_npz_round_trip_and_bad_keys(tmp_path, variables):
    sd = inc.to_torch_state_dict(variables)
    assert sd["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert sd["Mixed_7c.branch_pool.bn.running_var"].shape == (192,)
    extra = {"fc.weight": np.zeros((1008, 2048)), "Conv2d_1a_3x3.bn.num_batches_tracked": 0}
    np.savez(tmp_path / "w.npz", **sd, **extra)  # ignored entries of pytorch-fid's file
    module, loaded = inc.load_inception(tmp_path / "w.npz")
    assert isinstance(module, inc.InceptionV3)
    for k, v in inc.to_torch_state_dict(loaded).items():
        np.testing.assert_array_equal(v, sd[k])

    bad = dict(sd)
    del bad["Mixed_6b.branch7x7_2.conv.weight"]
    bad["Mixed_6b.branch7x7_9.conv.weight"] = sd["Mixed_6b.branch7x7_2.conv.weight"]
    with pytest.raises(ValueError, match=r"missing: Mixed_6b\.branch7x7_2\.conv\.weight") as e:
        inc.convert_torch_state_dict(bad)
    assert "unexpected: Mixed_6b.branch7x7_9.conv.weight" in str(e.value)
    wrong = {**sd, "Mixed_5b.branch1x1.bn.bias": np.zeros(3)}
    with pytest.raises(ValueError, match=r"Mixed_5b\.branch1x1\.bn\.bias has shape \[3\]"):
        inc.convert_torch_state_dict(wrong)
    (tmp_path / "w.txt").write_text("")
    with pytest.raises(ValueError, match=r"expected a \.npz or \.pth"):
        inc.load_inception(tmp_path / "w.txt")


@needs_torch
def test_pth_and_convert_cli(tmp_path, variables):
    import torch

    sd = inc.to_torch_state_dict(variables)
    torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, tmp_path / "w.pth")
    _, loaded = inc.load_inception(tmp_path / "w.pth")
    assert inc.main(["convert", str(tmp_path / "w.pth"), str(tmp_path / "out.npz")]) == 0
    _, from_npz = inc.load_inception(tmp_path / "out.npz")
    for got in (loaded, from_npz):
        got = inc.to_torch_state_dict(got)
        assert got.keys() == sd.keys()
        for k, v in got.items():
            np.testing.assert_array_equal(v, sd[k])


def _random_fid_inception(torch, pfi, monkeypatch):
    """pytorch-fid's ``fid_inception_v3()`` with seeded random weights and BN statistics
    (its weight download patched out); returns the state dict."""
    import torchvision

    with monkeypatch.context() as m:  # build the architecture without loading anything
        m.setattr(torchvision.models.inception.Inception3, "load_state_dict",
                  lambda self, *a, **k: None)
        m.setattr(pfi, "load_state_dict_from_url", lambda *a, **k: None)
        net = pfi.fid_inception_v3()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, torch.nn.Conv2d):
                fan_in = mod.weight[0].numel()
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=g) * (2 / fan_in) ** .5)
            elif isinstance(mod, torch.nn.BatchNorm2d):
                c = mod.num_features
                mod.weight.copy_(0.5 + torch.rand(c, generator=g))
                mod.bias.copy_(0.2 * torch.randn(c, generator=g))
                mod.running_mean.copy_(0.2 * torch.randn(c, generator=g))
                mod.running_var.copy_(0.5 + torch.rand(c, generator=g))
    return net.state_dict()


@needs_pytorch_fid
@pytest.mark.parametrize("size", [(45, 70), (331, 307)], ids=["upsample", "downsample"])
def test_matches_pytorch_fid(monkeypatch, size):
    import pytorch_fid.inception as pfi
    import torch

    state = _random_fid_inception(torch, pfi, monkeypatch)
    monkeypatch.setattr(pfi, "load_state_dict_from_url", lambda *a, **k: state)
    ref_net = pfi.InceptionV3([3], resize_input=True, normalize_input=True).eval()
    x = np.random.default_rng(1).random((2, *size, 3), np.float32)
    with torch.no_grad():
        ref = ref_net(torch.from_numpy(x).permute(0, 3, 1, 2))[0][:, :, 0, 0].numpy()

    variables = inc.convert_torch_state_dict({k: v.numpy() for k, v in state.items()})
    ours = inc.inception_features(x, variables)
    rel = np.abs(ours - ref).max() / np.abs(ref).max()
    print(f"{size}: max |ref| {np.abs(ref).max():.4g}, max abs diff "
          f"{np.abs(ours - ref).max():.3g}, relative {rel:.3g}")
    assert ref.shape == ours.shape == (2, inc.FEATURE_DIM) and ref.std() > 0
    assert rel < 1e-3
