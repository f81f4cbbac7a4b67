"""The U-Net's layout and mask: the seed's shape, the fused decoder, a mask in [0, 1]."""

import pytest
import torch

from cassette_denoise.model import UNet, UNetConfig, parameter_count, upsampled_conv


def test_seed_layout_has_10_down_convolutions_and_1_9_m_parameters_at_width_16():
    model = UNet(UNetConfig(base_width=16))
    down_convs = [m for block in model.down for m in block if isinstance(m, torch.nn.Conv2d)]
    assert len(down_convs) == 10
    assert 1.85e6 < parameter_count(model) < 2.0e6


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_the_decoder_upsamples_and_convolves_exactly_as_the_seeds_layers_would(memory_format):
    torch.manual_seed(0)
    model = UNet(UNetConfig(base_width=4, levels=3, noise_floor_input=True)).eval().to(memory_format=memory_format)
    x = (torch.rand(2, 2, 32, 48) * 2 - 1).contiguous(memory_format=memory_format)
    for up in model.up:  # each block on its own: upsample, pad, 2×2 conv against the one-step version
        block_input = torch.randn(2, up[2].in_channels, 8, 12).contiguous(memory_format=memory_format)
        with torch.no_grad():
            expected = up(block_input)
            got = up[3](upsampled_conv(block_input, up[2]))
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        assert got.is_contiguous(memory_format=memory_format)
    # ... and the whole network against the layers applied one by one.
    skips, h = [], x
    with torch.no_grad():
        for level, block in enumerate(model.down):
            h = block(model.pool(h) if level else h)
            skips.append(h)
        for up, merge, skip in zip(model.up, model.merge, reversed(skips[:-1])):
            h = merge(torch.cat([up(h), skip], dim=1))
        torch.testing.assert_close(model(x), torch.sigmoid(model.head(h)), rtol=1e-5, atol=1e-6)


def test_mask_stays_in_0_1_and_starts_near_pass_through():
    torch.manual_seed(0)
    model = UNet(UNetConfig(base_width=4)).eval()
    features = torch.rand(2, 1, 512, 64) * 2 - 1
    mask = model(features)
    assert mask.shape == features.shape
    assert mask.min() >= 0 and mask.max() <= 1
    assert mask.mean() > 0.9  # an untrained model passes (nearly) everything through
    with pytest.raises(ValueError, match="multiples of 16"):
        model(torch.zeros(1, 1, 512, 100))


def test_width_growth_sets_each_levels_width_and_a_slower_growth_is_cheaper(tmp_path):
    from cassette_denoise.checkpoint import load_model, save_model

    doubling, slower = UNetConfig(base_width=8), UNetConfig(base_width=8, width_growth=1.5, levels=6)
    assert doubling.widths == (8, 16, 32, 64, 128) and slower.widths == (8, 12, 18, 27, 40, 61)
    model = UNet(slower).eval()
    assert [block[0].out_channels for block in model.down] == list(slower.widths)
    features = torch.rand(1, 1, 64, 64) * 2 - 1
    loaded, _ = load_model(save_model(tmp_path / "slower.safetensors", model))
    assert loaded.config == slower
    torch.testing.assert_close(loaded(features), model(features))
    assert parameter_count(model) < parameter_count(UNet(doubling)) / 2
    with pytest.raises(ValueError, match="width_growth"):
        UNetConfig(width_growth=0.5)


def test_a_patch_front_end_folds_blocks_into_channels_and_gives_one_mask_value_per_bin_and_frame(tmp_path):
    from cassette_denoise.checkpoint import load_model, save_model

    torch.manual_seed(0)
    config = UNetConfig(base_width=6, levels=3, patch=2, noise_floor_input=True)
    assert config.frame_multiple == 8
    model = UNet(config).eval()
    assert model.down[0][0].in_channels == 8 and model.head.out_channels == 4
    features = torch.rand(1, 2, 32, 48) * 2 - 1
    mask = model(features)
    assert mask.shape == (1, 1, 32, 48) and 0 <= mask.min() and mask.max() <= 1
    # The four mask values of a 2×2 block are four outputs of one position of the half-resolution network.
    with torch.no_grad():
        folded = torch.nn.functional.pixel_unshuffle(model(features, logits=True), 2)  # (1, 4, 16, 24)
    assert folded.shape == (1, 4, 16, 24)
    assert not torch.equal(folded[:, 0], folded[:, 3])
    loaded, _ = load_model(save_model(tmp_path / "patch.safetensors", model))
    assert loaded.config == config
    torch.testing.assert_close(loaded(features), mask)
    with pytest.raises(ValueError, match="multiples of 8"):
        model(torch.zeros(1, 2, 32, 44))
    with pytest.raises(ValueError, match="patch"):
        UNetConfig(patch=3)


def test_inference_keeps_the_decoders_phase_weights_only_while_the_weights_stay_the_same():
    torch.manual_seed(0)
    model = UNet(UNetConfig(base_width=4, levels=3)).eval()
    features = torch.rand(1, 1, 32, 32) * 2 - 1
    with_grad = model(features, logits=True)  # computes them afresh, in the graph
    with torch.inference_mode():
        first, again = model(features, logits=True), model(features, logits=True)
    assert torch.equal(first, with_grad.detach()) and torch.equal(again, first)
    with torch.no_grad():
        model.up[0][2].weight.mul_(2.0)  # as an optimiser step or a loaded state would
        changed = model(features, logits=True)
    torch.testing.assert_close(changed, model(features, logits=True).detach())
    assert not torch.equal(changed, first)
    # Kept in the weights' precision even when first made under autocast, so that float32 runs can use them.
    with torch.no_grad():
        model.up[0][2].weight.mul_(1.0)  # the same values, a new version: made afresh on the next call
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(features, logits=True)
    with torch.inference_mode():
        assert torch.equal(model(features, logits=True), changed)
