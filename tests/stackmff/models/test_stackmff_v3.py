"""The V3 network: parameter count, shapes, gradients, checkpoints, equivariance, agreement with upstream-style code."""

from __future__ import annotations

import pytest
import torch

from stackmff.errors import StackMFFError
from stackmff.models._reference import UpstreamStyleV3
from stackmff.models.checkpoint import load_model, save_checkpoint
from stackmff.models.registry import create_model, get_config, list_models
from stackmff.models.stackmff_v3 import (
    StackMFFV3,
    StackMFFV3Config,
    count_parameters,
    expected_index,
    remap_upstream_state_dict,
    star_depth,
    star_index,
)

TINY = {"dims": (16, 32, 64, 128), "depths": (1, 1, 1, 1)}


def test_upstream_parameter_count():
    m = StackMFFV3()
    assert count_parameters(m) == 2_738_268
    assert sum(p.numel() for p in m.attn_layers.parameters()) == 6_560  # SPEC: the attention has 6,560


@pytest.mark.parametrize("name", list_models())
def test_variants_forward_shape_no_nan(name):
    torch.manual_seed(0)
    m = create_model(name).eval()
    with torch.no_grad():
        y = m(torch.rand(1, 3, 32, 64))
    assert y.shape == (1, 3, 32, 64)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize(("b", "n", "h", "w"), [(1, 2, 32, 32), (2, 5, 64, 32), (1, 7, 32, 96)])
def test_shapes_for_several_sizes(b, n, h, w):
    m = StackMFFV3(StackMFFV3Config(**TINY)).eval()
    with torch.no_grad():
        assert m(torch.rand(b, n, h, w)).shape == (b, n, h, w)


@pytest.mark.parametrize("name", ["v3", "v3_small"])
def test_backward_reaches_every_parameter(name):
    torch.manual_seed(0)
    m = create_model(name).train()
    y = m(torch.rand(2, 3, 64, 64))
    torch.nn.functional.cross_entropy(y, torch.randint(0, 3, (2, 64, 64))).backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    zero = [n for n, p in m.named_parameters() if p.grad.abs().sum() == 0]
    assert not zero


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(1)
    m = create_model("v3_small", rope=True).eval()
    path = save_checkpoint(tmp_path / "m.pt", m, step=7)
    m2 = load_model(path)
    assert m2.cfg == m.cfg and m2.cfg.rope and m2.cfg.extras["variant"] == "v3_small"
    x = torch.rand(1, 4, 32, 32)
    with torch.no_grad():
        assert torch.equal(m(x), m2(x))
    half = load_model(save_checkpoint(tmp_path / "h.pt", m, half=True))
    with torch.no_grad():
        assert (m(x) - half(x)).abs().max() < 5e-2  # fp16 storage of weights only


def test_without_rope_the_model_is_order_equivariant():
    torch.manual_seed(0)
    m = create_model("v3_small").eval()  # rope=False
    x = torch.rand(1, 6, 32, 64)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    with torch.no_grad():
        y, yp = m(x), m(x[:, perm])
    torch.testing.assert_close(yp, y[:, perm], atol=1e-5, rtol=1e-5)


def test_with_rope_the_model_depends_on_order():
    torch.manual_seed(0)
    m = create_model("v3_small", rope=True).eval()
    x = torch.rand(1, 4, 32, 32)
    perm = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        assert (m(x[:, perm]) - m(x)[:, perm]).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["v3", "v3_norope"])
