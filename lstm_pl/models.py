"""The networks, as plain ``nn.Module``s, each built from one settings dataclass (its only home:
the LightningModules in ``tasks.py``, the YAML configs and the checkpoints all go through it)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Optional

import torch
from jsonargparse.typing import ClosedUnitInterval, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from torch import Tensor, nn
from torch.nn import functional as F

from .cells import WITH_FORGET_GATE, Cell, init_chrono_, init_tf1_, make_recurrent, single_bias_
from .errors import ConfigError

Init = Literal["tf1", "torch"]


@dataclass
class RecurrentSettings:
    """The recurrent stack: ``cell`` (see ``cells.py``), ``hidden_size`` units in each of
    ``num_layers`` layers. ``init``: ``tf1`` draws the weights as the TensorFlow 1 original did,
    ``torch`` keeps PyTorch's defaults. ``single_bias``: train one bias per gate, as TensorFlow
    does (``cells.single_bias_``); false keeps ``nn.LSTM``'s two."""

    cell: Cell = "lstm"
    hidden_size: PositiveInt = 50
    num_layers: PositiveInt = 1
    init: Init = "tf1"
    single_bias: bool = True


@dataclass
class ManyToOneSettings(RecurrentSettings):
    """``ManyToOne``'s settings. ``input_size`` (features per step) comes from the data
    through the CLI's link; ``output_size``: the head's outputs (1 for sine and adding; for a
    classifier one logit per class, linked from ``data.num_classes``). ``chrono_t_max``: chrono
    initialisation of the gate biases for dependencies up to that many steps (above 2; cells with a
    forget gate only)."""

    input_size: PositiveInt = 1
    output_size: PositiveInt = 1
    chrono_t_max: Optional[PositiveFloat] = None

    def __post_init__(self):
        if self.chrono_t_max is not None and (self.chrono_t_max <= 2 or self.cell not in WITH_FORGET_GATE):
            raise ConfigError(f"model.init_args.net.chrono_t_max needs a value above 2 and a cell with a forget gate "
                              f"({', '.join(WITH_FORGET_GATE)}), got {self.chrono_t_max} with cell {self.cell!r}")


@dataclass
class LanguageModelSettings(RecurrentSettings):
    """``WordLanguageModel``'s settings. ``vocab_size`` comes from the data through the CLI's link.
    ``dropout`` on every non-recurrent connection; ``locked_dropout``: the masks on the embeddings
    and on the stack's output are drawn once per sequence and shared by its time steps
    (variational dropout, Gal & Ghahramani 2016; AWD-LSTM's LockedDropout, Merity et al. 2018)
    instead of anew at every step (between stacked layers the stack's own dropout stays per step);
    ``tie_weights`` shares the embedding and the decoder (needs ``embedding_size == hidden_size``;
    Press & Wolf 2017); ``uniform_init``: where set to a, the embedding and the decoder weights
    start U(-a, a) and the decoder bias at zero, whatever ``init`` says (a = 0.1 in pytorch/examples'
    word_language_model, after Zaremba et al. 2014).

    AWD-LSTM's regularisers (Merity, Keskar and Socher 2018, "Regularizing and optimizing LSTM
    language models"; salesforce/awd-lstm-lm's flags in brackets), all off at 0 and in training
    only: ``weight_drop`` (``--wdrop``, 0.5 there), DropConnect on every hidden-to-hidden weight
    matrix, one mask per window; ``embedding_dropout`` (``--dropoute``, 0.1), whole words dropped
    from the embedding, one mask per window; ``activation_penalty`` (AR, ``--alpha``, 2) and
    ``temporal_penalty`` (TAR, ``--beta``, 1), added to the training loss (Merity, McCann and
    Socher 2017).

    ``learned_cache_window``: where above 0, the next-word distribution is mixed with a learned
    cache over the last outputs of the stack, that many steps back (``LearnedCache``; 0: none)."""

    hidden_size: PositiveInt = 128
    vocab_size: Optional[PositiveInt] = None
    embedding_size: PositiveInt = 128
    dropout: ClosedUnitInterval = 0.0
    locked_dropout: bool = False
    tie_weights: bool = False
    uniform_init: Optional[PositiveFloat] = None
    weight_drop: ClosedUnitInterval = 0.0
    embedding_dropout: ClosedUnitInterval = 0.0
    activation_penalty: NonNegativeFloat = 0.0
    temporal_penalty: NonNegativeFloat = 0.0
    learned_cache_window: NonNegativeInt = 0

    def __post_init__(self):
        if self.tie_weights and self.embedding_size != self.hidden_size:
            raise ConfigError(f"model.init_args.net.tie_weights needs embedding_size == hidden_size, "
                              f"got {self.embedding_size} and {self.hidden_size}")
        for key in ("weight_drop", "embedding_dropout"):
            if getattr(self, key) >= 1:
                raise ConfigError(f"model.init_args.net.{key} must be below 1 (the share dropped), got {getattr(self, key)}")


