"""The networks, as plain ``nn.Module``s; the LightningModules in ``tasks.py`` only train them."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from .cells import init_chrono_, init_tf1_, make_recurrent

Init = Literal["tf1", "torch"]


class SequenceRegressor(nn.Module):
    """Many-to-one regression: a recurrent stack reads x (B, T, F); a linear head maps the last
    hidden state to the output, y = W h_T + b (B, output_size).

    ``init="tf1"`` draws the weights as the TensorFlow 1 original did (``init_tf1_`` for the
    recurrent stack; head weight truncated normal σ = 0.01, head bias standard normal);
    ``init="torch"`` keeps PyTorch's defaults. ``chrono_t_max`` then redraws the input and forget
    gate biases by chrono initialisation for dependencies up to that many steps (``init_chrono_``).
    """

    def __init__(self, input_size: int, output_size: int = 1, cell: str = "lstm", hidden_size: int = 50,
                 num_layers: int = 1, init: Init = "tf1", chrono_t_max: float | None = None):
        super().__init__()
        self.rnn = make_recurrent(cell, input_size, hidden_size, num_layers)
        self.head = nn.Linear(hidden_size, output_size)
        if init == "tf1":
            init_tf1_(self.rnn)
            with torch.no_grad():
                nn.init.trunc_normal_(self.head.weight, std=0.01, a=-0.02, b=0.02)  # tf.truncated_normal: ±2σ
                nn.init.normal_(self.head.bias)
        if chrono_t_max is not None:
            init_chrono_(self.rnn, chrono_t_max)

    def forward(self, x: Tensor) -> Tensor:
        outputs, _ = self.rnn(x)
        return self.head(outputs[:, -1])

    @torch.no_grad()
    def closed_loop(self, window: Tensor, steps: int) -> Tensor:
        """Long-term prediction: from ``window`` (T, 1) predict one value, slide the window over
        it, and repeat ``steps`` times, so every prediction after the first is made from the
        model's own outputs, not from the data. Returns (steps,)."""
        window = window.clone()
        predictions = []
        for _ in range(steps):
            y = self(window[None])[0]  # (1,)
            predictions.append(y)
            window = torch.cat([window[1:], y[None]])
        return torch.cat(predictions)


class WordLanguageModel(nn.Module):
    """Next-word prediction: embedding, recurrent stack, linear decoder over the vocabulary.

        e_t = E[w_t],   (h_t, state) = RNN(e_t, state),   logits_t = W h_t + b,   p(w_{t+1}) = softmax(logits_t)

    ``dropout`` acts on every non-recurrent connection (Zaremba et al. 2014, as PyTorch's
    word_language_model): on the embeddings, between layers, and before the decoder.
    ``tie_weights`` shares E and W (Press & Wolf 2017; needs embedding_size == hidden_size).

    ``init="tf1"`` draws what the TensorFlow cookbook's graph drew: the recurrent stack by
    ``init_tf1_`` (glorot-uniform kernels, forget bias 1.0, one bias per gate), the embedding and
    the decoder weight from N(0, 1) (``tf.random_normal_initializer()``), the decoder bias zero;
    ``init="torch"`` keeps PyTorch's defaults.
    """

    def __init__(self, vocab_size: int, embedding_size: int = 128, cell: str = "lstm", hidden_size: int = 128,
                 num_layers: int = 1, dropout: float = 0.0, tie_weights: bool = False, init: Init = "tf1"):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_size)
        self.rnn = make_recurrent(cell, embedding_size, hidden_size, num_layers, dropout)
        self.dropout = nn.Dropout(dropout)
        self.decoder = nn.Linear(hidden_size, vocab_size)
        if init == "tf1":
            init_tf1_(self.rnn)
            with torch.no_grad():
                nn.init.normal_(self.embedding.weight)
                nn.init.normal_(self.decoder.weight)
                nn.init.zeros_(self.decoder.bias)
        if tie_weights:
            if embedding_size != hidden_size:
                raise ValueError(f"tie_weights needs embedding_size == hidden_size, got {embedding_size} and {hidden_size}")
            self.decoder.weight = self.embedding.weight

    def forward(self, tokens: Tensor, state: Tensor | tuple[Tensor, Tensor] | None = None):
        """tokens (B, T) int64, state as the recurrent stack's (None: zeros) -> logits (B, T, V), state."""
        outputs, state = self.rnn(self.dropout(self.embedding(tokens)), state)
        return self.decoder(self.dropout(outputs)), state

    @torch.no_grad()
    def generate(self, prompt: Tensor, steps: int, temperature: float = 1.0, top_k: int | None = None,
                 banned: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Continue ``prompt`` (T,) by ``steps`` tokens, each fed back as the next input: sampled
        from softmax(logits / temperature) over the ``top_k`` most likely words (all if None), or
        the most likely word when ``temperature`` is 0; ``banned`` (e.g. ``<unk>``) is never
        chosen. Same ``generator`` state, same tokens. Call in eval mode. Returns (steps,)."""
        logits, state = self(prompt[None])
        chosen = []
        for _ in range(steps):
            scores = logits[0, -1].float()
            if banned is not None:
                scores[banned] = -float("inf")
            if temperature == 0:
                token = scores.argmax(keepdim=True)
            else:
                scores = scores / temperature
                if top_k is not None and top_k < scores.numel():
                    kth = torch.topk(scores, top_k).values[-1]
                    scores = scores.masked_fill(scores < kth, -float("inf"))
                token = torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=generator)
            chosen.append(token)
            logits, state = self(token.view(1, 1), state)
        return torch.cat(chosen)
