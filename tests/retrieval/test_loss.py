"""The symmetric contrastive loss by hand, the logit-scale clamp, and the gradient-keeping all-gather: two gloo
processes with half the batch each give the loss and (summed) gradients of one process with the whole batch."""
from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from side4video.retrieval.loss import (
    MAX_LOGIT_SCALE,
    clamp_logit_scale_,
    gather_with_grad,
    symmetric_contrastive_loss,
)


def test_the_loss_equals_the_hand_formula_on_a_three_by_three():
    similarity = torch.tensor([[0.5, 0.0, 0.0],
                               [0.5, 0.5, 0.5],
                               [0.0, 0.0, 0.0]])
    logit_scale = torch.tensor(math.log(2.0))                # scale 2: logits [[1,0,0],[1,1,1],[0,0,0]]
    e = math.e
    # rows (text→video), -log softmax of the diagonal: [1,0,0] -> log((e+2)/e); [1,1,1] -> log 3; [0,0,0] -> log 3
    rows = (math.log((e + 2) / e) + math.log(3) + math.log(3)) / 3
    # columns (video→text): [1,1,0] target 1 -> log((2e+1)/e); [0,1,0] target 1 -> log((e+2)/e);
    # [0,1,0] target 0 -> log(e+2)
    columns = (math.log((2 * e + 1) / e) + math.log((e + 2) / e) + math.log(e + 2)) / 3
    loss = symmetric_contrastive_loss(similarity, logit_scale)
    assert loss.item() == pytest.approx((rows + columns) / 2, abs=1e-6)


def test_the_loss_uses_exp_of_the_log_scale_and_gives_it_a_gradient():
    similarity = torch.randn(4, 4)
    logit_scale = nn.Parameter(torch.tensor(1.5))
    loss = symmetric_contrastive_loss(similarity, logit_scale)
    logits = math.exp(1.5) * similarity
    target = torch.arange(4)
    expected = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    loss.backward()
    assert logit_scale.grad is not None and logit_scale.grad.item() != 0.0
    with pytest.raises(ValueError):
        symmetric_contrastive_loss(torch.randn(3, 4), logit_scale)


def test_clamp_logit_scale_caps_the_scale_at_100_in_place():
    logit_scale = nn.Parameter(torch.tensor(math.log(250.0)))
    assert clamp_logit_scale_(logit_scale) is logit_scale
    assert logit_scale.exp().item() == pytest.approx(MAX_LOGIT_SCALE)
    assert logit_scale.requires_grad and logit_scale.grad_fn is None      # still a leaf parameter
    low = nn.Parameter(torch.tensor(math.log(1 / 0.07)))                  # CLIP's initial value stays
    clamp_logit_scale_(low)
    assert low.item() == pytest.approx(math.log(1 / 0.07))
    clamp_logit_scale_(logit_scale, max_scale=10.0)
    assert logit_scale.item() == pytest.approx(math.log(10.0))


def test_gather_with_grad_is_the_identity_without_a_process_group():
    assert not dist.is_initialized()
    tensor = torch.randn(3, 2)
    assert gather_with_grad(tensor) is tensor


# ---- distributed equivalence --------------------------------------------------------------------------------------
PER_RANK = 3
WORLD = 2


def _problem() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The same model and the same global batch (2·PER_RANK pairs) in every process."""
    torch.manual_seed(0)
    model = nn.ModuleDict({"text": nn.Linear(5, 4), "video": nn.Linear(6, 4)})
    model.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    texts = torch.randn(WORLD * PER_RANK, 5)
    videos = torch.randn(WORLD * PER_RANK, 6)
    return model, texts, videos


def _loss_and_grads(model: nn.Module, texts: torch.Tensor, videos: torch.Tensor) -> dict[str, torch.Tensor]:
    text_emb = gather_with_grad(F.normalize(model["text"](texts), dim=-1))
    video_emb = gather_with_grad(F.normalize(model["video"](videos), dim=-1))
    loss = symmetric_contrastive_loss(text_emb @ video_emb.T, model.logit_scale)
    loss.backward()
    return {"loss": loss.detach(), **{name: p.grad.clone() for name, p in model.named_parameters()}}


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        model, texts, videos = _problem()
        part = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        torch.save(_loss_and_grads(model, texts[part], videos[part]), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_processes_give_the_loss_and_gradients_of_one_with_the_whole_batch(tmp_path):
    """Each rank computes the full global loss; the Linear layers' gradients summed over the ranks equal the
    single-process gradients (each rank back-propagates through its own rows only); the logit scale, used
    directly on every rank, gets the single-process gradient on each rank."""
    context = mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=False)
    deadline = time.monotonic() + 60
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the gloo workers did not finish within 60 s")
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(WORLD)]
    single = _loss_and_grads(*_problem())
    for result in ranks:
        torch.testing.assert_close(result["loss"], single["loss"])
        torch.testing.assert_close(result["logit_scale"], single["logit_scale"])
    for name in single:
        if name in ("loss", "logit_scale"):
            continue
        # each rank alone has only part of it
        assert not torch.allclose(ranks[0][name], single[name], atol=1e-5)
        torch.testing.assert_close(ranks[0][name] + ranks[1][name], single[name])