def flat(settings: dict, separator: str = ".", prefix: str = "") -> dict:
    """Nested settings as one level: ``{"net": {"hidden_size": 50}}`` as ``{"net.hidden_size": 50}`` (keys
    joined by ``separator``), as checkpoints compare them and TensorBoard lists them."""
    items = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            items.update(flat(value, separator, f"{prefix}{key}{separator}"))
        else:
            items[f"{prefix}{key}"] = value
    return items


def detach_state(state):
    """The carried state cut from the graph that made it: truncated backpropagation through time."""
    if state is None or isinstance(state, torch.Tensor):
        return None if state is None else state.detach()
    return tuple(detach_state(part) for part in state)


def weights_finite(module: nn.Module) -> bool:
    """Whether every parameter of ``module`` is finite (no NaN, no inf)."""
    return all(bool(torch.isfinite(p).all()) for p in module.parameters())


def recurrent_stack(settings: RecurrentSettings, input_size: int, dropout: float = 0.0) -> nn.Module:
    """The recurrent stack ``settings`` describe, with PyTorch's default weights (see ``init_recurrent_``)."""
    return make_recurrent(settings.cell, input_size, settings.hidden_size, settings.num_layers, dropout)


def init_recurrent_(rnn: nn.Module, settings: RecurrentSettings) -> None:
    """Draw the stack's weights as ``settings.init`` says and apply ``settings.single_bias``. Called
    once every module of a network exists, so that the random draws come in a fixed order."""
    if settings.init == "tf1":
        init_tf1_(rnn)
    if settings.single_bias:
        single_bias_(rnn)


class ManyToOne(nn.Module):
    """Many-to-one: a recurrent stack reads x (B, T, F); a linear head maps the last hidden state
    to the output, y = W h_T + b (B, output_size): the regression itself (sine, adding), or the
    class logits of ``tasks.ClassificationTask``.

    ``init="tf1"`` also draws the head as the original did: weight truncated normal σ = 0.01,
    bias standard normal. ``chrono_t_max`` then redraws the input and forget gate biases.
    """

    def __init__(self, settings: ManyToOneSettings):
        super().__init__()
        self.rnn = recurrent_stack(settings, settings.input_size)
        self.head = nn.Linear(settings.hidden_size, settings.output_size)
        init_recurrent_(self.rnn, settings)
        if settings.init == "tf1":
            with torch.no_grad():
                nn.init.trunc_normal_(self.head.weight, std=0.01, a=-0.02, b=0.02)  # tf.truncated_normal: ±2σ
                nn.init.normal_(self.head.bias)
        if settings.chrono_t_max is not None:
            init_chrono_(self.rnn, settings.chrono_t_max)

    def forward(self, x: Tensor) -> Tensor:
        outputs, _ = self.rnn(x)
        return self.head(outputs[:, -1])


@torch.no_grad()
def closed_loop(predict: Callable[[Tensor], Tensor], window: Tensor, steps: int) -> Tensor:
    """Long-term prediction: from ``window`` (T, 1) predict one value, slide the window over it,
    and repeat ``steps`` times, so every prediction after the first is made from the model's own
    outputs, not from the data. ``predict`` maps (1, T, 1) to (1, 1). Returns (steps,)."""
    window = window.clone()
    predictions = []
    for _ in range(steps):
        y = predict(window[None])[0]  # (1,)
        predictions.append(y)
        window = torch.cat([window[1:], y[None]])
    return torch.cat(predictions)


