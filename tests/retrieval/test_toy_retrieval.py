"""The toy retrieval dataset: MSR-VTT's layout read by the MSR-VTT reader, one caption per test video, the named
colour on screen and the motion only in the frame order."""
from __future__ import annotations

import numpy as np
from PIL import Image

from side4video.data.toy import render_clip
from side4video.retrieval.annotations import read_caption_lines, read_msrvtt
from side4video.retrieval.toy import COLOURS, PHRASES, generate_toy_retrieval


def test_colour_changes_only_the_object():
    plain, alpha = render_clip(np.random.default_rng(5), 2, frames=4)
    red, alpha_red = render_clip(np.random.default_rng(5), 2, frames=4, colour=COLOURS["red"])
    np.testing.assert_array_equal(alpha, alpha_red)
    np.testing.assert_array_equal(plain[alpha == 0], red[alpha == 0])
    assert (red[alpha == 1] == np.array(COLOURS["red"], dtype=np.uint8)).all()


def test_layout_captions_and_determinism(tmp_path):
    info = generate_toy_retrieval(tmp_path / "toy", train_per_pair=1, frames=6, formats=["frames"], workers=1)
    assert info["generated"] and info["train_videos"] == 64 and info["test_videos"] == 64
    train = read_msrvtt(info["train_csv"], info["data_json"])
    test = read_msrvtt(info["val_csv"])
    assert len(train.videos) == 64 and len(train.captions) == 64 * 3 and train.captions_per_video() == [3] * 64
    assert len(test.videos) == 64 and len(set(test.captions)) == 64   # every test video has its own caption
    assert not set(train.videos) & set(test.videos)
    lines = read_caption_lines(info["test_jsonl"])
    assert lines.captions == test.captions and [v.split("/")[-1][:-4] for v in lines.videos] == test.videos
    # the caption names the colour on screen: the brightest pixels of a test video's first frame
    all_phrases = {p.format(c=c): (label, c) for label, group in enumerate(PHRASES) for p in group for c in COLOURS}
    video, caption = test.videos[0], test.captions[0]
    label, colour = all_phrases[caption]
    frame = np.asarray(Image.open(tmp_path / "toy" / "frames" / video / "00001.jpg")).astype(int)
    brightest = frame.reshape(-1, 3)[frame.sum(-1).reshape(-1).argsort()[-5:]]
    assert np.abs(brightest - np.array(COLOURS[colour])).max() < 40
    again = generate_toy_retrieval(tmp_path / "toy", train_per_pair=1, frames=6, formats=["frames"], workers=1)
    assert not again["generated"]
