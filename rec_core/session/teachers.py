"""The teachers of the distillation (ALKDRec): what ranks a selected session's candidates.

Every backend reorders the conventional teacher's top-`candidates` (50) items of a session (its
prefix's own items excluded) and keeps `list_length` (25) of them:

- `llm`: the LLM first reads `hint_cases` (20) random training cases, each a session's item titles
  and the teacher's top-20 (as many cases as fit the engine's context: `hints_prompt`), and writes
  short hints on the teacher's logic (one prompt per run and
  teacher, cached); then per selected session it ranks the candidates, shown as `id: title` in the
  teacher's order, under a JSON schema whose array items admit only those ids, exactly
  `list_length` of them (`hints_prompt`, `ranking_prompt`, `ranking_schema`). Every answer is
  validated (`validate_ranking`): ids outside the candidates and repeats are dropped, missing places
  are filled from the teacher's order, and the count is recorded; an unreadable answer is `failed`
  and the session is left out of the distillation.
- `encoder` (machines without a capable LLM; the embedded default here, where the offline 135M
  model cannot rank): the candidates re-ranked by text similarity to the session, blended with the
  teacher's own order: score = (1 - w) z(teacher score) + w z(cos(title embedding, mean title
  embedding of the prefix)), z the standardisation over the session's candidates, w =
  `distill.text_weight` (`text_rerank`).
- `teacher`: the conventional teacher's own top-`list_length` (the paper's "distill the
  conventional teacher" ablation).

With `distill.target_in_candidates` (off by default: the issue's "the teacher's top-50"), a training
session's held-out target replaces the last candidate when the teacher did not rank it in its
top-`candidates` (`with_targets`), as the authors' released code does in its prompts (ALKDRec
repository, LLM_learn_from_teacher.ipynb: "if target not in candidate: candidate[-1] = target"). The
lists can then carry the true next item of the session, so the distillation holds ground-truth
signal besides the teacher's; only training sessions are ranked, so nothing of the validation or
test split reaches it.

`list_quality` gives what the issue asks of each backend: on the ranked training sessions, the share
whose held-out target is in the list's top 5 / 10 / 25, next to the teacher's own order.
"""

from __future__ import annotations

import json

import numpy as np

from rec_core.text.checks import not_prose

OK, REPAIRED, FAILED = "ok", "repaired", "failed"
HINT_LIST = 20  # the teacher's top items each hints case shows (the paper's top-20)

HINTS_SYSTEM = ("You study a session-based recommender. Each case lists the movies or products a user "
                "viewed in one session, in order, and the recommender's top predictions for the next one. "
                "Write short hints (at most {max_chars} characters) on how the recommender chooses: which "
                "features of the session its predictions follow. Answer with JSON {{\"hints\": \"...\"}}.")
RANKING_SYSTEM = ("You rank candidates for the next item of a session. Hints on how a strong recommender "
                  "decides: {hints}\nAnswer with JSON {{\"ranked_ids\": [...]}}: exactly {length} distinct "
                  "candidate ids, the most likely next item first, only ids from the candidate list.")


CHARS_PER_TOKEN = 2.5  # a safe lower bound for titles (digits and punctuation tokenize short)


def prompt_char_budget(max_model_len: int, max_tokens: int, system: str) -> int:
    """Characters a prompt's user text may hold so that it and the answer fit the engine's context."""
    return int(CHARS_PER_TOKEN * (max_model_len - max_tokens)) - len(system)


def hints_prompt(cases: list[tuple[list[str], list[str]]], max_chars: int, title_chars: int = 40) -> tuple[str, int]:
    """(the user text of the hints prompt, the cases it holds): per case the session's titles and
    the teacher's top list, as many cases as fit `max_chars` (the paper shows 20 to a long-context
    LLM; a 2048-token engine holds ~5)."""
    lines: list[str] = []
    shown = 0
    for number, (session, predicted) in enumerate(cases, 1):
        case = [f"Case {number}. Session: " + "; ".join(t[:title_chars] for t in session),
                "  Recommender's top: " + "; ".join(t[:title_chars] for t in predicted)]
        if shown and len("\n".join(lines + case)) > max_chars:
            break
        lines += case
        shown += 1
    return "\n".join(lines)[:max_chars], shown


def hints_schema(max_chars: int) -> str:
    return json.dumps({"type": "object", "properties": {"hints": {"type": "string", "maxLength": max_chars}},
                       "required": ["hints"], "additionalProperties": False})


