"""AWD-LSTM's regularisers as WordLanguageModel settings: each acts in training only, does what its
equation says, and leaves evaluation and the module's own weights alone."""

import pytest
import torch

from lstm_pl import ConfigError, LanguageModelSettings, WordLanguageModel


def model(**settings) -> WordLanguageModel:
    torch.manual_seed(0)
    return WordLanguageModel(LanguageModelSettings(vocab_size=50, embedding_size=8, hidden_size=8, **settings))


TOKENS = torch.tensor([[3, 7, 3, 9, 3, 1], [7, 7, 2, 3, 5, 0]])


@pytest.mark.parametrize("cell, weight", [("lstm", "rnn.weight_hh_l0"), ("lstm_peephole", "rnn.layers.0.weight_hh"),
                                          ("rnn", "rnn.weight_hh_l0")])
def test_weight_drop_drops_hidden_to_hidden_weights_for_the_window(cell, weight):
    """U' = U ⊙ M / (1 - p): the gradient reaches exactly the kept entries of U, scaled by 1/(1 - p)
    against the network run with U' itself; the stored U is unchanged; eval runs U."""
    net = model(cell=cell, weight_drop=0.5)
    stored = dict(net.named_parameters())[weight].detach().clone()
    torch.manual_seed(1)
    logits, _ = net(TOKENS)
    logits.sum().backward()
    grad = dict(net.named_parameters())[weight].grad
    dropped = grad == 0
    assert 0.3 < dropped.float().mean() < 0.7                                 # about half the entries
    assert torch.equal(dict(net.named_parameters())[weight], stored)          # the weights themselves untouched
    net.eval()
    plain = model(cell=cell)
    plain.eval()
    assert torch.equal(net(TOKENS)[0], plain(TOKENS)[0])                      # no drop in eval
    other = [name for name, p in net.named_parameters() if p.grad is not None and name != weight and "weight_ih" in name]
    assert other and all(bool((dict(net.named_parameters())[n].grad != 0).all()) for n in other)  # input weights kept


def test_embedding_dropout_drops_whole_words():
    """Every occurrence of a word shares its fate in a window: all zero, or all scaled by 1/(1 - p)."""
    net = model(embedding_dropout=0.5)
    torch.manual_seed(3)
    embedded = net.embed(TOKENS)
    plain = net.embedding(TOKENS)
    for word in TOKENS.unique():
        rows = embedded[TOKENS == word]
        kept = torch.allclose(rows, plain[TOKENS == word] * 2)
        assert kept or bool((rows == 0).all())
    assert any(bool((embedded[TOKENS == w] == 0).all()) for w in TOKENS.unique())  # some word dropped
    net.eval()
    assert torch.equal(net.embed(TOKENS), plain)


def test_activation_penalties_are_their_equations():
    """AR = α·mean((m ⊙ h)²) on the dropped output, TAR = β·mean((h_t - h_{t-1})²) on the output
    before dropout; zero when both are off."""
    net = model(activation_penalty=2.0, temporal_penalty=1.0)
    h = torch.randn(2, 5, 8)
    dropped = torch.randn(2, 5, 8)
    expected = 2.0 * (dropped ** 2).mean() + 1.0 * ((h[:, 1:] - h[:, :-1]) ** 2).mean()
    assert torch.allclose(net.penalty(h, dropped), expected)
    assert model().penalty(h, dropped) == 0


@pytest.mark.parametrize("key", ["weight_drop", "embedding_dropout"])
def test_a_share_of_one_is_refused(key):
    with pytest.raises(ConfigError, match=f"model.init_args.net.{key}"):
        LanguageModelSettings(**{key: 1.0})


def test_the_training_loss_adds_the_penalties_and_evaluation_does_not():
    """The task minimises cross-entropy + AR + TAR; its perplexities are of the cross-entropy alone."""
    from lstm_pl import LanguageModelTask

    settings = LanguageModelSettings(vocab_size=50, embedding_size=8, hidden_size=8, activation_penalty=2.0,
                                     temporal_penalty=1.0)
    torch.manual_seed(0)
    task = LanguageModelTask(net=settings, stateful=False)
    batch = (TOKENS[:, :-1], TOKENS[:, 1:])
    loss, cross_entropy, tokens = task.cross_entropy_and_penalty(batch)
    logits, state, outputs, dropped = task.net.run(batch[0])
    assert tokens == 10 and torch.allclose(loss, cross_entropy + task.net.penalty(outputs, dropped))
    assert loss > cross_entropy
    assert task.window(batch, "val")[2] == 0
