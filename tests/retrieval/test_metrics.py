"""R@K / MdR / MnR on constructed matrices whose ranks are worked out by hand in the comments.

Expected numbers follow the reference's formulas (HJYao00/Side4Video, Retrieval/metrics.py): R@K = percent of
ranks <= K, MdR = median (NumPy's for single-caption sets and multi-caption video→text, torch's lower median for
multi-caption text→video), MnR = mean, ranks 1-based.
"""
from __future__ import annotations

import math

import pytest
import torch

from side4video.retrieval.metrics import multi_caption_metrics, retrieval_metrics, summarise_ranks, target_ranks


def approx(expected: dict[str, float]) -> dict[str, object]:
    return {key: pytest.approx(value, abs=1e-9) for key, value in expected.items()}


def test_a_perfect_diagonal_ranks_every_query_first():
    similarity = torch.eye(7) + 0.01 * torch.rand(7, 7)        # diagonal >= 1, everything else < 0.02
    for ties in ("pessimistic", "optimistic", "expand"):
        assert retrieval_metrics(similarity, ties=ties) == approx(
            {"R1": 100.0, "R5": 100.0, "R10": 100.0, "MdR": 1.0, "MnR": 1.0})


# text→video ranks, row by row (target on the diagonal):
#   row 0: 0.9 beats all                  -> 1
#   row 1: 0.5 beaten by 0.8 and 0.6      -> 3
#   row 2: 0.3 beaten by 0.4              -> 2
#   row 3: 0.1 beaten by 0.95, 0.8, 0.7   -> 4
# video→text (columns, target on the diagonal):
#   col 0: 0.9 beaten by 0.95             -> 2
#   col 1: 0.5 beaten by 0.8              -> 2
#   col 2: 0.3 beaten by 0.6, 0.7         -> 3
#   col 3: 0.1 beaten by 0.3, 0.4         -> 3
FOUR = torch.tensor([[0.90, 0.10, 0.20, 0.30],
                     [0.80, 0.50, 0.60, 0.05],
                     [0.10, 0.20, 0.30, 0.40],
                     [0.95, 0.80, 0.70, 0.10]])


def test_a_hand_made_four_by_four_has_the_ranks_worked_out_by_hand():
    assert target_ranks(FOUR).tolist() == [1, 3, 2, 4]
    assert target_ranks(FOUR.T).tolist() == [2, 2, 3, 3]
    # ranks 1, 3, 2, 4: one of four at 1, two within 2, three within 3; median (2 + 3) / 2, mean 10 / 4
    assert retrieval_metrics(FOUR, recall_at=(1, 2, 3, 5)) == approx(
        {"R1": 25.0, "R2": 50.0, "R3": 75.0, "R5": 100.0, "MdR": 2.5, "MnR": 2.5})
    # ranks 2, 2, 3, 3
    assert retrieval_metrics(FOUR.T, recall_at=(1, 2, 3)) == approx(
        {"R1": 0.0, "R2": 50.0, "R3": 100.0, "MdR": 2.5, "MnR": 2.5})


def test_default_keys_and_ten_candidates():
    # 12 candidates, query i's target scored below exactly i others (target 0, the others 1 or -1)
    n = 12
    similarity = -torch.ones(n, n)
    for i in range(n):
        similarity[i, i] = 0.0
        others = [j for j in range(n) if j != i][:i]
        similarity[i, others] = 1.0
    assert target_ranks(similarity).tolist() == list(range(1, n + 1))
    # ranks 1..12: R1 1/12, R5 5/12, R10 10/12, median (6 + 7) / 2, mean 6.5
    assert retrieval_metrics(similarity) == approx(
        {"R1": 100 / 12, "R5": 500 / 12, "R10": 1000 / 12, "MdR": 6.5, "MnR": 6.5})


