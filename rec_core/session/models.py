"""Session-based backbones: FPMC, STAMP and GRU4Rec, each one vector per session (an "interest" of
rec_core.models.multi_interest's interface, K = 1) scored against item vectors by a dot product, and
trained with the harness's sampled softmax. Histories are right-aligned (the last column is the
most recent item; rec_core.models.multi_interest.pad_histories), so every model reads its last
item at column -1.

- FPMC (Rendle et al., WWW 2010), for anonymous sessions: the MF part's user factor is the mean of
  the session's item factors (sessions carry no user ids), the factorised transition part reads the
  last item: score(s, i) = <mean_{j in s} M_j, V_i> + <LI_{last(s)}, IL_i>. Stored as one input table
  [M ; LI] and the target table [V ; IL], so the session vector [mean M ; LI_last] scores by one
  dot product (embedding size 2 x the factor count).
- STAMP (Liu et al., KDD 2018): attention over the session's items from the item, the last click
  and the session mean, alpha_i = w0 . sigmoid(W1 x_i + W2 x_t + W3 m_s + b_a); m_a = sum alpha_i x_i;
  h_s = tanh(A m_a + b), h_t = tanh(B x_t + c); the session vector h_s * h_t (the trilinear score
  <h_s, h_t, x_i>).
- GRU4Rec (Hidasi et al., ICLR 2016): a GRU over the session's item embeddings, the last hidden
  state the session vector (embedding dropout `train.dropout`).

`factors`: the embedding size (FPMC: per factor table), the paper's d = 100 for the teacher and 10
for the student (`session.teacher_dim`, `session.student_dim`).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from rec_core.models.multi_interest import MultiInterestModel
from rec_core.models.names import parse_model_name


class FPMC(MultiInterestModel):
    def __init__(self, num_items: int, factors: int, max_history: int):
        super().__init__(num_items, 2 * factors, 1, max_history)
        self.factors = factors
        self.input_embedding = nn.Embedding(num_items + 1, 2 * factors, padding_idx=num_items)
        nn.init.normal_(self.input_embedding.weight, std=1.0 / math.sqrt(2 * factors))
        with torch.no_grad():
            self.input_embedding.weight[num_items].zero_()

    def interests(self, history, mask):
        x = self.input_embedding(history)
        weights = mask.unsqueeze(-1)
        session = (x[..., : self.factors] * weights).sum(1) / weights.sum(1).clamp(min=1)
        return torch.cat([session, x[:, -1, self.factors:]], -1).unsqueeze(1)


class STAMP(MultiInterestModel):
    def __init__(self, num_items: int, dim: int, max_history: int):
        super().__init__(num_items, dim, 1, max_history)
        self.item_attention = nn.Linear(dim, dim, bias=False)
        self.last_attention = nn.Linear(dim, dim, bias=False)
        self.mean_attention = nn.Linear(dim, dim)  # carries b_a
        self.attention_out = nn.Linear(dim, 1, bias=False)
        self.session_mlp = nn.Linear(dim, dim)
        self.last_mlp = nn.Linear(dim, dim)

    def interests(self, history, mask):
        x = self.item_embedding(history)
        weights = mask.unsqueeze(-1)
        mean = (x * weights).sum(1) / weights.sum(1).clamp(min=1)
        last = x[:, -1]
        alpha = self.attention_out(torch.sigmoid(self.item_attention(x) + self.last_attention(last)[:, None]
                                                 + self.mean_attention(mean)[:, None]))
        attended = (alpha * x * weights).sum(1)
        return (torch.tanh(self.session_mlp(attended)) * torch.tanh(self.last_mlp(last))).unsqueeze(1)


class GRU4Rec(MultiInterestModel):
    def __init__(self, num_items: int, dim: int, max_history: int, dropout: float = 0.2):
        super().__init__(num_items, dim, 1, max_history)
        self.gru = nn.GRU(dim, dim, batch_first=True)
        self.dropout = nn.Dropout(dropout)

    def interests(self, history, mask):
        length = history.shape[1]
        counts = mask.sum(1).long().clamp(min=1)
        # left-align the right-aligned rows for packing (the columns past a row's count are not read)
        index = (torch.arange(length, device=history.device)[None, :] + (length - counts)[:, None]).clamp(max=length - 1)
        x = self.dropout(self.item_embedding(history.gather(1, index)))
        _, hidden = self.gru(pack_padded_sequence(x, counts.cpu(), batch_first=True, enforce_sorted=False))
        return hidden[-1].unsqueeze(1)


def build_session_model(name: str, num_items: int, train_config: dict, session_config: dict) -> MultiInterestModel:
    """The backbone of a session model name at the teacher size, or the student size with +student."""
    spec = parse_model_name(name)
    if not spec.session:
        raise ValueError(f"{name!r} is not a session model")
    size = session_config["student_dim"] if spec.student else session_config["teacher_dim"]
    max_history = train_config["max_history"]
    if spec.base == "fpmc":
        return FPMC(num_items, size, max_history)
    if spec.base == "stamp":
        return STAMP(num_items, size, max_history)
    return GRU4Rec(num_items, size, max_history, train_config["dropout"])
