"""torchmetrics' CLIPScore with transformers 5: the unwrapped crash and the wrapped metric."""

import time

import pytest
import torch


@pytest.fixture(scope="module")
def tiny_hf_clip(tmp_path_factory):
    """A random transformers CLIPModel and CLIPProcessor saved with their own save_pretrained."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    folder = tmp_path_factory.mktemp("hf_clip")
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2,
                         vocab_size=64, max_position_embeddings=77),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(folder)
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for token in letters + [f"{c}</w>" for c in letters]:
        vocab[token] = len(vocab)
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=CLIPTokenizer(vocab=vocab, merges=[]),
    )
    processor.save_pretrained(folder)
    return str(folder)


IMAGES = torch.randint(0, 256, (2, 3, 40, 40), generator=torch.Generator().manual_seed(0)).float()
CAPTIONS = ["a cat", "a red dog"]


def test_unwrapped_torchmetrics_crashes(tiny_hf_clip):
    from torchmetrics.multimodal.clip_score import CLIPScore as TorchmetricsCLIPScore
    from transformers import CLIPModel, CLIPProcessor

    model, processor = CLIPModel.from_pretrained(tiny_hf_clip), CLIPProcessor.from_pretrained(tiny_hf_clip)
    metric = TorchmetricsCLIPScore(model_name_or_path=lambda: (model, processor))
    with pytest.raises(AttributeError, match="BaseModelOutputWithPooling"):
        metric(IMAGES, CAPTIONS)


def test_wrapped_metric_matches_direct_computation(tiny_hf_clip):
    from transformers import CLIPModel, CLIPProcessor

    from doodl.guidance import CLIPScore

    metric = CLIPScore(tiny_hf_clip)
    value = metric(IMAGES, CAPTIONS)

    model, processor = CLIPModel.from_pretrained(tiny_hf_clip).eval(), CLIPProcessor.from_pretrained(tiny_hf_clip)
    with torch.no_grad():
        pixels = processor(images=list(IMAGES), return_tensors="pt")["pixel_values"]
        image = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
        tokens = processor(text=CAPTIONS, return_tensors="pt", padding=True)
        text = model.text_projection(model.text_model(**tokens).pooler_output)
    cos = torch.nn.functional.cosine_similarity(image, text, dim=-1)
    expected = (100 * cos).clamp(min=0).mean()
    torch.testing.assert_close(value, expected)
    assert not any(p.requires_grad for p in metric.model.parameters())


def test_callable_source_is_wrapped(tiny_hf_clip):
    from transformers import CLIPModel, CLIPProcessor

    from doodl.guidance import CLIPScore, TensorFeatures

    metric = CLIPScore(lambda: (CLIPModel.from_pretrained(tiny_hf_clip), CLIPProcessor.from_pretrained(tiny_hf_clip)))
    assert isinstance(metric.model, TensorFeatures)
    assert metric(IMAGES, CAPTIONS).ndim == 0


def test_offline_hub_id_fails_at_once(monkeypatch, tmp_path):
    from doodl.guidance import CLIPScore

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError, match="local folder"):
        CLIPScore("doodl-test/not-a-cached-clip")
    assert time.perf_counter() - start < 5
