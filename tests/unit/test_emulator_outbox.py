"""A batch of websocket messages framed at once is the frames of each message in turn,
whatever their text (ASCII market events, non-ASCII control answers) and length."""

from __future__ import annotations

import random

import pytest

from livecandle.emulator.outbox import text_frame, text_frames


@pytest.mark.parametrize("alphabet", ['{}":,ab09', '{}":,ab09é€'])
def test_a_batch_of_frames_is_each_message_s_frame_in_turn(alphabet: str) -> None:
    rng = random.Random(len(alphabet))
    sizes = [0, 1, 125, 126, 127, 300, 16_383, 16_384, 70_000]
    for _ in range(100):
        msgs = [
            "".join(rng.choice(alphabet) for _ in range(rng.choice(sizes)))
            for _ in range(rng.randrange(1, 5))
        ]
        assert text_frames(msgs) == b"".join(text_frame(m.encode()) for m in msgs)
