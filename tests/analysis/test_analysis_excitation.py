"""Per-class mean excitation from gate hooks (paper Sec. 7.2) and the PNG figures."""

import pytest
import torch

from senet import create_model
from senet.analysis.excitation import collect_excitations, paper_block_name, se_blocks
from senet.analysis.excitation import plot_excitations
from senet.analysis.plots import plot_training_curves


def test_paper_block_names():
    assert paper_block_name("layer2.3.se") == "SE_3_4"
    assert paper_block_name("features.7.se") == "features.7.se"
    assert list(se_blocks(create_model("se_resnet20", se_stages=(3, 4)))) == [
        "SE_3_1", "SE_3_2", "SE_3_3", "SE_4_1", "SE_4_2", "SE_4_3",
    ]


def test_per_class_means_equal_the_excitations_computed_directly():
    model = create_model("se_resnet20", num_classes=3, in_chans=1).eval()
    images = torch.randn(10, 1, 8, 8)
    labels = torch.tensor([0, 1, 1, 2, 2, 2, 0, 1, 2, 2])
    batches = [(images[:4], labels[:4]), (images[4:], labels[4:])]
    stats = collect_excitations(model, batches, 3, classes=["a", "b", "c"])
    assert stats.counts.tolist() == [2, 3, 5]

    direct = {}
    blocks = se_blocks(model)

    def keep(name):
        def hook(module, inputs, output):
            direct[name] = module.excitation(inputs[0])  # returns None: the block's output is left alone

        return hook

    model.set_se_impl("naive")  # hooks on the blocks: the blocks called as modules
    hooks = [block.register_forward_hook(keep(name)) for name, block in blocks.items()]
    with torch.no_grad():
        model(images)
    for hook in hooks:
        hook.remove()
    for name in blocks:
        s = direct[name].flatten(1)  # (N, C)
        for c in range(3):
            assert torch.allclose(stats.per_class[name][c], s[labels == c].mean(0), atol=1e-6)
        assert torch.allclose(stats.mean(name), s.mean(0), atol=1e-6)
        assert ((0 < stats.per_class[name]) & (stats.per_class[name] < 1)).all()  # sigmoid gate
    for name in blocks:  # the spread between classes, averaged over channels
        expected = stats.per_class[name].std(0, unbiased=False).mean()
        assert stats.class_spread(name) == pytest.approx(float(expected), rel=1e-6) and expected > 0


def test_max_images_and_models_without_se():
    model = create_model("se_resnet20", num_classes=2)
    batches = [(torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 0, 1]))] * 3
    assert collect_excitations(model, batches, 2, max_images=6).counts.sum() == 6
    with pytest.raises(ValueError, match="has no SE blocks"):
        collect_excitations(create_model("resnet20"), batches, 2)


def test_figures_are_png_files(tmp_path):
    model = create_model("se_resnet20", num_classes=2)
    stats = collect_excitations(model, [(torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 0, 1]))], 2)
    path = plot_excitations(stats, tmp_path / "excitation.png", title="test")
    assert path.read_bytes()[:4] == b"\x89PNG"
    rows = [{"epoch": 1, "train_loss": 2.0, "val_loss": 1.5, "val_top1_err": 50.0},
            {"epoch": 2, "train_loss": 1.0, "val_loss": 1.2, "val_top1_err": 40.0}]
    assert plot_training_curves({"a": rows, "b": rows}, tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