class LockedDropout(nn.Dropout):
    """Dropout whose mask is drawn once per sequence and shared by all its time steps: x (B, T, F)
    times m (B, 1, F) / (1 - p), m ~ Bernoulli(1 - p). The identity in eval mode or at p = 0."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        mask = x.new_empty(x.shape[0], 1, x.shape[2]).bernoulli_(1 - self.p) / (1 - self.p)
        return x * mask


class WordLanguageModel(nn.Module):
    """Next-word prediction: embedding, recurrent stack, linear decoder over the vocabulary.

        e_t = E[w_t],   (h_t, state) = RNN(e_t, state),   logits_t = W h_t + b,   p(w_{t+1}) = softmax(logits_t)

    ``dropout`` acts on every non-recurrent connection (Zaremba et al. 2014, as PyTorch's
    word_language_model): on the embeddings, between layers, and before the decoder.
    ``tie_weights`` shares E and W (Press & Wolf 2017). AWD-LSTM's regularisers are the settings'
    (``LanguageModelSettings``): ``embed`` drops whole words, ``recurrent`` drops hidden-to-hidden
    weights, ``penalty`` is AR + TAR.

    ``init="tf1"`` draws what the TensorFlow cookbook's graph drew: the recurrent stack by
    ``init_tf1_``, the embedding and the decoder weight from N(0, 1)
    (``tf.random_normal_initializer()``), the decoder bias zero.
    """

    def __init__(self, settings: LanguageModelSettings):
        super().__init__()
        if settings.vocab_size is None:
            raise ConfigError("model.init_args.net.vocab_size is not set: give it, or let the CLI take it from the data "
                              "(data.vocab_size)")
        self.embedding = nn.Embedding(settings.vocab_size, settings.embedding_size)
        self.rnn = recurrent_stack(settings, settings.embedding_size, settings.dropout)
        self.dropout = (LockedDropout if settings.locked_dropout else nn.Dropout)(settings.dropout)
        self.decoder = nn.Linear(settings.hidden_size, settings.vocab_size)
        init_recurrent_(self.rnn, settings)
        with torch.no_grad():
            if settings.uniform_init is not None:
                nn.init.uniform_(self.embedding.weight, -settings.uniform_init, settings.uniform_init)
                nn.init.uniform_(self.decoder.weight, -settings.uniform_init, settings.uniform_init)
                nn.init.zeros_(self.decoder.bias)
            elif settings.init == "tf1":
                nn.init.normal_(self.embedding.weight)
                nn.init.normal_(self.decoder.weight)
                nn.init.zeros_(self.decoder.bias)
        if settings.tie_weights:
            self.decoder.weight = self.embedding.weight
        self.cache = (LearnedCache(settings.hidden_size, settings.learned_cache_window)
                      if settings.learned_cache_window else None)
        self.settings = settings

    def embed(self, tokens: Tensor) -> Tensor:
        """E[w_t] (B, T, E). With ``embedding_dropout`` p in training, each word of the vocabulary is
        dropped from this window with probability p (all its occurrences) and the kept ones scaled by
        1/(1 - p): E' = diag(m) E / (1 - p), m ~ Bernoulli(1 - p) per word (AWD's embedded_dropout),
        applied to the looked-up rows, so no copy of E is made."""
        embedded = self.embedding(tokens)
        p = self.settings.embedding_dropout
        if not self.training or p == 0:
            return embedded
        keep = embedded.new_empty(self.embedding.num_embeddings).bernoulli_(1 - p) / (1 - p)
        return embedded * keep[tokens].unsqueeze(-1)

    def recurrent(self, x: Tensor, state):
        """The stack over x. With ``weight_drop`` p in training, its hidden-to-hidden matrices are
        DropConnect-ed (Wan et al. 2013): U' = U ⊙ M / (1 - p), M ~ Bernoulli(1 - p), one M per
        matrix for the whole window (every time step, every sequence: the recurrence stays one
        function), through ``torch.func.functional_call`` (the module's own weights untouched)."""
        p = self.settings.weight_drop
        if not self.training or p == 0:
            return self.rnn(x, state)
        weights = {name: F.dropout(weight, p) if name.rsplit(".", 1)[-1].startswith("weight_hh") else weight
                   for name, weight in self.rnn.named_parameters()}
        return torch.func.functional_call(self.rnn, weights, (x, state))

    def run(self, tokens: Tensor, state=None) -> tuple[Tensor, object, Tensor, Tensor]:
        """The forward pass with what the penalties read: logits (B, T, V), state, the stack's
        output h (B, T, H) and the same after dropout."""
        outputs, state = self.recurrent(self.dropout(self.embed(tokens)), state)
        dropped = self.dropout(outputs)
        return self.decoder(dropped), state, outputs, dropped

    def forward(self, tokens: Tensor, state: Tensor | tuple[Tensor, Tensor] | None = None):
        """tokens (B, T) int64, state as the recurrent stack's (None: zeros) -> logits (B, T, V), state."""
        logits, state, _, _ = self.run(tokens, state)
        return logits, state

    def score(self, tokens: Tensor, targets: Tensor, carried=None) -> tuple[Tensor, object, Tensor, Tensor]:
        """One window of next-word prediction, what training and every evaluation score: log p of
        each target (B, T) under the model (the softmax, mixed with the learned cache where there is
        one); what the next window of the same streams starts from (the recurrent state, and the
        cache's memory), detached; the stack's output h (B, T, H) and the same after dropout."""
        state, memory = carried if self.cache is not None and carried is not None else (carried, None)
        logits, state, outputs, dropped = self.run(tokens, state)
        log_p = -F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view_as(targets)
        if self.cache is not None:
            log_p, memory = self.cache(log_p, outputs, targets, memory)
            state = (state, memory)
        return log_p, detach_state(state), outputs, dropped

    def penalty(self, outputs: Tensor, dropped: Tensor) -> Tensor:
        """AR + TAR (Merity, McCann and Socher 2017) on the last layer's output h (B, T, H):
        α · mean((m ⊙ h)²) (large activations, on the output after dropout) + β · mean((h_t - h_{t-1})²)
        (fast changes, before dropout); 0 where both are off."""
        alpha, beta = self.settings.activation_penalty, self.settings.temporal_penalty
        penalty = outputs.new_zeros(())
        if alpha:
            penalty = penalty + alpha * dropped.pow(2).mean()
        if beta and outputs.shape[1] > 1:
            penalty = penalty + beta * (outputs[:, 1:] - outputs[:, :-1]).pow(2).mean()
        return penalty

    @torch.no_grad()
    def generate(self, prompt: Tensor, steps: int, temperature: float = 1.0, top_k: int | None = None,
                 banned: int | None = None, generator: torch.Generator | None = None,
                 top_p: float | None = None) -> Tensor:
        """Continue ``prompt`` (T,) by ``steps`` tokens, each fed back as the next input: sampled
        from softmax(logits / temperature) over the ``top_k`` most likely words (all if None) and,
        with ``top_p``, over the fewest most likely words whose probabilities sum to at least
        ``top_p`` (nucleus sampling, Holtzman et al. 2020); or the most likely word when
        ``temperature`` is 0. ``banned`` (e.g. ``<unk>``) is never chosen. Same ``generator``
        state, same tokens. With a learned cache, the words are drawn from the mixed distribution
        (``LearnedCache.next_word``), the prompt and the words drawn so far its memory. Call in
        eval mode. Returns (steps,)."""
        logits, state, outputs, _ = self.run(prompt[None])
        memory = (outputs[:, :-1], prompt[None, 1:]) if self.cache is not None else None
        chosen = []
        for _ in range(steps):
            scores = logits[0, -1].float()
            if self.cache is not None:
                scores = self.cache.next_word(torch.log_softmax(logits[:, -1], dim=-1), outputs[:, -1], memory)[0].float()
            if banned is not None:
                scores[banned] = -float("inf")
            if temperature == 0:
                token = scores.argmax(keepdim=True)
            else:
                scores = scores / temperature
                if top_k is not None and top_k < scores.numel():
                    kth = torch.topk(scores, top_k).values[-1]
                    scores = scores.masked_fill(scores < kth, -float("inf"))
                if top_p is not None and top_p < 1:
                    scores = nucleus(scores, top_p)
                token = torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=generator)
            chosen.append(token)
            if self.cache is not None:
                keys = torch.cat([memory[0], outputs[:, -1:]], dim=1)[:, -self.cache.window:]
                memory = (keys, torch.cat([memory[1], token.view(1, 1)], dim=1)[:, -self.cache.window:])
            logits, state, outputs, _ = self.run(token.view(1, 1), state)
        return torch.cat(chosen, dim=0) if chosen else prompt.new_empty(0)