def test_fewer_queries_than_candidates_and_explicit_targets():
    similarity = torch.tensor([[0.2, 0.9, 0.1, 0.0],
                               [0.3, 0.1, 0.5, 0.4]])
    assert target_ranks(similarity).tolist() == [2, 4]                        # 0.2 < 0.9; 0.1 lowest
    assert target_ranks(similarity, torch.tensor([1, 3])).tolist() == [1, 2]   # 0.9 first; 0.4 < 0.5
    with pytest.raises(ValueError):
        target_ranks(similarity.T)                                             # 4 queries, 2 candidates


# ties: every value is exact in binary, so equal literals compare equal
#   row 0: target 0.5 ties with one other, nothing above      -> positions 1, 2
#   row 1: target 0.25 below 0.5 and 0.75                      -> position 3
#   row 2: all three equal                                     -> positions 1, 2, 3
TIED = torch.tensor([[0.50, 0.50, 0.25],
                     [0.50, 0.25, 0.75],
                     [0.25, 0.25, 0.25]])


def test_ties_pessimistic_by_default():
    # the last tied position: ranks 2, 3, 3
    assert target_ranks(TIED).tolist() == [2, 3, 3]
    assert retrieval_metrics(TIED) == approx({"R1": 0.0, "R5": 100.0, "R10": 100.0, "MdR": 3.0, "MnR": 8 / 3})


def test_ties_optimistic():
    # the first tied position: ranks 1, 3, 1
    assert target_ranks(TIED, ties="optimistic").tolist() == [1, 3, 1]
    assert retrieval_metrics(TIED, ties="optimistic") == approx(
        {"R1": 200 / 3, "R5": 100.0, "R10": 100.0, "MdR": 1.0, "MnR": 5 / 3})


def test_ties_expand_reproduce_the_reference_single_caption_metric():
    # the reference finds every sorted position equal to the target's value: entries 1, 2 | 3 | 1, 2, 3 (six in
    # all), so R1 = 2 / 6, median of 1 1 2 2 3 3 = 2, mean 12 / 6
    assert target_ranks(TIED, ties="expand").tolist() == [1, 2, 3, 1, 2, 3]
    assert retrieval_metrics(TIED, ties="expand") == approx(
        {"R1": 100 / 3, "R5": 100.0, "R10": 100.0, "MdR": 2.0, "MnR": 2.0})


def test_a_collapsed_model_gets_the_worst_rank_not_the_best():
    assert retrieval_metrics(torch.zeros(5, 5)) == approx({"R1": 0.0, "R5": 100.0, "R10": 100.0, "MdR": 5.0,
                                                           "MnR": 5.0})


def test_nan_counts_as_the_lowest_score():
    similarity = torch.tensor([[math.nan, 0.1, 0.2],
                               [0.3, 0.5, math.nan],
                               [0.1, 0.2, 0.3]])
    # row 0: its target is -inf, below both others -> 3 (pessimistic: ties with nothing, the others are finite)
    # row 1: the NaN candidate cannot beat 0.5 -> 1 ; row 2: 0.3 first -> 1
    assert target_ranks(similarity).tolist() == [3, 1, 1]


def test_summarise_ranks_average_and_lower_median():
    ranks = torch.tensor([4, 1, 3, 2])
    assert summarise_ranks(ranks)["MdR"] == 2.5                   # NumPy: mean of the middle pair
    assert summarise_ranks(ranks, median="lower")["MdR"] == 2.0   # torch.median: the lower one
    assert summarise_ranks(torch.tensor([5, 1, 3]))["MdR"] == 3.0
    with pytest.raises(ValueError):
        summarise_ranks(torch.tensor([]))


# a multi-caption set with unequal caption counts: video 0 has captions 0-1, video 1 caption 2, video 2 captions 3-5
CAPTION_TO_VIDEO = torch.tensor([0, 0, 1, 2, 2, 2])
MULTI = torch.tensor([[0.90, 0.20, 0.10],     # caption 0 (video 0): 0.9 first                   -> 1
                      [0.30, 0.60, 0.40],     # caption 1 (video 0): 0.3 below 0.6 and 0.4        -> 3
                      [0.50, 0.70, 0.80],     # caption 2 (video 1): 0.7 below 0.8                -> 2
                      [0.20, 0.75, 0.60],     # caption 3 (video 2): 0.6 below 0.75               -> 2
                      [0.70, 0.80, 0.30],     # caption 4 (video 2): 0.3 last                     -> 3
                      [0.40, 0.35, 0.45]])    # caption 5 (video 2): 0.45 first                   -> 1
