"""meanP and WTI against direct per-pair formulas, and how masks (real or the reference's) shape the scores."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from side4video.retrieval.similarity import WeightedTokenInteraction, masked_softmax, mean_pooled_similarity

D = 8


def random_masks(generator: torch.Generator, n: int, length: int) -> torch.Tensor:
    """Masks with a random number (1..length) of valid leading tokens, as padded batches have."""
    counts = torch.randint(1, length + 1, (n,), generator=generator)
    return torch.arange(length)[None, :] < counts[:, None]


def wti_module(seed: int = 0, **flags: bool) -> WeightedTokenInteraction:
    torch.manual_seed(seed)
    head = WeightedTokenInteraction(D, **flags)
    # the reference's N(0, 0.02) init gives near-uniform weights; larger weights make the weighting visible
    with torch.no_grad():
        for param in head.parameters():
            param.normal_(0.0, 0.5)
    return head


def wti_by_loop(head: WeightedTokenInteraction, words, word_mask, frames, frame_mask) -> torch.Tensor:
    """The WTI formula written pair by pair over the valid tokens only."""
    out = torch.zeros(words.shape[0], frames.shape[0])
    for a in range(words.shape[0]):
        w = words[a][word_mask[a]]
        word_weight = torch.softmax(head.text_weight_fc(w).squeeze(-1), dim=0)
        for b in range(frames.shape[0]):
            f = frames[b][frame_mask[b]]
            frame_weight = torch.softmax(head.video_weight_fc(f).squeeze(-1), dim=0)
            cos = F.normalize(w, dim=-1) @ F.normalize(f, dim=-1).T                # [words, frames]
            text_to_video = (cos.max(dim=1).values * word_weight).sum()
            video_to_text = (cos.max(dim=0).values * frame_weight).sum()
            out[a, b] = (text_to_video + video_to_text) / 2
    return out


def wti_like_the_reference(head, words, word_mask, frames) -> torch.Tensor:
    """The reference's computation pair by pair: every frame valid, masked word pairs score 0 (not excluded)."""
    out = torch.zeros(words.shape[0], frames.shape[0])
    for a in range(words.shape[0]):
        logits = head.text_weight_fc(words[a]).squeeze(-1).masked_fill(~word_mask[a], float("-inf"))
        word_weight = torch.softmax(logits, dim=0)
        for b in range(frames.shape[0]):
            frame_weight = torch.softmax(head.video_weight_fc(frames[b]).squeeze(-1), dim=0)
            cos = F.normalize(words[a], dim=-1) @ F.normalize(frames[b], dim=-1).T
            cos = cos * word_mask[a][:, None].float()
            out[a, b] = ((cos.max(dim=1).values * word_weight).sum() + (cos.max(dim=0).values * frame_weight).sum()) / 2
    return out


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)
    words = torch.randn(5, 6, D, generator=g)
    frames = torch.randn(4, 7, D, generator=g)
    return words, random_masks(g, 5, 6), frames, random_masks(g, 4, 7)


def test_wti_equals_the_per_pair_formula(batch):
    words, word_mask, frames, frame_mask = batch
    assert not word_mask.all() and not frame_mask.all()          # the fixture does pad some texts and videos
    head = wti_module()
    with torch.no_grad():
        expected = wti_by_loop(head, words, word_mask, frames, frame_mask)
        torch.testing.assert_close(head(words, word_mask, frames, frame_mask), expected)
        # masks as 0/1 integers, and text chunks, give the same
        torch.testing.assert_close(head(words, word_mask.long(), frames, frame_mask.long(), text_chunk=2), expected)


