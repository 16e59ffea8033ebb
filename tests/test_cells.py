"""Each hand-written cell computes its equations, forwards and backwards, in float64."""

import errno
import fcntl
import re
import threading
import time

import pytest
import torch

from lstm_pl import fused
from lstm_pl.cells import CELLS, LSTMRecurrence, StackedLSTM, make_recurrent

PATHS = ["eager", "fused"]


def kernels_for(path):
    """None for the eager loop, else the compiled kernels, which must have built (unless the run
    turned them off with LSTM_PL_FUSED=0, when the fused cases are skipped)."""
    if path == "eager":
        return None
    module = fused.kernels()
    if module is None and fused.disabled():
        pytest.skip("LSTM_PL_FUSED=0")
    assert module is not None, "the fused kernels did not build: see the log line of lstm_pl.fused"
    return module


@pytest.fixture(autouse=True)
def float64():
    """Every tensor of this module in float64; restored for the other modules."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def reference_lstm(x, h, c, w_ih, w_hh, b, peephole=None, forget_gate=True):
    """The cell equations, one step at a time, straight from the theory chapter (float64)."""
    hidden = h.shape[1]
    outputs = []
    for t in range(x.shape[1]):
        a = x[:, t] @ w_ih.T + h @ w_hh.T + b
        if forget_gate:
            a_i, a_f, a_g, a_o = a.split(hidden, dim=1)
        else:
            a_i, a_g, a_o = a.split(hidden, dim=1)
        p_i, p_f, p_o = peephole if peephole is not None else (0, 0, 0)
        i = torch.sigmoid(a_i + p_i * c)
        g = torch.tanh(a_g)
        if forget_gate:
            f = torch.sigmoid(a_f + p_f * c)
            c = f * c + i * g
        else:
            c = c + i * g
        o = torch.sigmoid(a_o + p_o * c)
        h = o * torch.tanh(c)
        outputs.append(h)
    return torch.stack(outputs, 1), h, c


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("cell", ["lstm_peephole", "lstm_cec"])
def test_hand_written_cell_matches_its_equations(cell, path):
    torch.manual_seed(0)
    layer = make_recurrent(cell, 3, 8).layers[0]
    layer.fused = kernels_for(path) is not None
    x = torch.randn(4, 12, 3)
    h0, c0 = torch.randn(4, 8), torch.randn(4, 8)
    params = [layer.weight_ih, layer.weight_hh, layer.bias] + ([layer.peephole] if layer.peephole is not None else [])
    out, (h, c) = layer(x, (h0, c0))
    ref_out, ref_h, ref_c = reference_lstm(x, h0, c0, layer.weight_ih, layer.weight_hh, layer.bias,
                                           layer.peephole, layer.forget_gate)
    for mine, ref in ((out, ref_out), (h, ref_h), (c, ref_c)):
        torch.testing.assert_close(mine, ref, rtol=0, atol=1e-12)
    # Gradients of a loss that uses every output, the final h and the final c.
    weights = torch.randn_like(out)
    loss = lambda o, h_, c_: (o * weights).sum() + h_.square().sum() + c_.sin().sum()
    mine = torch.autograd.grad(loss(out, h, c), params)
    ref = torch.autograd.grad(loss(ref_out, ref_h, ref_c), params)
    for a, b in zip(mine, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("forget_gate", [True, False])
@pytest.mark.parametrize("peephole", [True, False])
def test_recurrence_backward_gradcheck(forget_gate, peephole, path):
    kernels = kernels_for(path)
    torch.manual_seed(1)
    steps, batch, hidden, gates = 5, 3, 4, 4 if forget_gate else 3
    inputs = [torch.randn(steps, batch, gates * hidden), torch.randn(batch, hidden), torch.randn(batch, hidden),
              torch.randn(gates * hidden, hidden)] + ([torch.randn(3, hidden)] if peephole else [])
    inputs = [t.requires_grad_() for t in inputs]
    fn = lambda xp, h0, c0, w, *p: LSTMRecurrence.apply(xp, h0, c0, w, p[0] if p else None, kernels)
    assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.parametrize("path", PATHS)
def test_peephole_with_zero_peepholes_is_nn_lstm(path):
    torch.manual_seed(2)
    mine = StackedLSTM(3, 16, num_layers=2, peephole=True, fused=kernels_for(path) is not None)
    reference = torch.nn.LSTM(3, 16, num_layers=2, batch_first=True)
    with torch.no_grad():
        for k, layer in enumerate(mine.layers):
            layer.peephole.zero_()
            getattr(reference, f"weight_ih_l{k}").copy_(layer.weight_ih)
            getattr(reference, f"weight_hh_l{k}").copy_(layer.weight_hh)
            getattr(reference, f"bias_ih_l{k}").copy_(layer.bias)
            getattr(reference, f"bias_hh_l{k}").zero_()
    x = torch.randn(5, 40, 3)
    state = (torch.randn(2, 5, 16), torch.randn(2, 5, 16))
    out, (h, c) = mine(x, state)
    ref_out, (ref_h, ref_c) = reference(x, state)
    for a, b in ((out, ref_out), (h, ref_h), (c, ref_c)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    grads = torch.autograd.grad(out.sum() + c.sum(), [mine.layers[0].weight_hh, mine.layers[1].weight_ih])
    ref_grads = torch.autograd.grad(ref_out.sum() + ref_c.sum(), [reference.weight_hh_l0, reference.weight_ih_l1])
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


@pytest.mark.parametrize("cell", CELLS)
def test_every_cell_has_the_same_interface(cell):
    rnn = make_recurrent(cell, 2, 6, num_layers=3, dropout=0.1)
    out, state = rnn(torch.randn(4, 9, 2))
    assert out.shape == (4, 9, 6)
    h = state if cell == "rnn" else state[0]
    assert h.shape == (3, 4, 6)
    torch.testing.assert_close(h[-1], out[:, -1])
    if cell != "rnn":
        assert state[1].shape == (3, 4, 6)
    out2, _ = rnn(torch.randn(4, 9, 2), state)  # a carried state is accepted
    assert out2.shape == (4, 9, 6)


def test_unknown_cell():
    with pytest.raises(ValueError, match="cell"):
        make_recurrent("gru", 2, 4)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_kernels_matrix_products_at_every_block_shape(dtype, threads):
    """The compiled products (register blocks of up to 6 rows by 4 vectors, the last vector partial,
    rows past 64 on another thread, K in chunks of 128) against torch's, at shapes that leave every kind of
    remainder."""
    kernels = kernels_for("fused")
    torch.manual_seed(5)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
    try:
        for m, k, n in [(1, 1, 1), (10, 100, 400), (7, 3, 37), (130, 17, 200), (65, 2, 16), (3, 250, 9), (0, 4, 5),
                        (4, 0, 5), (70, 300, 33)]:
            x, weight, bias = torch.randn(m, k, dtype=dtype), torch.randn(n, k, dtype=dtype), torch.randn(n, dtype=dtype)
            torch.testing.assert_close(kernels.linear(x, weight, bias), torch.addmm(bias, x, weight.t()), **tol)
            torch.testing.assert_close(kernels.linear(x, weight, bias[:0]), x @ weight.t(), **tol)
            a = torch.randn(m, n, dtype=dtype)
            torch.testing.assert_close(kernels.matmul(a, weight), a @ weight, **tol)
            torch.testing.assert_close(kernels.matmul_tn(a, x), a.t() @ x, **tol)
            strided = torch.randn(n, m, dtype=dtype).t()  # not contiguous: copied first
            torch.testing.assert_close(kernels.matmul_tn(strided, x), strided.t() @ x, **tol)
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("cell", ["lstm_peephole", "lstm_cec"])
def test_fused_cell_at_a_large_batch_on_two_threads_matches_its_equations(cell):
    """Batch 130 (rows split between threads), hidden 37 (no whole vector of gates): forward, gradients
    and the evaluation kernel against the equations, float64."""
    kernels_for("fused")
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(6)
        layer = make_recurrent(cell, 3, 37).layers[0]
        x, h0, c0 = torch.randn(130, 6, 3), torch.randn(130, 37), torch.randn(130, 37)
        params = [layer.weight_ih, layer.weight_hh, layer.bias, *([layer.peephole] if layer.peephole is not None else [])]
        out, (h, c) = layer(x, (h0, c0))
        ref = reference_lstm(x, h0, c0, layer.weight_ih, layer.weight_hh, layer.bias, layer.peephole, layer.forget_gate)
        for mine, expected in zip((out, h, c), ref):
            torch.testing.assert_close(mine, expected, rtol=0, atol=1e-12)
        weights = torch.randn_like(out)
        mine = torch.autograd.grad((out * weights).sum() + c.sum(), params)
        expected = torch.autograd.grad((ref[0] * weights).sum() + ref[2].sum(), params)
        for a, b in zip(mine, expected):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
        with torch.no_grad():
            assert torch.equal(layer(x, (h0, c0))[0], out.detach())
    finally:
        torch.set_num_threads(previous)


def test_fused_and_eager_agree_in_float32():
    """The compiled loop against the eager one at a training shape, in float32 (rounding only)."""
    kernels_for("fused")
    torch.manual_seed(3)
    layers = [make_recurrent("lstm_peephole", 2, 32).to(torch.float32) for _ in range(2)]
    layers[1].load_state_dict(layers[0].state_dict())
    layers[0].layers[0].fused, layers[1].layers[0].fused = False, True
    x = torch.randn(16, 50, 2, dtype=torch.float32)
    results = []
    for layer in layers:
        out, (h, c) = layer(x)
        grads = torch.autograd.grad(out.square().mean() + c.sum(), list(layer.parameters()))
        results.append((out, h, c, *grads))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("cell", ["lstm_peephole", "lstm_cec"])
def test_evaluation_without_gradients_gives_the_training_forwards_outputs(cell, dtype):
    """Under ``no_grad`` the compiled cells run a forward that keeps no activations for a backward
    pass (``forward_inference``): the same outputs and final state, bit for bit."""
    kernels_for("fused")
    torch.manual_seed(4)
    layer = make_recurrent(cell, 3, 16, num_layers=2).to(dtype)
    x = torch.randn(5, 30, 3, dtype=dtype)
    trained = layer(x)
    with torch.no_grad():
        evaluated = layer(x)
    for a, b in zip(torch.utils._pytree.tree_leaves(trained), torch.utils._pytree.tree_leaves(evaluated)):
        assert torch.equal(a.detach(), b) and not b.requires_grad


def test_evaluation_takes_the_state_as_the_training_forward_does():
    """A state that broadcasts is taken, one that does not fit is an error, under ``no_grad`` as with grad."""
    kernels_for("fused")
    layer = make_recurrent("lstm_peephole", 3, 8).layers[0]
    x = torch.randn(4, 5, 3)
    state = (torch.randn(4, 8), torch.randn(1, 8))
    with torch.no_grad():
        assert torch.equal(layer(x, state)[0], layer(x, (state[0], state[1].expand(4, 8)))[0])
        with pytest.raises(RuntimeError):
            layer(x, (state[0], torch.randn(2, 8)))


def test_a_failed_build_falls_back_to_the_eager_loop_with_one_line(monkeypatch, caplog):
    def broken(verbose=False):
        raise OSError("no C++ compiler\nsecond line of the compiler's complaint")

    monkeypatch.setattr(fused, "build", broken)
    fused.kernels.cache_clear()
    try:
        assert fused.kernels() is None
        layer = make_recurrent("lstm_cec", 2, 4)
        out, _ = layer(torch.randn(3, 5, 2))
        assert out.shape == (3, 5, 4)
    finally:
        fused.kernels.cache_clear()
    notices = [r.getMessage() for r in caplog.records if r.name == "lstm_pl.fused"]
    assert len(notices) == 1 and "no C++ compiler" in notices[0] and "\n" not in notices[0]


@pytest.fixture
def module_cache(tmp_path, monkeypatch):
    """A kernel cache of the test's own, where compiling copies in the module this machine built (the
    compiler takes 30 s): the module's path there, its bytes, and the staging folders compiled into."""
    kernels_for("fused")
    built = fused.build_directory() / f"{fused.NAME}.so"
    module_bytes = built.read_bytes()
    monkeypatch.setattr(fused, "build_directory", lambda: tmp_path / "cache")
    compiled = []

    def compile_module(staging, verbose):
        compiled.append(staging)
        (staging / built.name).write_bytes(module_bytes)
    monkeypatch.setattr(fused, "compile_module", compile_module)
    return tmp_path / "cache" / built.name, module_bytes, compiled