class LearnedCache(nn.Module):
    """The continuous cache (``cache.py``; Grave, Joulin and Usunier 2017) made part of the model and
    trained with it, as the pointer of Merity, Xiong, Bradbury and Socher 2017 ("Pointer sentinel
    mixture models") is: step i's output h_i points at x_{i+1}, the word that followed it, and

        q_t = h_t + W h_t,   a_t = softmax_i(θ · q_t·h_i),  i in [t - window, t)
        m_t = max(0, max_i cos(q_t, h_i))                      how well the best memory matches
        λ_t = σ(w·h_t + c·m_t + b)
        p(w | h_t) = (1 - λ_t) · p_vocab(w | h_t) + λ_t · Σ_i a_{t,i} [x_{i+1} = w]

    It starts as the fixed cache at its best evaluation settings on this corpus (W = 0, w = 0, c = 0,
    θ = 1.5, λ = σ(b) = 0.175: RESULTS.md) and learns from there what to look for (W, θ) and when to
    look (w, b, and c: the pointer sentinel's lesson that the gate should read the match, here as a
    cosine, bounded, so that SGD's large rates keep it stable; an unbounded match strength shut the
    cache off: RESULTS.md); the gradients reach the recurrent stack through q_t and the keys of the
    same window. Where step t has no history (the first word of a stream), p = p_vocab. The memory of
    the windows before (their outputs and the words that followed) is carried like the recurrent
    state, detached."""

    def __init__(self, hidden_size: int, window: int, theta: float = 1.5, interpolation: float = 0.175):
        super().__init__()
        self.window = window
        self.query = nn.Linear(hidden_size, hidden_size, bias=False)
        self.theta = nn.Parameter(torch.tensor(float(theta)))
        self.gate = nn.Linear(hidden_size, 1)
        self.match_weight = nn.Parameter(torch.zeros(()))   # c
        with torch.no_grad():
            nn.init.zeros_(self.query.weight)
            nn.init.zeros_(self.gate.weight)
            self.gate.bias.fill_(math.log(interpolation / (1 - interpolation)))

    def forward(self, log_p_vocab: Tensor, outputs: Tensor, targets: Tensor, memory=None) -> tuple[Tensor, tuple]:
        """log p(targets) (B, T) from the softmax's log-probabilities of the targets (B, T), the
        stack's outputs (B, T, H) and the targets (B, T); and the memory for the next window."""
        keys = outputs if memory is None else torch.cat([memory[0], outputs], dim=1)
        values = targets if memory is None else torch.cat([memory[1], targets], dim=1)
        pointed, has_history, match = pointer(outputs + self.query(outputs), keys, values, targets, self.window,
                                              self.theta, with_match=True)
        mixed = self.mix(log_p_vocab, self.gate_logit(outputs, match), pointed)
        log_p = torch.where(has_history, mixed, log_p_vocab)
        return log_p, (keys[:, -self.window:].detach(), values[:, -self.window:])

    def next_word(self, log_p_vocab: Tensor, output: Tensor, memory: tuple[Tensor, Tensor]) -> Tensor:
        """The whole mixed distribution of the next word, log p(w | h_t) (B, V), from the softmax's
        (B, V), the stack's last output h_t (B, H) and the memory: keys h_i (B, K, H), the words
        x_{i+1} that followed them (B, K), the last ``window`` steps (what ``generate`` samples from)."""
        keys, values = memory[0][:, -self.window:], memory[1][:, -self.window:]
        if keys.shape[1] == 0:
            return log_p_vocab
        query = output + self.query(output)
        scores = self.theta * (keys @ query[..., None]).squeeze(-1)                             # (B, K)
        attention = torch.softmax(scores, dim=-1)
        match = best_match(scores[:, None], self.theta * query[:, None], keys)                  # (B, 1)
        pointed = torch.zeros_like(log_p_vocab).scatter_add_(1, values, attention.to(log_p_vocab.dtype))
        return self.mix(log_p_vocab, self.gate_logit(output[:, None], match), pointed)

    def gate_logit(self, outputs: Tensor, match: Tensor) -> Tensor:
        """w·h_t + c·m_t + b, λ_t's logit (B, T), from the stack's outputs (B, T, H) and the best
        matches m_t (B, T)."""
        return self.gate(outputs).squeeze(-1) + self.match_weight * match

    @staticmethod
    def mix(log_p_vocab: Tensor, gate: Tensor, pointed: Tensor) -> Tensor:
        """log((1 - λ)·p_vocab + λ·p_pointer), λ = σ(gate), from log p_vocab and p_pointer (which may be 0)."""
        tiny = torch.finfo(pointed.dtype).tiny
        return torch.logaddexp(F.logsigmoid(-gate) + log_p_vocab, F.logsigmoid(gate) + pointed.clamp_min(tiny).log())