def test_padded_words_and_frames_change_nothing_with_the_real_mask(batch):
    words, word_mask, frames, frame_mask = batch
    g = torch.Generator().manual_seed(2)

    def pad_with_garbage(tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Three more padded slots, and large random garbage in every padded slot (old and new)."""
        n = tokens.shape[0]
        mask = torch.cat([mask, torch.zeros(n, 3, dtype=torch.bool)], dim=1)
        tokens = torch.cat([tokens, torch.zeros(n, 3, D)], dim=1)
        return torch.where(mask[..., None], tokens, 10 * torch.randn(tokens.shape, generator=g)), mask

    words_more, word_mask_more = pad_with_garbage(words, word_mask)
    frames_more, frame_mask_more = pad_with_garbage(frames, frame_mask)
    head = wti_module()
    with torch.no_grad():
        base = head(words, word_mask, frames, frame_mask)
        torch.testing.assert_close(head(words_more, word_mask_more, frames_more, frame_mask_more), base)
        # the reference's all-ones video mask lets the garbage frames take part
        reference = wti_module(reference_video_mask=True)
        changed = reference(words, word_mask, frames_more, frame_mask_more)
        assert (changed - base).abs().max() > 1e-3
        # ... while its garbage words stay out (the reference does use the text mask)
        torch.testing.assert_close(reference(words_more, word_mask_more, frames_more, frame_mask_more), changed,
                                   atol=1e-6, rtol=1e-6)


def test_reference_flags_reproduce_the_reference_computation(batch):
    words, word_mask, frames, frame_mask = batch
    head = wti_module(reference_video_mask=True, reference_zero_fill=True)
    with torch.no_grad():
        torch.testing.assert_close(head(words, word_mask, frames, frame_mask),
                                   wti_like_the_reference(head, words, word_mask, frames))


def test_zero_fill_lets_a_padded_word_win_against_negative_cosines():
    # one text: a real word and a padded one; one video of a frame pointing away from the real word
    words = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    word_mask = torch.tensor([[True, False]])
    frames = torch.tensor([[[-1.0, 0.0]]])
    frame_mask = torch.tensor([[True]])
    real = WeightedTokenInteraction(2)
    zero_fill = WeightedTokenInteraction(2, reference_zero_fill=True)
    with torch.no_grad():
        # only one valid token each side: every weight is 1 and both directions give the cosine -1
        assert real(words, word_mask, frames, frame_mask).item() == pytest.approx(-1.0)
        # the reference: text→video still -1 (the padded word has weight 0), but the frame's best word is the
        # padded one at cosine 0, so video→text is 0 and the mean -0.5
        assert zero_fill(words, word_mask, frames, frame_mask).item() == pytest.approx(-0.5)


def test_wti_weights_sum_to_one_over_valid_tokens(batch):
    words, word_mask, frames, frame_mask = batch
    head = wti_module()
    word_weight, frame_weight = head.token_weights(words, word_mask, frames, frame_mask)
    torch.testing.assert_close(word_weight.sum(-1), torch.ones(5))
    torch.testing.assert_close(frame_weight.sum(-1), torch.ones(4))
    assert (word_weight[~word_mask] == 0).all() and (frame_weight[~frame_mask] == 0).all()
    assert (word_weight[word_mask] > 0).all()
    # the reference's video mask: every frame slot gets weight
    _, all_frames = wti_module(reference_video_mask=True).token_weights(words, word_mask, frames, frame_mask)
    assert (all_frames > 0).all()


def test_masked_softmax():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 5.0, 0.0], [1.0, 1.0, 1.0]])
    mask = torch.tensor([[True, True, False], [False, True, False], [False, False, False]])
    weights = masked_softmax(logits, mask)
    e = torch.e
    torch.testing.assert_close(weights[0], torch.tensor([1 / (1 + e), e / (1 + e), 0.0]))
    torch.testing.assert_close(weights[1], torch.tensor([0.0, 1.0, 0.0]))
    torch.testing.assert_close(weights[2], torch.zeros(3))               # nothing valid: zeros, not NaN


def test_a_video_without_valid_frames_scores_finitely_and_gradients_flow(batch):
    words, word_mask, frames, frame_mask = batch
    frame_mask = frame_mask.clone()
    frame_mask[0] = False
    head = wti_module()
    frames = frames.clone().requires_grad_(True)
    scores = head(words, word_mask, frames, frame_mask)
    assert torch.isfinite(scores).all() and (scores[:, 0] == 0).all()
    scores.sum().backward()
    assert torch.isfinite(frames.grad).all() and (frames.grad[~frame_mask] == 0).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.parameters())


def test_wti_rejects_mismatched_shapes(batch):
    words, word_mask, frames, frame_mask = batch
    head = wti_module()
    with pytest.raises(ValueError):
        head(words, word_mask[:, :-1], frames, frame_mask)
    with pytest.raises(ValueError):
        head(words[..., :-1], word_mask, frames, frame_mask)


def test_mean_pooled_similarity_equals_the_formula(batch):
    _, _, frames, frame_mask = batch
    text = torch.randn(3, D, generator=torch.Generator().manual_seed(3))
    expected = torch.zeros(3, 4)
    for b in range(4):
        pooled = F.normalize(frames[b][frame_mask[b]], dim=-1).mean(dim=0)
        for a in range(3):
            expected[a, b] = F.cosine_similarity(text[a], pooled, dim=0)
    torch.testing.assert_close(mean_pooled_similarity(text, frames, frame_mask), expected)
    # padded frames do not count, whatever they hold
    garbage = torch.where(frame_mask[..., None], frames, 100 * torch.randn(frames.shape))
    torch.testing.assert_close(mean_pooled_similarity(text, garbage, frame_mask), expected)


def test_mean_pooled_similarity_by_hand():
    # two frames (1, 0) and (0, 3): normalised (1, 0) and (0, 1), mean (.5, .5), renormalised (1, 1)/√2;
    # text (2, 0) -> cosine 1/√2; the padded third frame is ignored
    frames = torch.tensor([[[1.0, 0.0], [0.0, 3.0], [-5.0, 0.0]]])
    similarity = mean_pooled_similarity(torch.tensor([[2.0, 0.0]]), frames, torch.tensor([[True, True, False]]))
    assert similarity.item() == pytest.approx(2 ** -0.5)
    # a video with no valid frame scores 0, not NaN
    assert mean_pooled_similarity(torch.ones(1, 2), frames, torch.zeros(1, 3, dtype=torch.bool)).item() == 0.0
