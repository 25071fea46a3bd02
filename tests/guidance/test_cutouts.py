"""Random crops: the SPEC.md section 4 size law, bounds, seeding, freshness, content."""

import pytest
import torch
import torch.nn.functional as F

from doodl.guidance import Cutouts

from .conftest import rand_images


def test_sizes_follow_the_power_law_and_stay_in_bounds():
    cut = Cutouts(n=200, power=0.3, seed=1).bind(16)
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
    small = torch.tensor([b[2] for b in Cutouts(n=200, power=0.06, seed=1).bind(16).sample_boxes(48, 64)], dtype=torch.float)
    assert small.mean() > sizes.mean()


def test_image_smaller_than_cut_size_uses_the_whole_side():
    boxes = Cutouts(n=10, seed=0).bind(32).sample_boxes(20, 24)
    assert all(size == 20 for _, _, size in boxes)


def test_seeded_reproducible_and_fresh_each_call_and_each_image():
    images = rand_images(1, 64).expand(2, -1, -1, -1)  # two identical images
    a, b = Cutouts(n=4, seed=7).bind(16), Cutouts(n=4, seed=7).bind(16)
    first = a(images)
    assert first.shape == (2, 4, 3, 16, 16)
    assert torch.equal(first, b(images))
    assert not torch.equal(first[0], first[1])  # each image gets its own crops
    assert not torch.equal(first, a(images))  # fresh crops on the next call
    assert not torch.equal(first, Cutouts(n=4, seed=8).bind(16)(images))
    g = torch.Generator().manual_seed(7)
    assert torch.equal(Cutouts(n=4).bind(16, generator=g)(images), first)


def test_crops_are_the_pooled_boxes():
    images = rand_images(2, 40, seed=3)
    out = Cutouts(n=3, power=1.0, seed=5).bind(12)(images)
    replay = Cutouts(n=3, power=1.0, seed=5).bind(12)
    for b in range(2):
        for k, (top, left, size) in enumerate(replay.sample_boxes(40, 40)):
            expected = F.adaptive_avg_pool2d(images[b : b + 1, :, top : top + size, left : left + size], 12)[0]
            torch.testing.assert_close(out[b, k], expected)


def test_rectangular_cut_size():
    out = Cutouts(n=3, seed=0).bind((16, 24))(rand_images(2, 48))
    assert out.shape == (2, 3, 3, 16, 24)


def test_gradient_flows_through_crops():
    images = rand_images(1, 32).requires_grad_(True)
    Cutouts(n=4, seed=0).bind(8)(images).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_bad_arguments():
    for n in (-1, 0, None, 2.0, True):  # no crops is the loss's cutouts=None, not n=0
        with pytest.raises(ValueError, match=r"n must be a number of crops >= 1.*cutouts: null"):
            Cutouts(n=n)
    with pytest.raises(ValueError, match="power"):
        Cutouts(power=0).bind(16)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        Cutouts().bind(16)(torch.rand(3, 16, 16))


def test_per_image_generators_make_crops_independent_of_the_batch():
    """With one generator per image (an item's "generator"), image k's crops do not depend on
    which other images share its batch."""
    import torch

    from doodl.guidance.cutouts import Cutouts, generators_of

    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    cut = Cutouts(n=4, seed=123).bind(8)
    items = [{"generator": torch.Generator().manual_seed(s)} for s in (1, 2)]
    batch = cut(images, generators_of(items))
    alone = cut(images[1:], [torch.Generator().manual_seed(2)])
    torch.testing.assert_close(batch[1:], alone, rtol=0, atol=0)
    assert generators_of([{"prompt": "x"}]) is None
    with pytest.raises(ValueError, match="one per image"):
        cut(images, [None])


def test_min_size_makes_crops_smaller_than_the_input_and_upsamples_them():
    """16 px images for a 16 px model: without min_size every crop is the whole image (SPEC rule);
    with min_size=6 sizes follow the same power law over [10, 16], and a crop below the input size
    is the bilinear upsampling of its box, a larger one its average pooling."""
    images = rand_images(2, 16, seed=4)
    assert all(size == 16 for *_, size in Cutouts(n=20, seed=0).bind(16).sample_boxes(16, 16))
    cut, replay = Cutouts(n=40, power=1.0, seed=2, min_size=6).bind(12), Cutouts(n=40, power=1.0, seed=2, min_size=6).bind(12)
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
    Cutouts(n=4, seed=0, min_size=8).bind(16)(x).sum().backward()
    assert x.grad.abs().sum() > 0
    assert "min_size=6" in repr(cut)


def test_min_size_bad_values_say_what_to_do():
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="min_size must be a positive"):
            Cutouts(n=4, min_size=bad)
    with pytest.raises(ValueError, match="lower min_size to at most 16"):
        Cutouts(n=4, min_size=20).bind(16)(rand_images(1, 16))


