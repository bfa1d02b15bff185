"""The report's figures: no text leaves the figure, text levels are points, untried cells are blank.

Reports are built from fixture sweeps of one, two and three factors and of an Optuna study
(tests/fixtures_report.py: fake run directories, no training). Every figure the report draws
is kept as it is saved and measured with matplotlib's own renderer.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fixtures_report import curve, write_2x2, write_optuna, write_run, write_sweep_json, write_three, write_variants

from ftsweep.report import build_report, plots
from ftsweep.report.effects import t975

LONG_SYSTEM = "You are a careful assistant who answers every question in one short, plain sentence"


def write_long_labels(sweep_dir: Path) -> Path:
    """One factor whose levels are long sentences, under a long name."""
    key = "data.columns.system_prompt_for_every_conversation_turn"
    write_sweep_json(sweep_dir, "long", f"python -m ftsweep -m {key}=...", {key: ["short", LONG_SYSTEM]})
    write_run(sweep_dir, [f"{key}=short"], name="a", eval_loss=3.1)
    write_run(sweep_dir, [f"{key}='{LONG_SYSTEM}'"], name="b", eval_loss=3.3)
    return sweep_dir


def write_chinese_paths(sweep_dir: Path) -> Path:
    """One factor whose levels are Chinese file names, each run 10 steps long: one logged train loss."""
    write_sweep_json(sweep_dir, "zh", 'python -m ftsweep -m \'data.path="古诗.json","宋词.json"\'',
                     {"data.path": ["古诗.json", "宋词.json"]})
    for name, loss in (("古诗", 3.1), ("宋词", 3.3)):
        write_run(sweep_dir, [f'data.path="{name}.json"'], name=f"data.path={name}.json", eval_loss=loss,
                  metrics=curve(loss, steps=10))
    return sweep_dir


def write_diverged(sweep_dir: Path) -> Path:
    """Learning rates 3e-4, 0.5 and 50 as the built-in data ran them: 50 went to nan at step 5."""
    write_sweep_json(sweep_dir, "lr", "python -m ftsweep -m optim.lr=3e-4,0.5,50", {"optim.lr": ["3e-4", "0.5", "50"]})
    write_run(sweep_dir, ["optim.lr=3e-4"], eval_loss=5.11)
    write_run(sweep_dir, ["optim.lr=0.5"], eval_loss=4.99)
    write_run(sweep_dir, ["optim.lr=50"], status="failed", eval_loss=None)
    return sweep_dir


SWEEPS = {"one": write_variants, "two": write_2x2, "three": write_three, "optuna": write_optuna,
          "long": write_long_labels, "zh": write_chinese_paths, "diverged": write_diverged}


@pytest.fixture(scope="module")
def figures(tmp_path_factory) -> dict[str, dict[str, object]]:
    """sweep name -> {png file name -> the Figure as saved}."""
    kept: dict[str, dict[str, object]] = {}
    save = plots._save
    current = {}

    def keep(fig, path):
        save(fig, path)
        current[Path(path).name] = fig

    plots._save = keep
    try:
        for name, write in SWEEPS.items():
            current = {}
            build_report([write(tmp_path_factory.mktemp(name))])
            kept[name] = current
    finally:
        plots._save = save
    return kept


def test_each_sweep_draws_the_figures_it_should(figures):
    assert set(figures["one"]) == {"effects.png", "loss_curves.png"}  # one factor: nothing to cross
    assert set(figures["two"]) == {"effects.png", "interactions.png", "heatmap.png", "loss_curves.png"}
    assert set(figures["three"]) == {"effects.png", "interactions.png", "loss_curves.png"}
    assert set(figures["optuna"]) == {"effects.png", "interactions.png", "heatmap.png", "loss_curves.png"}


def drawn_texts(fig) -> list:
    """Every visible, non-empty text the figure draws. Axes keep spare Tick objects beyond their
    limits that are never drawn: their labels count only when the tick lies within the view."""
    from matplotlib.text import Text

    ticks, drawn = set(), set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            pad = (high - low) * 1e-9
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                ticks |= {id(tick.label1), id(tick.label2)}
                if low - pad <= tick.get_loc() <= high + pad:
                    drawn |= {id(tick.label1), id(tick.label2)}
    return [t for t in fig.findobj(Text)
            if t.get_visible() and t.get_text().strip() and (id(t) not in ticks or id(t) in drawn)]


@pytest.mark.parametrize("sweep", list(SWEEPS))
def test_no_text_leaves_its_figure(figures, sweep):
    for name, fig in figures[sweep].items():
        renderer = fig.canvas.get_renderer()
        box = fig.bbox
        texts = drawn_texts(fig)
        assert len(texts) > 5, name
        for text in texts:
            extent = text.get_window_extent(renderer)
            inside = (extent.x0 >= box.x0 - 1 and extent.y0 >= box.y0 - 1
                      and extent.x1 <= box.x1 + 1 and extent.y1 <= box.y1 + 1)
            assert inside, f"{sweep}/{name}: {text.get_text()!r} at {extent.bounds} leaves the figure {box.bounds}"


def _data_lines(ax):
    """The lines that draw level means (error bars and grid lines aside)."""
    return [line for line in ax.get_lines() if line.get_marker() not in (None, "None", "", "_", "|")]


def test_text_levels_are_points_and_numeric_levels_lines(figures):
    (variants,) = figures["one"]["effects.png"].axes
    lines = _data_lines(variants)
    assert len(lines) == 1 and lines[0].get_linestyle() == "None"  # lora variants: no order to draw
    assert len(lines[0].get_xdata()) == 4
    r_axis, lr_axis = figures["two"]["effects.png"].axes[:2]
    assert all(line.get_linestyle() == "-" for line in _data_lines(r_axis) + _data_lines(lr_axis))
    targets = figures["three"]["effects.png"].axes[2]
    assert [line.get_linestyle() for line in _data_lines(targets)] == ["None"]


def test_interactions_draw_one_line_per_level_of_the_other_factor(figures):
    fig = figures["two"]["interactions.png"]
    by_lr, by_r = [ax for ax in fig.axes if ax.get_legend() is not None]
    assert [t.get_text() for t in by_lr.get_legend().get_texts()] == ["1e-4", "3e-4"]
    assert [t.get_text() for t in by_r.get_legend().get_texts()] == ["8", "16"]
    # lr=3e-4 (second line) is lower at both ranks, as GRID_2X2 has it: (3.35, 3.20) vs (3.65, 3.50).
    low, high = _data_lines(by_lr)[1], _data_lines(by_lr)[0]
    assert list(low.get_ydata()) == pytest.approx([3.35, 3.20])
    assert list(high.get_ydata()) == pytest.approx([3.65, 3.50])


def test_a_level_without_an_ok_run_is_marked_on_its_axis(figures):
    """lr 50 diverged: its tick stood bare beside 3e-4 and 0.5, as if nothing had been tried there."""
    (ax,) = figures["diverged"]["effects.png"].axes
    (means,) = [line for line in _data_lines(ax) if line.get_marker() == "o"]
    assert list(means.get_ydata()) == pytest.approx([5.11, 4.99])
    (cross,) = [line for line in ax.get_lines() if line.get_marker() == "x"]
    assert list(cross.get_xdata()) == pytest.approx([50])
    assert [t.get_text() for t in ax.texts] == ["no ok run"] and ax.texts[0].xy[0] == pytest.approx(50)
    (two,) = [ax for ax in figures["two"]["effects.png"].axes if ax.get_title().startswith("optim.lr")]
    assert not [line for line in two.get_lines() if line.get_marker() == "x"]  # every level ran ok


def test_untried_search_cells_are_blank_and_failed_ones_say_so(figures):
    fig = figures["optuna"]["heatmap.png"]
    ax = fig.axes[0]
    cells = [t.get_text() for t in ax.texts]
    # Six trials on a 6 x 4 grid: five ok cells with numbers, one failed, eighteen never tried.
    assert sum(text.startswith("3.") for text in cells) == 5
    assert cells.count("no ok run") == 1
    assert len(cells) == 6
    assert "blank: no run tried" in ax.get_title().replace("\n", " ")


def test_search_interactions_keep_only_views_with_lines(figures):
    # Every trial has its own learning rate: "one line per optim.lr" would be lines of one point.
    fig = figures["optuna"]["interactions.png"]
    titles = [ax.get_title().replace("\n", " ") for ax in fig.axes if ax.get_visible()]
    assert titles == ["optim.lr, one line per lora.r"]


def test_t_quantiles():
    assert t975(1) == 12.706 and t975(8) == 2.306 and t975(30) == 2.042
    scipy_stats = pytest.importorskip("scipy.stats")
    for df in (31, 40, 60, 120, 1000):
        assert t975(df) == pytest.approx(scipy_stats.t.ppf(0.975, df), abs=2e-4)


def test_a_train_curve_of_one_logged_step_is_drawn_as_a_point(figures):
    # A line through one point draws nothing: a 10-step run (train.logging_steps=10) left its train panels empty.
    fig = figures["zh"]["loss_curves.png"]
    train_panels = [ax for ax in fig.axes if ax.get_title().startswith("train loss")]
    assert len(train_panels) == 2
    for ax in train_panels:
        assert [(len(line.get_xdata()), line.get_marker()) for line in ax.get_lines()] == [(1, "o"), (1, "o")]


def _cjk_font_installed() -> bool:
    from matplotlib import font_manager

    return any("CJK" in Path(f).name or "wqy" in f.lower() for f in font_manager.findSystemFonts())


@pytest.mark.skipif(not _cjk_font_installed(), reason="no CJK font on this machine (Debian: fonts-noto-cjk)")
def test_chinese_values_are_drawn_with_a_font_that_has_them(figures):
    (axis,) = figures["zh"]["effects.png"].axes
    ticks = [t for t in axis.get_xticklabels() if t.get_text()]
    assert [t.get_text() for t in ticks] == ["古诗.json", "宋词.json"]
    assert all(set(t.get_fontfamily()) & set(plots.FALLBACK_FONTS) for t in ticks)


def test_without_a_font_for_them_one_line_names_the_characters_and_the_fix(tmp_path, monkeypatch, caplog):
    import warnings

    monkeypatch.setattr(plots, "FALLBACK_FONTS", ())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_report([write_chinese_paths(tmp_path / "zh")])
    (line,) = [r.getMessage() for r in caplog.records if "no installed font" in r.getMessage()]
    assert line.startswith("report: no installed font draws 古 宋 词 诗, so the plots show empty boxes for them")
    assert "fonts-noto-cjk" in line
    assert not [w for w in caught if "missing from font" in str(w.message)]  # not matplotlib's warning per glyph


def test_a_figure_this_build_does_not_draw_does_not_linger_from_an_older_report(tmp_path):
    sweep = write_variants(tmp_path / "one")
    (sweep / "plots").mkdir()
    for stale in ("interactions.png", "heatmap.png", "data_size.png"):  # drawn by an older, wider report
        (sweep / "plots" / stale).write_bytes(b"old")
    build_report([sweep])
    assert sorted(p.name for p in (sweep / "plots").iterdir()) == ["effects.png", "loss_curves.png"]