def test_the_compiled_module_is_published_whole_with_its_checksum(module_cache):
    library, module_bytes, compiled = module_cache
    assert callable(fused.build().tf_adam) and len(compiled) == 1
    assert library.read_bytes() == module_bytes and fused.intact(library)
    assert not list(library.parent.glob(".staging-*"))
    assert callable(fused.build().tf_adam) and len(compiled) == 1  # built once, then loaded


@pytest.mark.parametrize("damage", ["cut short", "overwritten", "checksum lost"])
def test_a_damaged_compiled_module_is_built_again_never_loaded(module_cache, damage, caplog):
    """A module cut short (a killed build, a full disk) crashed every later run with a bus error and
    no message when loaded; one overwritten left every run on the slow path. Both are built again."""
    library, module_bytes, compiled = module_cache
    fused.build()
    if damage == "checksum lost":
        fused.checksum_path(library).unlink()
    else:  # a new file in its place: writing into the loaded module's own file would crash this process
        damaged_file = library.with_name("damaged")
        damaged_file.write_bytes(module_bytes[:4096] if damage == "cut short" else b"\0" * len(module_bytes))
        damaged_file.replace(library)
    assert not fused.intact(library)  # (were it loaded, this process would crash: a bus error or a segfault)
    caplog.clear()
    with caplog.at_level("WARNING", logger="lstm_pl.fused"):
        assert callable(fused.build().tf_adam)
    assert len(compiled) == 2 and library.read_bytes() == module_bytes and fused.intact(library)
    lines = [r.getMessage() for r in caplog.records if r.name == "lstm_pl.fused"]
    assert len(lines) == 1 and "are damaged" in lines[0] and str(library.parent) in lines[0]  # one line, the build's
    assert ("checksum is missing" in lines[0]) == (damage == "checksum lost")


