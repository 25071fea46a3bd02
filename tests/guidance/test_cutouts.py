"""Random crops: the SPEC.md section 4 size law, bounds, seeding, freshness, content."""

import pytest
import torch
import torch.nn.functional as F

from doodl.guidance import Cutouts

from .conftest import rand_images


def test_sizes_follow_the_power_law_and_stay_in_bounds():
    cut = Cutouts(16, n=200, power=0.3, seed=1)
    boxes = cut.sample_boxes(48, 64)
    # replay the generator: size = int(u**power * (max - min) + min), min = min(48, 64, 16), max = 48
    g = torch.Generator().manual_seed(1)
    for top, left, size in boxes:
        u = torch.rand((), generator=g).item()
        assert size == int(u**0.3 * (48 - 16) + 16)
        torch.randint(0, 48 - size + 1, (), generator=g), torch.randint(0, 64 - size + 1, (), generator=g)
        assert 16 <= size <= 48 and 0 <= top <= 48 - size and 0 <= left <= 64 - size
    sizes = torch.tensor([b[2] for b in boxes], dtype=torch.float)
    # u**0.3 has mean 1/1.3: crops are mostly large
    assert abs(sizes.mean().item() - (16 + 32 / 1.3)) < 2.5
    # a smaller power makes larger crops
    small = torch.tensor([b[2] for b in Cutouts(16, n=200, power=0.06, seed=1).sample_boxes(48, 64)], dtype=torch.float)
    assert small.mean() > sizes.mean()


def test_image_smaller_than_cut_size_uses_the_whole_side():
    boxes = Cutouts(32, n=10, seed=0).sample_boxes(20, 24)
    assert all(size == 20 for _, _, size in boxes)


def test_seeded_reproducible_and_fresh_each_call_and_each_image():
    images = rand_images(1, 64).expand(2, -1, -1, -1)  # two identical images
    a, b = Cutouts(16, n=4, seed=7), Cutouts(16, n=4, seed=7)
    first = a(images)
    assert first.shape == (2, 4, 3, 16, 16)
    assert torch.equal(first, b(images))
    assert not torch.equal(first[0], first[1])  # each image gets its own crops
    assert not torch.equal(first, a(images))  # fresh crops on the next call
    assert not torch.equal(first, Cutouts(16, n=4, seed=8)(images))
    g = torch.Generator().manual_seed(7)
    assert torch.equal(Cutouts(16, n=4, generator=g)(images), first)


def test_crops_are_the_pooled_boxes():
    images = rand_images(2, 40, seed=3)
    out = Cutouts(12, n=3, power=1.0, seed=5)(images)
    replay = Cutouts(12, n=3, power=1.0, seed=5)
    for b in range(2):
        for k, (top, left, size) in enumerate(replay.sample_boxes(40, 40)):
            expected = F.adaptive_avg_pool2d(images[b : b + 1, :, top : top + size, left : left + size], 12)[0]
            torch.testing.assert_close(out[b, k], expected)


@pytest.mark.parametrize("n", [0, None])
def test_no_crops_pools_the_whole_image(n):
    images = rand_images(2, 48)
    out = Cutouts((16, 24), n=n)(images)
    assert out.shape == (2, 1, 3, 16, 24)
    torch.testing.assert_close(out[:, 0], F.adaptive_avg_pool2d(images, (16, 24)))


def test_gradient_flows_through_crops():
    images = rand_images(1, 32).requires_grad_(True)
    Cutouts(8, n=4, seed=0)(images).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="n must be >= 0"):
        Cutouts(16, n=-1)
    with pytest.raises(ValueError, match="power"):
        Cutouts(16, power=0)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        Cutouts(16)(torch.rand(3, 16, 16))


def test_per_image_generators_make_crops_independent_of_the_batch():
    """With one generator per image (an item's "generator"), image k's crops do not depend on
    which other images share its batch."""
    import torch

    from doodl.guidance.cutouts import Cutouts, generators_of

    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    cut = Cutouts(8, n=4, seed=123)
    items = [{"generator": torch.Generator().manual_seed(s)} for s in (1, 2)]
    batch = cut(images, generators_of(items))
    alone = cut(images[1:], [torch.Generator().manual_seed(2)])
    torch.testing.assert_close(batch[1:], alone, rtol=0, atol=0)
    assert generators_of([{"prompt": "x"}]) is None
    with pytest.raises(ValueError, match="one per image"):
        cut(images, [None])


def test_min_cut_makes_crops_smaller_than_the_input_and_upsamples_them():
    """16 px images for a 16 px model: without min_cut every crop is the whole image (SPEC rule);
    with min_cut=10 sizes follow the same power law over [10, 16], and a crop below the input size
    is the bilinear upsampling of its box, a larger one its average pooling."""
    images = rand_images(2, 16, seed=4)
    assert all(size == 16 for *_, size in Cutouts(16, n=20, seed=0).sample_boxes(16, 16))
    cut, replay = Cutouts(12, n=40, power=1.0, seed=2, min_cut=6), Cutouts(12, n=40, power=1.0, seed=2, min_cut=6)
    boxes = replay.sample_boxes(16, 16)
    g = torch.Generator().manual_seed(2)
    for top, left, size in boxes:
        assert size == int(torch.rand((), generator=g).item() * (16 - 6) + 6)
        torch.randint(0, 16 - size + 1, (), generator=g), torch.randint(0, 16 - size + 1, (), generator=g)
    sizes = {b[2] for b in boxes}
    assert min(sizes) < 12 < max(sizes)  # both branches are exercised
    out = cut(images[:1])
    for k, (top, left, size) in enumerate(boxes):
        box = images[:1, :, top : top + size, left : left + size]
        if size < 12:
            expected = F.interpolate(box, size=(12, 12), mode="bilinear", align_corners=False)
        else:
            expected = F.adaptive_avg_pool2d(box, 12)
        torch.testing.assert_close(out[0, k], expected[0])
    x = images.clone().requires_grad_(True)
    Cutouts(16, n=4, seed=0, min_cut=8)(x).sum().backward()
    assert x.grad.abs().sum() > 0
    assert "min_cut=6" in repr(cut)


def test_min_cut_bad_values_say_what_to_do():
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="min_cut must be a positive"):
            Cutouts(16, n=4, min_cut=bad)
    with pytest.raises(ValueError, match="lower min_cut to at most 16"):
        Cutouts(16, n=4, min_cut=20)(rand_images(1, 16))
    with pytest.raises(ValueError, match="drop min_cut"):
        Cutouts(16, n=0, min_cut=8)


def test_without_min_cut_small_images_are_still_pooled():
    """SPEC's path is untouched: an image smaller than cut_size gives whole-image crops, pooled."""
    images = rand_images(1, 12, seed=5)
    out = Cutouts(20, n=2, seed=0)(images)
    torch.testing.assert_close(out[0, 0], F.adaptive_avg_pool2d(images, 20)[0])


def test_optional_cutouts_and_fixed_crops():
    assert Cutouts.optional(16, 0) is None and Cutouts.optional(16, None) is None
    with pytest.raises(ValueError, match="min_cut is set but cutouts is off"):
        Cutouts.optional(16, None, min_cut=8)
    cut = Cutouts.optional(16, 4, seed=3, min_cut=8)
    images = rand_images(2, 16, seed=6)
    fixed = cut.for_items(images, fixed=True)
    torch.testing.assert_close(fixed, cut.for_items(images, fixed=True), rtol=0, atol=0)  # the same at every call
    assert not torch.equal(cut.for_items(images), cut.for_items(images))  # fresh crops otherwise
