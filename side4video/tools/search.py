"""Text-to-video search over an extracted retrieval index.

    side4video search "a person doing a cartwheel" ["another query" ...] --index DIR [--topk 5] [--json]
    python -m side4video.tools.search ...

Each query is tokenised and encoded by the checkpoint's text tower (the weight file's, or the checkpoint's own when
the text tower was trained), then scored against every indexed video by the checkpoint's similarity head (WTI or
meanP), the same scores ``evaluate`` ranks. The index (``side4video extract-retrieval``) provides the videos'
frame embeddings; the checkpoint it names provides the head and must be unchanged since the extraction.

Output per query: its text, then one line per hit: rank, score (cosine scale, before the logit scale), video id and
path. ``--json``: one JSON object per query and line, ``{"query", "results": [{"rank", "score", "video",
"video_id", "path"}]}``. Unreadable videos (listed in index.json) are never returned.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ..engine.distributed import default_device
from ..errors import CheckpointError, DataError
from ..retrieval.text import FrozenTextTower, create_text_tower
from ..tasks import autocast_context, create_task
from .common import positive_int, run_command, stdout_to_stderr
from .retrieval_index import SimilarityHead, index_config, load_head, load_video_embeddings, read_index


def load_text_tower(cfg, state: Mapping[str, torch.Tensor], device: torch.device) -> FrozenTextTower:
    """The text tower the retrieval model was built with (``RetrievalTask.build_model``'s arguments), with the
    checkpoint's weights when it was trained (``train_text``: they are part of the checkpoint, ``text.*``)."""
    net = cfg.network
    task = create_task(cfg)
    tower = create_text_tower(net.arch, net.pretrained, precision=net.backbone_precision,
                              trainable=task.train_text, quick_gelu=net.quick_gelu,
                              pretrained_dir=net.pretrained_dir or None)
    if task.train_text:
        trained = {key[len("text."):]: value for key, value in state.items() if key.startswith("text.")}
        if not trained:
            raise CheckpointError("the config trains the text tower (task.train_text) but the checkpoint has no "
                                  "text.* weights")
        tower.load_state_dict(trained)
    return tower.to(device).eval()


class VideoSearch:
    """An index loaded for searching: text tower, similarity head and every video's frame embeddings."""

    def __init__(self, index_dir: str | Path, device: torch.device | str | None = None):
        self.index_dir = Path(index_dir)
        self.index = read_index(self.index_dir)
        self.device = torch.device(device) if device is not None else default_device()
        self.cfg = index_config(self.index)
        self.head: SimilarityHead
        self.head, state = load_head(self.index, self.device)
        self.text = load_text_tower(self.cfg, state, self.device)
        self.text_chunk = int(create_task(self.cfg).text_chunk)
        frames, valid = load_video_embeddings(self.index_dir, self.index)
        self.frames, self.valid = frames.to(self.device), valid
        if not bool(valid.any()):
            raise DataError(f"{self.index_dir}: none of the {len(valid)} indexed videos was readable")

    @torch.no_grad()
    def scores(self, queries: Sequence[str]) -> torch.Tensor:
        """Queries × videos similarities ``[Q, Nv]`` (float32, on the CPU)."""
        tokens, mask = self.text.tokenize(list(queries), int(self.cfg.data.max_words))
        tokens, mask = tokens.to(self.device), mask.to(self.device)
        with autocast_context(self.device, self.cfg.solver.precision):
            sentence, words = self.text.encode(tokens, mask)
            rows = [self.head.similarity(sentence[s:s + self.text_chunk].float(), words[s:s + self.text_chunk].float(),
                                         mask[s:s + self.text_chunk], self.frames).float().cpu()
                    for s in range(0, len(queries), self.text_chunk)]
        return torch.cat(rows)

    def search(self, queries: Sequence[str], topk: int = 5) -> list[dict[str, Any]]:
        """The ``topk`` best readable videos per query, best first (ties: the lower video position first)."""
        scores = self.scores(queries)
        readable = torch.nonzero(self.valid).squeeze(1)
        k = min(topk, len(readable))
        results = []
        for query, row in zip(queries, scores):
            candidates = row[readable]
            # a stable descending sort: equal scores keep the videos' index order, so the output is reproducible
            order = torch.sort(candidates, descending=True, stable=True).indices[:k]
            hits = [{"rank": rank + 1, "score": float(candidates[i]), "video": int(readable[i]),
                     "video_id": self.index["video_ids"][int(readable[i])],
                     "path": self.index["video_paths"][int(readable[i])]} for rank, i in enumerate(order.tolist())]
            results.append({"query": query, "results": hits})
        return results


def format_results(results: Sequence[Mapping[str, Any]]) -> str:
    """The human-readable listing: the query, then ``rank  score  video id  path`` per hit."""
    lines = []
    for result in results:
        lines.append(json.dumps(result["query"], ensure_ascii=False))
        lines += [f"  {hit['rank']:>3}  {hit['score']:+.4f}  {hit['video_id']}  {hit['path']}"
                  for hit in result["results"]]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="side4video search", description=__doc__.split("\n\n")[0])
    parser.add_argument("queries", nargs="+", metavar="QUERY", help="text to search for (one or more)")
    parser.add_argument("--index", required=True, help="an index folder written by side4video extract-retrieval")
    parser.add_argument("--topk", type=positive_int, default=5, help="videos per query (default: 5)")
    parser.add_argument("--json", action="store_true", help="one JSON object per query and line")
    parser.add_argument("--device", default=None, help="e.g. cpu or cuda:0 (default: the first GPU, else the CPU)")
    args = parser.parse_args(argv)

    def body() -> int:
        if args.json:
            with stdout_to_stderr():     # whatever loading prints must not break the JSON lines
                results = VideoSearch(args.index, args.device).search(args.queries, args.topk)
            for result in results:
                print(json.dumps(result, ensure_ascii=False))
        else:
            print(format_results(VideoSearch(args.index, args.device).search(args.queries, args.topk)))
        return 0

    return run_command(body, code=2)


if __name__ == "__main__":
    sys.exit(main())