def test_a_build_that_fails_midway_publishes_nothing(module_cache, monkeypatch):
    library, module_bytes, compiled = module_cache
    stale = library.parent / ".staging-host-1"  # left by a killed build
    stale.mkdir(parents=True)

    def fails_midway(staging, verbose):
        (staging / library.name).write_bytes(module_bytes[:4096])
        raise OSError("the linker was killed")
    working = fused.compile_module
    monkeypatch.setattr(fused, "compile_module", fails_midway)
    with pytest.raises(OSError, match="killed"):
        fused.build()
    assert not library.exists() and not list(library.parent.glob(".staging-*"))
    monkeypatch.setattr(fused, "compile_module", working)
    assert callable(fused.build().tf_adam) and fused.intact(library)


def test_a_build_waits_for_another_s_says_so_and_loads_its_module(module_cache, caplog):
    """Two processes on an empty cache (DDP's, or two runs started together): one builds, the other
    waits for its lock, saying so in a line, then loads what it published."""
    library, module_bytes, compiled = module_cache
    library.parent.mkdir(parents=True)
    results = []
    with fused.locked(library) as held:  # another process's build holds the lock (flock: per open file)
        assert held
        waiter = threading.Thread(target=lambda: results.append(fused.build()))
        with caplog.at_level("WARNING", logger="lstm_pl.fused"):
            waiter.start()
            for _ in range(200):
                if "waiting for another process's build" in caplog.text:
                    break
                time.sleep(0.01)
            assert "waiting for another process's build" in caplog.text and not results
            fused.compile_and_publish(library, verbose=False, clear_stale=True)  # its build, published
    waiter.join(timeout=30)
    assert callable(results[0].tf_adam) and len(compiled) == 1  # loaded, not built again


