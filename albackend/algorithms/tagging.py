"""Character spans <-> sub-word IOB2 tags, and word-level predictions -> character spans.

Only the first sub-word of each word carries a label (others get -100 and are ignored by the loss),
so training, MNLP and decoding all work over words, the unit annotators see.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

IGNORE = -100


def tag_names(labels: Sequence[str]) -> list[str]:
    """IOB2 tag inventory: O, then B-/I- per label, in config order (stable ids across retrains)."""
    names = ["O"]
    for label in labels:
        names += [f"B-{label}", f"I-{label}"]
    return names


def word_spans(offsets: Sequence[tuple[int, int]], word_ids: Sequence[int | None]) -> tuple[list[int], list[tuple[int, int]]]:
    """First sub-word position and character range of each word (offsets from a fast tokenizer)."""
    first_pos: list[int] = []
    ranges: list[tuple[int, int]] = []
    prev = None
    for pos, wid in enumerate(word_ids):
        if wid is None:
            continue
        start, end = offsets[pos]
        if wid != prev:
            first_pos.append(pos)
            ranges.append((start, end))
            prev = wid
        else:
            ranges[-1] = (ranges[-1][0], max(ranges[-1][1], end))
    return first_pos, ranges


def align_labels(offsets: Sequence[tuple[int, int]], word_ids: Sequence[int | None],
                 spans: Sequence[tuple[int, int, str]], labels: Sequence[str]) -> list[int]:
    """Token label ids: IOB2 on each word's first sub-word, IGNORE elsewhere."""
    tag_id = {t: i for i, t in enumerate(tag_names(labels))}
    out = [IGNORE] * len(word_ids)
    first_pos, ranges = word_spans(offsets, word_ids)
    ordered = sorted(spans)
    j = 0
    inside: tuple[int, int, str] | None = None
    for pos, (ws, we) in zip(first_pos, ranges):
        while j < len(ordered) and ordered[j][1] <= ws:
            j += 1
        span = ordered[j] if j < len(ordered) and ordered[j][0] < we and ws < ordered[j][1] else None
        if span is None:
            out[pos] = tag_id["O"]
            inside = None
        else:
            out[pos] = tag_id[("I-" if inside == span else "B-") + span[2]]
            inside = span
    return out


def decode_spans(text: str, word_ranges: Sequence[tuple[int, int]], word_probs: np.ndarray,
                 labels: Sequence[str]) -> list[tuple[int, int, str, float]]:
    """Word tag probabilities -> (start, end, label, score) with offsets exact into `text`.

    An I- tag that does not continue a span of the same label starts a new span (lenient IOB2),
    and a span's score is the mean max-probability of its words.
    """
    names = tag_names(labels)
    spans: list[tuple[int, int, str, float]] = []
    if len(word_ranges) == 0:
        return spans
    best = word_probs.argmax(axis=1)
    conf = word_probs.max(axis=1)
    cur: list | None = None
    for (ws, we), tag_idx, c in zip(word_ranges, best, conf):
        tag = names[int(tag_idx)]
        if tag == "O":
            if cur:
                spans.append(_close(cur))
            cur = None
            continue
        prefix, label = tag[:1], tag[2:]
        if prefix == "I" and cur is not None and cur[2] == label:
            cur[1] = we
            cur[3].append(float(c))
        else:
            if cur:
                spans.append(_close(cur))
            cur = [ws, we, label, [float(c)]]
    if cur:
        spans.append(_close(cur))
    return [s for s in spans if text[s[0]:s[1]].strip()]


def _close(cur: list) -> tuple[int, int, str, float]:
    return cur[0], cur[1], cur[2], float(np.mean(cur[3]))