# video→text: each video's caption group scores its best caption (max over the group):
#            query video 0   query video 1          query video 2
#   group 0:     0.9             0.6                    0.4
#   group 1:     0.5             0.7                    0.8
#   group 2:     0.7             max(.75,.8,.35)=0.8    max(.6,.3,.45)=0.6
# ranks of the own group: video 0 -> 1; video 1 -> 2 (only group 2 is above: two of its captions beat 0.7 but
# the group counts once, unlike a ranking over all six captions which would give 3); video 2 -> 2 (0.8 above)


def test_multi_caption_metrics_match_the_reference_formulas():
    result = multi_caption_metrics(MULTI, CAPTION_TO_VIDEO)
    # text→video ranks 1 3 2 2 3 1: two firsts of six, all within 5; lower median of 1 1 2 2 3 3 is 2; mean 12 / 6
    assert result["text_to_video"] == approx({"R1": 100 / 3, "R5": 100.0, "R10": 100.0, "MdR": 2.0, "MnR": 2.0})
    # video→text ranks 1 2 2
    assert result["video_to_text"] == approx({"R1": 100 / 3, "R5": 100.0, "R10": 100.0, "MdR": 2.0, "MnR": 5 / 3})


def test_multi_caption_medians_follow_the_reference_in_each_direction():
    similarity = torch.tensor([[0.9, 0.1],    # video 0: rank 1
                               [0.2, 0.8],    # video 0: rank 2
                               [0.3, 0.7],    # video 1: rank 1
                               [0.6, 0.4]])   # video 1: rank 2
    result = multi_caption_metrics(similarity, torch.tensor([0, 0, 1, 1]))
    # text→video ranks 1 2 1 2: torch's lower median is 1 (NumPy's would be 1.5)
    assert result["text_to_video"] == approx({"R1": 50.0, "R5": 100.0, "R10": 100.0, "MdR": 1.0, "MnR": 1.5})
    # groups: query video 0 -> own max(.9,.2)=.9 vs max(.3,.6)=.6: 1; query video 1 -> own max(.7,.4)=.7 vs
    # max(.1,.8)=.8: 2; ranks 1 2, NumPy median 1.5
    assert result["video_to_text"] == approx({"R1": 50.0, "R5": 100.0, "R10": 100.0, "MdR": 1.5, "MnR": 1.5})


def test_multi_caption_metrics_do_not_depend_on_caption_order():
    order = torch.tensor([4, 2, 0, 5, 1, 3])
    assert multi_caption_metrics(MULTI[order], CAPTION_TO_VIDEO[order]) == \
        multi_caption_metrics(MULTI, CAPTION_TO_VIDEO)


def test_one_caption_per_video_is_the_single_caption_case_up_to_the_median():
    similarity = torch.rand(6, 6)
    result = multi_caption_metrics(similarity, torch.arange(6))
    assert result["video_to_text"] == approx(retrieval_metrics(similarity.T))
    single = retrieval_metrics(similarity)
    ranks = target_ranks(similarity)
    assert result["text_to_video"] == approx({**single, "MdR": float(ranks.double().median())})


def test_multi_caption_metrics_reject_videos_without_captions():
    with pytest.raises(ValueError, match="no caption"):
        multi_caption_metrics(torch.rand(3, 3), torch.tensor([0, 0, 2]))
    with pytest.raises(ValueError):
        multi_caption_metrics(torch.rand(3, 3), torch.tensor([0, 1, 3]))
    with pytest.raises(ValueError):
        multi_caption_metrics(torch.rand(3, 3), torch.tensor([0, 1]))
