"""``models.encode_tokens``: text features computed up to the longest end token equal open_clip's full pass."""

from __future__ import annotations

import torch

from rsretrieve.models import encode_tokens


def test_cut_padding_gives_open_clips_features(tiny_model) -> None:
    texts = ["farmland", "a harbour with cranes next to a river crossing farmland", "x " * 200]  # the last: truncated
    net = tiny_model.model
    assert net.attn_mask is not None and net.text_pool_type == "argmax"  # the cut path is the one tested
    for batch in (texts, texts[:1], texts[1:2]):
        tokens = tiny_model.tokenizer(batch)
        with torch.inference_mode():
            full = net.encode_text(tokens)
            cut = encode_tokens(net, tokens)
        assert torch.allclose(cut, full, atol=1e-5, rtol=1e-5)


def test_other_text_towers_go_through_open_clip(tiny_model) -> None:
    class Tower:
        text_pool_type = "last"

        def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
            return tokens.float()

    tokens = tiny_model.tokenizer(["farmland"])
    assert torch.equal(encode_tokens(Tower(), tokens), tokens.float())