@torch.no_grad()
def best_match(scores: Tensor, queries: Tensor, keys: Tensor, usable: Tensor | None = None) -> Tensor:
    """How well each query's best key matches, max(0, max_i cos(q_t, k_i)) (B, T, float32), from the
    products q_t·k_i (B, T, K) already made, queries (B, T, H), keys (B, K, H) and which keys each
    query may use (T, K; None: all); 0 where it may use none. In float32, and a product that
    overflowed half precision (inf) counts as a perfect match, 1, not NaN. Without gradients: a signal
    the cache's gate reads (its weight c learns), not one the stack is trained to shape (with them,
    the backward pass through the norms touches every remembered key)."""
    norms = queries.float().norm(dim=-1)[..., None] * keys.float().norm(dim=-1)[..., None, :]
    cosines = scores.float() / norms.clamp_min(torch.finfo(torch.float32).tiny)
    if usable is not None:
        cosines = cosines.masked_fill(~usable, 0.0)
    return cosines.amax(-1).clamp_min(0.0).nan_to_num(0.0, posinf=1.0)


def pointer(queries: Tensor, keys: Tensor, values: Tensor, targets: Tensor, window: int,
            theta: float | Tensor, with_match: bool = False) -> tuple[Tensor, ...]:
    """The pointer of a continuous cache, for the last T of K steps of each stream (the earlier ones
    remembered): p(target_t) = Σ_{i in [t - window, t)} softmax_i(θ · q_t·k_i) [values_i = target_t]
    (B, T), from queries (B, T, H), keys (B, K, H), values (B, K) (the word that followed each key)
    and targets (B, T); whether step t had any history (T,): where it had none, p = 0; and, with
    ``with_match``, how well its best key matches (``best_match``; B, T). The fixed cache
    (``cache.CacheMemory``) and the learned one (``LearnedCache``) both point with it."""
    remembered, steps = keys.shape[1] - queries.shape[1], queries.shape[1]
    query_at = torch.arange(remembered, remembered + steps, device=queries.device)[:, None]
    key_at = torch.arange(keys.shape[1], device=queries.device)[None]
    usable = (key_at < query_at) & (key_at >= query_at - window)                          # (T, K)
    scaled = theta * queries
    scores = scaled @ keys.transpose(1, 2)                                                 # (B, T, K)
    weights = torch.softmax(scores.masked_fill(~usable, -float("inf")), dim=-1).nan_to_num(0.0)  # no history: 0
    pointed = (weights * (values[:, None, :] == targets[:, :, None])).sum(-1)
    if not with_match:
        return pointed, usable.any(-1)
    return pointed, usable.any(-1), best_match(scores, scaled, keys, usable)              # cos(θq, k) = cos(q, k) for θ > 0


def nucleus(scores: Tensor, top_p: float) -> Tensor:
    """``scores`` (V,) with every word outside the nucleus set to -inf: the nucleus is the fewest
    most likely words whose softmax probabilities sum to at least ``top_p`` (the most likely word
    always in it)."""
    probabilities, order = torch.softmax(scores, dim=-1).sort(descending=True)
    before = probabilities.cumsum(0) - probabilities  # the mass of the more likely words
    outside = order[before >= top_p]
    return scores.index_fill(0, outside, -float("inf"))