def test_without_min_size_small_images_are_still_pooled():
    """SPEC's path is untouched: an image smaller than cut_size gives whole-image crops, pooled."""
    images = rand_images(1, 12, seed=5)
    out = Cutouts(n=2, seed=0).bind(20)(images)
    torch.testing.assert_close(out[0, 0], F.adaptive_avg_pool2d(images, 20)[0])


def test_fixed_crops():
    cut = Cutouts(n=4, seed=3, min_size=8).bind(16)
    images = rand_images(2, 16, seed=6)
    fixed = cut.for_items(images, fixed=True)
    torch.testing.assert_close(fixed, cut.for_items(images, fixed=True), rtol=0, atol=0)  # the same at every call
    assert not torch.equal(cut.for_items(images), cut.for_items(images))  # fresh crops otherwise


def test_bind_makes_a_new_bound_object_with_a_fresh_stream_and_leaves_the_settings_alone():
    """A loss binds the injected settings to its input size: a new object, seeded afresh, so two
    losses given the same settings each get the stream a fresh object would; unbound ones refuse to crop."""
    settings = Cutouts(n=3, power=0.5, min_size=6, seed=4)
    images = rand_images(2, 16, seed=1)
    a, b = settings.bind(12), settings.bind(12)
    assert a is not settings and settings.cut_size is None and settings.generator is None
    assert a.cut_size == (12, 12) and (a.n, a.power, a.min_size, a.seed) == (3, 0.5, 6, 4)
    first = a(images)
    assert torch.equal(first, b(images))  # b's stream did not move when a drew
    assert torch.equal(a.bind(12)(images), first)  # rebinding starts the stream again
    with pytest.raises(RuntimeError, match=r"bind\(cut_size\)"):
        settings(images)
    with pytest.raises(ValueError, match="cut_size must be positive"):
        settings.bind(0)


def test_losses_refuse_the_old_integer_form_with_the_new_one():
    from doodl.guidance.cutouts import bind_cutouts, check_cutouts

    assert check_cutouts(None) is None and bind_cutouts(None, 16) is None
    with pytest.raises(ValueError, match=r"cutouts=16 \(a number of crops\) is the old form.*init_args: \{n: 16"):
        check_cutouts(16, "DigitClassifierLoss")
    with pytest.raises(ValueError, match="cutouts must be a doodl.guidance.cutouts.Cutouts"):
        check_cutouts({"n": 4})
    with pytest.raises(ValueError, match="input size"):
        bind_cutouts(Cutouts(n=2), None, "the classifier")


def test_the_parser_refuses_the_old_form_and_the_hint_names_the_new_one():
    """jsonargparse itself refuses ``cutouts: 16`` on a loss (a number is not a Cutouts); the hint
    for that message names the new form with the same number of crops, and is None otherwise."""
    from jsonargparse import ArgumentParser

    from doodl.guidance import ClassifierLoss
    from doodl.guidance.cutouts import parser_error_hint

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--guidance", type=ClassifierLoss)
    config = '{"class_path": "doodl.guidance.ClassifierLoss", "init_args": {"model": "m", "cutouts": 12}}'
    with pytest.raises(Exception) as err:
        parser.parse_args(["--guidance", config])
    hint = parser_error_hint(str(err.value))
    assert hint is not None and "init_args: {n: 12" in hint and "min_size" in hint
    assert parser_error_hint("Parser key 'model.iterations': Expected a <class 'int'>") is None
    good = '{"class_path": "doodl.guidance.ClassifierLoss", "init_args": {"model": "m", "cutouts": {"n": 4, "min_size": 8}}}'
    cfg = parser.parse_args(["--guidance", good])
    assert cfg.guidance.init_args.cutouts.class_path in ("doodl.guidance.Cutouts", "doodl.guidance.cutouts.Cutouts")
    assert cfg.guidance.init_args.cutouts.init_args.min_size == 8


def test_no_function_in_the_package_re_declares_the_crop_keywords():
    """The crops are one injected object: no function or class in doodl/ (the app's module, the
    runner, every loss) takes cut_power / min_cut / a crop count; a ``cutouts`` parameter is a
    ``Cutouts | None``. (A source scan: nothing is imported.)"""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "doodl"
    offenders = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for arg in node.args.args + node.args.kwonlyargs:
                where = f"{path.relative_to(root.parent)}:{node.lineno} {node.name}({arg.arg})"
                if arg.arg in ("cut_power", "min_cut", "cut_seed", "n_cutouts", "num_cutouts"):
                    offenders.append(where)
                elif arg.arg == "cutouts" and (arg.annotation is None or "Cutouts" not in ast.unparse(arg.annotation)):
                    offenders.append(where + ": not annotated Cutouts | None")
    assert offenders == []
