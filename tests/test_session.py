"""The session protocol (train on every position of training sessions, evaluate a valid/test
session's target from its prefix, prefix items excluded) and the session backbones FPMC, STAMP and
GRU4Rec at teacher and student size."""

import numpy as np
import pandas as pd
import pytest
import torch

from rec_core.data.splits import split_sessions
from rec_core.eval.evaluator import evaluate
from rec_core.models.multi_interest import Popularity, pad_histories
from rec_core.models.names import SESSION_BASES, parse_model_name
from rec_core.run.config import default_config
from rec_core.session.models import FPMC, build_session_model
from rec_core.session.protocol import session_protocol
from rec_core.train.session_recipe import SessionTraining

TRAIN = {**default_config()["train"], "num_negatives": 64, "batch_size": 64, "cpus_per_worker": 1,
         "learning_rate": 0.01, "epochs": 8, "patience": 8}
SESSION = {"teacher_dim": 16, "student_dim": 4}


def chain_sessions(n_sessions=600, n_items=60, length=6, seed=0):
    """Sessions that walk a fixed item chain (i -> i + 1 mod n) from a random start: the next item
    follows from the last one, which a transition model must find and popularity cannot."""
    rng = np.random.default_rng(seed)
    rows = [(s, pos, int((start + pos) % n_items)) for s, start in enumerate(rng.integers(0, n_items, n_sessions))
            for pos in range(length)]
    return pd.DataFrame(rows, columns=["session_id", "pos", "item_id"]), n_items


def test_protocol_trains_on_whole_training_sessions_and_evaluates_prefixes():
    sessions, n_items = chain_sessions(n_sessions=50)
    splits = split_sessions(sessions, seed=0, max_prefix=3)
    data = session_protocol(sessions, splits, n_items)
    train_ids = splits.loc[splits["split"] == "train", "session_id"].sort_values().to_numpy()
    assert data.train.user_ids.tolist() == train_ids.tolist()
    for row, session in enumerate(train_ids):
        expected = sessions[sessions["session_id"] == session].sort_values("pos")["item_id"].tolist()
        assert data.train.sequence(row).tolist() == expected
    for name, evaluation in (("valid", data.valid), ("test", data.test)):
        rows = splits[splits["split"] == name].sort_values("session_id")
        assert evaluation.user_ids.tolist() == rows["session_id"].tolist()
        for row, split_row in enumerate(rows.itertuples()):
            assert evaluation.histories.sequence(row).tolist() == list(split_row.prefix)
            assert len(evaluation.histories.sequence(row)) == 3
            assert evaluation.targets.sequence(row).tolist() == [split_row.target]
    with pytest.raises(ValueError, match="does not hold"):
        session_protocol(sessions[sessions["session_id"] != train_ids[0]], splits, n_items)


@pytest.mark.parametrize("base", SESSION_BASES)
def test_backbones_ignore_padding_and_the_student_is_smaller(base):
    torch.manual_seed(0)
    teacher = build_session_model(base, 30, {**TRAIN, "max_history": 6}, SESSION).eval()
    student = build_session_model(f"{base}+student", 30, {**TRAIN, "max_history": 6}, SESSION)
    assert sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in teacher.parameters()) / 3
    flat = np.array([3, 4, 5, 6, 7, 8, 9])
    short, short_mask = pad_histories(flat, np.array([4]), np.array([7]), 3, 30)
    long, long_mask = pad_histories(flat, np.array([4]), np.array([7]), 6, 30)
    assert torch.allclose(teacher.score(short, short_mask), teacher.score(long, long_mask), atol=1e-5)
    assert teacher.score(long, long_mask).shape == (1, 30)
    assert parse_model_name(f"{base}+student").student and not parse_model_name(base).student
    with pytest.raises(ValueError, match="takes only"):
        parse_model_name(f"{base}+align")


def test_fpmc_scores_mean_factor_plus_last_item_transition():
    torch.manual_seed(0)
    model = FPMC(num_items=5, factors=2, max_history=3).eval()
    history, mask = torch.tensor([[5, 1, 3]]), torch.tensor([[0.0, 1.0, 1.0]])
    inputs, targets = model.input_embedding.weight, model.item_embedding.weight
    expected = (inputs[[1, 3], :2].mean(0) @ targets[:5, :2].T) + (inputs[3, 2:] @ targets[:5, 2:].T)
    assert torch.allclose(model.score(history, mask)[0], expected, atol=1e-6)


@pytest.mark.parametrize("base", SESSION_BASES)
def test_backbones_learn_transitions_popularity_cannot(base):
    sessions, n_items = chain_sessions()
    splits = split_sessions(sessions, seed=0, max_prefix=5)
    data = session_protocol(sessions, splits, n_items)
    recipe = SessionTraining(base, TRAIN, data, seed=0, session=SESSION, max_prefix=5)
    recipe.setup()
    assert recipe.examples() == len(data.train.user_ids) * 5  # every position after the first
    last = recipe.train()
    popularity = Popularity().fit(data.train.items, n_items)
    baseline, _ = evaluate(lambda rows, h, u: popularity.score(len(rows)), data.valid, n_items, ks=[10])
    assert baseline["recall@10"] < 0.3
    assert last["valid_recall@20"] > 0.8, last  # the chain's next item is one of 60
