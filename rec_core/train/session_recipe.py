"""The training recipe of the session models (`fpmc`, `stamp`, `gru4rec`, `+student`):
MultiInterestTraining's setup / train / cleanup, model selection on validation Recall@50 and
checkpoints, on the session protocol (rec_core.session.protocol: every position of a training
session is an example with up to `split.session_max_prefix` items before it; validation ranks
each valid session's target from its prefix)."""

from __future__ import annotations

from rec_core.data.splits import ProtocolData
from rec_core.session.models import build_session_model
from rec_core.train.recipe import MultiInterestTraining


class SessionTraining(MultiInterestTraining):
    """`data`: rec_core.session.protocol.session_protocol; `session` = {"teacher_dim", "student_dim"};
    `max_prefix`: split.session_max_prefix, the longest prefix a model reads."""

    def __init__(self, model_name: str, train_config: dict, data: ProtocolData, seed: int, session: dict,
                 max_prefix: int, rank: int = 0, world_size: int = 1):
        super().__init__(model_name, {**train_config, "max_history": max_prefix}, data, seed, rank=rank,
                         world_size=world_size)
        self.session = session

    def build_model(self):
        return build_session_model(self.model_name, self.data.num_items, self.config, self.session)
