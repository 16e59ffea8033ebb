import os
from pathlib import Path

import numpy as np
import pytest
import torch

from lstm_pl import runtime

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The tests' models are tiny: one thread is as fast, and it keeps oneDNN's OpenMP threads from
# slowing down tenfold when another process shares the cores.
torch.set_num_threads(1)
runtime.start()  # the process as every entry point sets it up (denormals, allocator, quiet console)

pytest_plugins = ["pytester"]  # tests/test_suite.py runs the suite's own rules on small suites
ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"


def write_corpus(path: Path, words: int = 60_000, seed: int = 12) -> Path:
    """A play-shaped text of ``words`` pseudo-words, the same bytes on every machine and numpy
    version (numpy's frozen ``RandomState``): speaker lines, verse lines of 3-11 Zipf-distributed
    words (about 1,500 of them seen more than 5 times), punctuation, apostrophes and hyphens, so
    that the tokenizer, the vocabulary cut and the splits all have work to do."""
    rng = np.random.RandomState(seed)
    syllables = [c + v for c in "bcdfghklmnprstvw" for v in ("a", "e", "i", "o", "u", "ou", "ea")]
    lexicon = sorted({"".join(rng.choice(syllables, size=rng.randint(1, 4))) for _ in range(4000)})
    rng.shuffle(lexicon)
    zipf = 1.0 / np.arange(1, len(lexicon) + 1)
    zipf /= zipf.sum()
    speakers = [name.upper() for name in lexicon[100:120]]
    drawn = iter(rng.choice(len(lexicon), size=words + 100, p=zipf))  # at once: a draw per line is slow
    lines, count = [], 0
    while count < words:
        lines.append(f"\n{speakers[rng.randint(len(speakers))]}:")
        for _ in range(rng.randint(1, 5)):
            line = [lexicon[next(drawn)] for _ in range(rng.randint(3, 12))]
            line[0] = line[0].capitalize()
            if rng.rand() < 0.1:
                line[rng.randint(len(line))] += "'s"
            if rng.rand() < 0.05:
                line.insert(rng.randint(len(line)), "o'er-" + line[-1])
            lines.append(" ".join(line) + ",.;!?:"[rng.randint(6)])
            count += len(line)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def config_path():
    """Path of a shipped config by task name."""
    return lambda name: str(ROOT / "configs" / f"{name}.yaml")


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """A generated text for the tests that need *a* corpus, not Shakespeare's (``write_corpus``)."""
    return write_corpus(tmp_path_factory.mktemp("corpus") / "play.txt")


@pytest.fixture(scope="session")
def corpus_args(corpus) -> list[str]:
    """The overrides that point a Shakespeare config at ``corpus`` (no download, no checksum)."""
    return [f"--data.init_args.path={corpus}", "--data.init_args.url=null", "--data.init_args.sha256=null"]


@pytest.fixture(scope="session")
def shakespeare() -> Path:
    """The shared Shakespeare text, for the few tests that check its own numbers (vocabulary,
    split sizes, checksum). Skips where the checkout has no ../shared, unless LSTM_PL_NO_SKIPS=1
    (set by CI), where its absence fails the test."""
    if not SHAKESPEARE.is_file():
        reason = f"needs the real Shakespeare text, {SHAKESPEARE}, which this checkout has not"
        if os.environ.get("LSTM_PL_NO_SKIPS") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return SHAKESPEARE


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Under ``--dist loadgroup`` (make test) every test marked ``xdist_group`` must carry its group
    in its node id, as pytest-xdist tags it: otherwise the group's tests spread over the workers
    and each sets up the group's shared fixture again (pytest 9.2 with pytest-xdist 3.8 did)."""
    if getattr(config.option, "loadgroup", False):  # set in the workers by pytest-xdist
        untagged = [item.nodeid for item in items if item.get_closest_marker("xdist_group") and "@" not in item.nodeid]
        if untagged:
            raise pytest.UsageError(f"--dist loadgroup did not group {untagged[0]} (and {len(untagged) - 1} more): "
                                    "pytest and pytest-xdist do not work together (see pyproject.toml's test extra)")


def pytest_sessionfinish(session, exitstatus):
    """With LSTM_PL_NO_SKIPS=1 (CI), a skipped test fails the run: nothing is left unchecked quietly."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if os.environ.get("LSTM_PL_NO_SKIPS") == "1" and skipped:
        reporter.ensure_newline()
        reporter.write_line(f"LSTM_PL_NO_SKIPS=1: {len(skipped)} test(s) skipped; CI runs every test", red=True)
        session.exitstatus = exitstatus or 1