def test_without_the_lock_a_build_leaves_other_builds_staging_alone(module_cache, monkeypatch):
    """Where no lock can be taken (a file system without locks), another host's or process's build
    may be running: its staging folder is not a killed build's, and stays."""
    library, module_bytes, compiled = module_cache
    monkeypatch.setattr(fcntl, "flock", lambda *args: (_ for _ in ()).throw(OSError(errno.ENOLCK, "no locks")))
    with fused.locked(library) as held:
        assert not held
    running = library.parent / ".staging-otherhost-7"
    running.mkdir(parents=True)
    assert callable(fused.build().tf_adam) and running.is_dir()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cell", ["lstm_peephole", "lstm_cec"])
def test_saturated_gates_stay_finite_on_the_compiled_kernels(cell, dtype):
    """Pre-activations of ±1e4 (weights blown up by a too-large learning rate) saturate every gate to
    0 or 1, as the eager path and oneDNN have it; the compiled sigmoid once made them NaN (1 / inf
    through -ffast-math's reciprocal estimate)."""
    kernels_for("fused")
    layer = make_recurrent(cell, 3, 20).layers[0].to(dtype)
    with torch.no_grad():
        layer.weight_ih.mul_(1e4)
    x = torch.randn(4, 6, 3, dtype=dtype)
    out, (h, c) = layer(x)
    assert torch.isfinite(out).all() and torch.isfinite(c).all()
    grads = torch.autograd.grad(out.sum() + c.sum(), [layer.weight_hh, layer.bias])
    assert all(torch.isfinite(g).all() for g in grads)
    layer.fused = False
    torch.testing.assert_close(layer(x)[0], out, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", ["lstm", "rnn"])
def test_the_library_cells_on_the_compiled_kernels_are_the_library_cells(cell, layers, monkeypatch):
    """``cell: lstm`` and ``rnn`` forced onto the compiled kernels (``LSTM_PL_LSTM=fused``): nn.LSTM's
    and nn.RNN's parameters and state dict, their outputs, final state and gradients (float64, 1e-12;
    the input's too), with a carried state and a frozen second bias, and the same under ``no_grad``."""
    kernels_for("fused")
    monkeypatch.setenv("LSTM_PL_LSTM", "fused")
    torch.manual_seed(7)
    mine = make_recurrent(cell, 3, 9, num_layers=layers)
    library = torch.nn.LSTM if cell == "lstm" else torch.nn.RNN
    reference = library(3, 9, num_layers=layers, batch_first=True)
    reference.load_state_dict(mine.state_dict())
    assert list(mine.state_dict()) == list(reference.state_dict())
    assert mine.compiled_kernels(torch.randn(5, 13, 3)) is not None
    for rnn in (mine, reference):
        rnn.bias_hh_l0.requires_grad_(False)
    x = torch.randn(5, 13, 3, requires_grad=True)
    state = torch.randn(layers, 5, 9)
    state = (state, torch.randn(layers, 5, 9)) if cell == "lstm" else state
    results = []
    for rnn in (mine, reference):
        out, final = rnn(x, state)
        finals = list(final) if cell == "lstm" else [final]
        loss = out.square().sum() + finals[-1].sum()
        results.append((out, *finals, *torch.autograd.grad(loss, [x, *(p for p in rnn.parameters() if p.requires_grad)])))
        with torch.no_grad():
            results[-1] += (rnn(x, state)[0],)
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_nn_lstm_runs_on_the_kernels_measured_faster_once_per_machine(monkeypatch, tmp_path, caplog):
    """``LSTM_PL_LSTM=auto``: both paths are timed once per shape (interleaved, medians), the faster
    kept where it wins by 5%, remembered on disk for later processes, and the measurement neither
    draws from the random generator nor leaves gradients behind."""
    kernels_for("fused")
    monkeypatch.setenv("LSTM_PL_LSTM", "auto")
    monkeypatch.setattr(fused, "build_directory", lambda: tmp_path)
    timed = []

    def seconds_of(run):
        timed.append(run)
        return 1.0 if len(timed) % 2 else 0.5  # the contenders alternate: fused, then oneDNN
    monkeypatch.setattr(fused, "seconds", seconds_of)
    rnn = make_recurrent("lstm", 2, 8, num_layers=2, dropout=0.5)  # oneDNN's dropout draws while it is timed
    x = torch.randn(4, 6, 2)
    torch.manual_seed(8)
    with caplog.at_level("INFO", logger="lstm_pl.fused"):
        measured = rnn(x)[0]
    assert all(p.grad is None for p in rnn.parameters())
    assert len(timed) == 10 and "runs on onednn (fused 1000.00 ms, onednn 500.00 ms" in caplog.text
    torch.manual_seed(8)
    assert torch.equal(rnn(x)[0], measured)  # the measurement drew nothing from the run's generator
    choices = (tmp_path / "choices.json").read_text()
    assert "batch 4, steps 8, input 2, hidden 8, 2 layers, float64, training" in choices and '"onednn"' in choices
    rnn(x), make_recurrent("lstm", 2, 8, num_layers=2, dropout=0.5)(x)  # remembered: nothing timed again
    assert len(timed) == 10
    with torch.no_grad():  # evaluation is its own shape
        rnn(x)
    assert len(timed) == 20 and "evaluation" in (tmp_path / "choices.json").read_text()


@pytest.mark.parametrize("cell", ["lstm", "rnn"])
def test_the_library_cells_on_the_compiled_kernels_keep_the_library_interface(cell, monkeypatch):
    """On the compiled kernels, ``nn.LSTM``/``nn.RNN``'s interface: the state by its keyword ``hx``,
    their own errors for a misshaped or mistyped state, an empty batch, and (as the kernels' backward
    passes are not differentiable) an error, not a wrong answer, for a second derivative."""
    kernels_for("fused")
    monkeypatch.setenv("LSTM_PL_LSTM", "fused")
    rnn = make_recurrent(cell, 3, 5, num_layers=2)
    library = (torch.nn.LSTM if cell == "lstm" else torch.nn.RNN)(3, 5, num_layers=2, batch_first=True)
    library.load_state_dict(rnn.state_dict())
    x = torch.randn(4, 6, 3)

    def state(layers, batch, dtype=torch.float64):
        h = torch.randn(layers, batch, 5, dtype=dtype)
        return (h, torch.randn(layers, batch, 5, dtype=dtype)) if cell == "lstm" else h
    good = state(2, 4)
    torch.testing.assert_close(rnn(x, hx=good)[0], library(x, good)[0], rtol=1e-10, atol=1e-12)
    for bad in (state(2, 1), state(3, 4), state(2, 4, torch.float32)):
        with pytest.raises(RuntimeError) as expected:
            library(x, bad)
        with pytest.raises(RuntimeError, match=re.escape(str(expected.value)[:40])):
            rnn(x, bad)
    empty = torch.randn(0, 6, 3, requires_grad=True)
    assert rnn(empty)[0].shape == library(empty)[0].shape == (0, 6, 5)
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(rnn(x)[0].sum(), x, create_graph=True)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(grad.sum(), list(rnn.parameters()))