def read_hints(output: str, max_chars: int) -> tuple[str, str]:
    """(hints, why they were dropped): the answer's hints text cut to `max_chars`, or "" and the
    reason when it is not JSON with a hints string, is empty, or is not prose (`not_prose`: a small
    model's loop such as "The Shining; The Shining; ..."). Without hints the rankings say "(none)"
    instead of carrying the loop into every ranking prompt."""
    try:
        hints = json.loads(output).get("hints")
    except (json.JSONDecodeError, AttributeError):
        return "", "not JSON"
    if not isinstance(hints, str):
        return "", "no hints string"
    hints = " ".join(hints.split())[:max_chars]
    reason = not_prose(hints) if hints else "empty"
    return ("", reason) if reason else (hints, "")


def ranking_prompt(session_titles: list[str], candidate_ids: np.ndarray, candidate_titles: list[str],
                   title_chars: int = 48) -> str:
    lines = ["Session (oldest first): " + "; ".join(t[:title_chars] for t in session_titles), "Candidates:"]
    lines += [f"{int(i)}: {t[:title_chars]}" for i, t in zip(candidate_ids, candidate_titles)]
    return "\n".join(lines)


def ranking_schema(candidate_ids: np.ndarray, length: int) -> str:
    """Only the candidates' ids, exactly `length` of them (distinctness is checked after: the
    structured-output grammars do not enforce uniqueItems)."""
    return json.dumps({"type": "object", "properties": {"ranked_ids": {
        "type": "array", "items": {"type": "integer", "enum": [int(i) for i in candidate_ids]},
        "minItems": length, "maxItems": length}}, "required": ["ranked_ids"], "additionalProperties": False})


def validate_ranking(output: str, candidate_ids: np.ndarray, length: int) -> tuple[list[int], str, str]:
    """(ranked ids, status, detail). Unknown and repeated ids are dropped and the missing places
    filled from the teacher's order (`candidate_ids`), counted in the detail; an unreadable answer
    is failed (no list)."""
    try:
        answer = json.loads(output)
        ids = answer["ranked_ids"]
        if not isinstance(ids, list):
            raise TypeError("ranked_ids is not a list")
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        return [], FAILED, f"unreadable answer ({type(error).__name__}: {str(error)[:80]})"
    allowed = {int(i) for i in candidate_ids}
    kept, unknown, repeated = [], 0, 0
    for value in ids:
        if not isinstance(value, int) or isinstance(value, bool) or value not in allowed:
            unknown += 1
        elif value in kept:
            repeated += 1
        else:
            kept.append(value)
    kept = kept[:length]
    filled = [int(i) for i in candidate_ids if int(i) not in kept][: length - len(kept)]
    if not (unknown or repeated or filled):
        return kept, OK, ""
    return kept + filled, REPAIRED, f"{unknown} unknown, {repeated} repeated, {len(filled)} filled from the teacher's order"


def _standardise(values: np.ndarray) -> np.ndarray:
    spread = values.std(axis=1, keepdims=True)
    return (values - values.mean(axis=1, keepdims=True)) / np.where(spread > 0, spread, 1.0)


def text_rerank(candidates: np.ndarray, teacher_scores: np.ndarray, prefix_vectors: np.ndarray,
                item_vectors: np.ndarray, text_weight: float, length: int) -> np.ndarray:
    """[S, length] item ids: the candidates [S, C] re-ranked by the blend of the module docstring.
    `prefix_vectors` [S, t]: the mean title embedding of each session's prefix; `item_vectors`
    [items, t]: unit title embeddings."""
    norms = np.linalg.norm(prefix_vectors, axis=1, keepdims=True)
    sessions = prefix_vectors / np.where(norms > 0, norms, 1.0)
    similarity = np.einsum("st,sct->sc", sessions, item_vectors[candidates])
    blended = (1 - text_weight) * _standardise(teacher_scores) + text_weight * _standardise(similarity)
    order = np.argsort(-blended, axis=1, kind="stable")[:, :length]
    return np.take_along_axis(candidates, order, axis=1)


def with_targets(candidates: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, int]:
    """(candidates, sessions changed): each row's target in place of its last candidate where the row
    lacks it (a new array). The teacher's scores stay as they are, so the target takes the replaced
    candidate's score and the teacher's order is kept."""
    candidates = candidates.copy()
    missing = ~(candidates == targets[:, None]).any(axis=1)
    candidates[missing, -1] = targets[missing]
    return candidates, int(missing.sum())


def list_quality(lists: list[list[int]], targets: np.ndarray, cutoffs=(5, 10, 25)) -> dict[str, float]:
    """Share of sessions whose target is in the list's top k, per k."""
    if not lists:
        return {f"target_in_top{k}": float("nan") for k in cutoffs}
    return {f"target_in_top{k}": float(np.mean([int(t) in ranked[:k] for ranked, t in zip(lists, targets)]))
            for k in cutoffs}