def test_fast_model_matches_upstream_style_multihead_attention(name):
    torch.manual_seed(0)
    m = create_model(name).eval()
    for p in m.attn_layers.parameters():  # non-trivial attention weights, not the near-identity init
        p.data.normal_(0, 0.3)
    ref = UpstreamStyleV3(m).eval()
    x = torch.rand(1, 4, 32, 64)
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(("name", "n"), [("v3", 5), ("v3_small", 2), ("v3_small", 9)])
def test_planar_interaction_equals_the_token_interaction(name, n):
    # the inference path (channel-major, hand-written attention) computes the same logits as the training path
    torch.manual_seed(0)
    m = create_model(name).eval()
    for p in m.attn_layers.parameters():  # non-trivial attention weights, not the near-identity init
        p.data.normal_(0, 0.3)
    tokens = torch.rand(300, n, m.cfg.embed_dim)  # (P, N, E)
    with torch.no_grad():
        ref = m.interact(tokens)  # (P, N)
    planar = m.interact_planar(tokens.permute(2, 1, 0).contiguous())  # (E, N, P) -> (N, P)
    torch.testing.assert_close(planar.T, ref, atol=1e-5, rtol=1e-5)
    assert (ref.argmax(1) == planar.argmax(0)).float().mean() > 0.99


def test_remap_upstream_names():
    m = create_model("v3")
    upstream = {
        k.replace("encoder.", "feature_extraction.encoder.", 1).replace(
            "attn_layers.", "layer_interaction.layer_interaction_depth.layers.", 1
        ): v
        for k, v in m.state_dict().items()
    }
    upstream = {"module." + k: v for k, v in upstream.items()}  # DataParallel prefix
    assert remap_upstream_state_dict(upstream).keys() == m.state_dict().keys()


def test_expected_index_counts_layers_from_one():
    logits = torch.tensor([[0.0, 0.0, 50.0], [50.0, 0.0, 0.0]]).T[None, :, :, None]  # (1, 3, 2, 1)
    e = expected_index(logits, dim=1)
    torch.testing.assert_close(e.flatten(), torch.tensor([3.0, 1.0]), atol=1e-6, rtol=0)


def test_star_depth_is_min_max_normalised_over_the_whole_batch():
    torch.manual_seed(0)
    lg = torch.randn(2, 5, 4, 6)
    d = star_depth(lg, dim=1)
    p = lg.softmax(1)
    e = (p * torch.arange(1.0, 6.0)[None, :, None, None]).sum(1)  # written out: E[k], k = 1..N
    torch.testing.assert_close(d, (e - e.min()) / (e.max() - e.min()))
    assert d.min() == 0 and d.max() == 1  # over both images together, not per image
    assert d[0].min() > 0 or d[1].min() > 0
    idx = star_index(d, 5)
    torch.testing.assert_close(idx, torch.round(d * 4).long())
    assert torch.isfinite(star_depth(torch.zeros(1, 3, 2, 2))).all()  # constant map: 0, not NaN


def test_unknown_variant_and_option_raise():
    with pytest.raises(StackMFFError, match="unknown model variant"):
        get_config("v9")
    with pytest.raises(StackMFFError, match="unknown model option"):
        get_config("v3", widht=3)
    with pytest.raises(ValueError, match="head"):
        StackMFFV3Config(head="bogus")


def test_folded_batchnorm_computes_the_same_function():
    from stackmff.models.stackmff_v3 import fold_batchnorm

    torch.manual_seed(0)
    m = create_model("v3_small", rope=True)
    with torch.no_grad():  # non-trivial running statistics
        m.train()
        for _ in range(2):
            m(torch.rand(2, 3, 32, 32))
    m.eval()
    f = fold_batchnorm(m)
    assert not any(isinstance(x, torch.nn.BatchNorm2d) for x in f.modules())
    x = torch.rand(1, 4, 32, 64)
    with torch.no_grad():
        torch.testing.assert_close(f(x), m(x), atol=1e-5, rtol=1e-5)
    assert any(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules())  # the copy left the model alone
    with torch.no_grad():
        expected = f(x)
        g = fold_batchnorm(m, inplace=True)  # a model nobody else holds: folded without the copy
        assert g is m and not any(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules())
        torch.testing.assert_close(g(x), expected, atol=0, rtol=0)
