"""Whether an LLM's free text is prose: one check for every stage that keeps an LLM's words (the
graph descriptions, the distillation's hints), so a small or drifting model's loops and symbol soup
are caught the same way everywhere."""

from __future__ import annotations


def not_prose(text: str) -> str:
    """Why whitespace-normalised, non-empty `text` is not usable prose, or "" when it is:

    - "not text": under half of its characters are letters (or fewer than 3 letters);
    - "repeated": at least 8 words, under 30% of them distinct (case-insensitive), the loop a
      small model falls into ("The Shining; The Shining; ...").
    """
    if sum(ch.isalpha() for ch in text) < max(3, len(text) // 2):
        return "not text (under half letters)"
    words = text.lower().split()
    if len(words) >= 8 and len(set(words)) < 0.3 * len(words):
        return f"repeated ({len(set(words))} distinct of {len(words)} words)"
    return ""
