"""``sea sweep``: data-efficiency curves, held-out TruthfulQA against the number N of
demonstrations, over independent draws of them.

Protocol. From a pool of P demonstrations, draw ``k = 0 .. draws-1`` takes
``N_max = max(N <= P)`` of them at random without replacement (:func:`draw_indices`,
seeded by the sweep's seed and ``k``), captures their activations once at every layer and
fits every N from the first N rows (the N are nested within a draw; the draws are
independent samples of the pool). For each N and method, every setting of the method's
grid (:mod:`~.methods`) is tuned on TruthfulQA fold 1 and the best reported on fold 2
(the fold protocol of ``sea compare``, :func:`~.compare.tune_on_folds`; the reverse too
with ``both_directions``). A setting the fit refuses at that N (too few demonstrations
for its ratio: :class:`~spectral_edit.core.statistics.FitError`) is left out of that N's
choice and recorded under ``unfit``; the fits' warnings are counted (``fit_warnings``;
their text in ``fit-check.json``), not shown. The
unedited model is scored once under the same protocol. The curves give, per N, the mean,
the sample standard deviation (the error bars), the minimum and maximum over the draws.

Persistence is the one store's (:mod:`~.store`): ``draws/draw-<k>/activations.safetensors``,
and per N and method ``draws/draw-<k>/n<N>/<method>/`` with ``fit-check.json`` and one
record per setting and fold; ``units/none/`` for the unedited model. A killed run
resumes where it stopped; the run holds the folder. Output: ``sweep.json`` and
``sweep.png`` (:mod:`~.sweep_plot`).
"""

from __future__ import annotations

import dataclasses
import random
import statistics
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn
from transformers import PreTrainedTokenizerBase

from ..core.options import check_count
from ..core.statistics import FitError
from ..data.truthfulqa import MCQuestion
from ..demos.activations import DemoActivations
from ..demos.format import Demonstration
from ..demos.prompts import PLAIN, PromptFormat
from ..util.identity import shareable_name
from ..util.report import write_json
from .compare import MethodRun, SharedActivations, tune_on_folds
from .compare_results import METRICS, CompareOptions, held_out_metrics
from .folds import DIRECTIONS, Direction
from .methods import METHODS, FitContext, MethodSpec
from .settings import setting_id
from .store import Store, content_key, model_key

SIZES = (5, 10, 25, 50, 100, 250, 500)
"""The default demonstration counts N (those above the pool's size are dropped)."""
ERROR_BARS = "mean ± sample standard deviation over the draws (min and max also given)"
Echo = Callable[[str], None]


def parse_sizes(text: str) -> tuple[int, ...]:
    """``"5,10,25"`` → ``(5, 10, 25)``: distinct counts ``>= 1``, sorted; ``ValueError``
    naming ``--sizes`` otherwise."""
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--sizes: not a comma list of counts: {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise ValueError(f"--sizes: give counts >= 1, such as 5,10,25; got {text!r}")
    return tuple(sorted(set(sizes)))


@dataclass(frozen=True)
class SweepOptions:
    """What a sweep is run with: the sizes N, the number of draws, the methods (each
    fitted from captured activations), the neutral answers, the batch size, the seed of
    the draws and whether both fold directions are run."""

    sizes: tuple[int, ...] = SIZES
    draws: int = 3
    methods: tuple[str, ...] = ("sea",)
    neutral: str = "generate"
    batch_size: int = 16
    seed: int = 0
    both_directions: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "sizes", tuple(sorted({int(n) for n in self.sizes})))
        object.__setattr__(self, "methods", tuple(self.methods))
        if not self.sizes or self.sizes[0] < 1:
            raise ValueError(f"sizes must be counts >= 1, got {self.sizes}")
        check_count("draws", self.draws)
        check_count("batch_size", self.batch_size)
        if not self.methods or len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods must be distinct and at least one, got {self.methods}")

    def compare_options(self) -> CompareOptions:
        """The options the fold protocol's units are scored with."""
        return CompareOptions(
            methods=self.methods,
            neutral=self.neutral,
            batch_size=self.batch_size,
            seed=self.seed,
            both_directions=self.both_directions,
        )


def draw_indices(pool: int, size: int, seed: int, draw: int) -> list[int]:
    """Draw ``draw``'s ``size`` distinct pool indices (``0 <= i < pool``), in the order
    its prefixes take them: a shuffle seeded by ``(seed, draw)`` alone, so a draw is the
    same in every run and independent of the others."""
    return random.Random(seed * 1_000_003 + draw).sample(range(pool), size)


def prefix(activations: DemoActivations, n: int) -> DemoActivations:
    """The first ``n`` rows of ``activations`` (views, no copy)."""
    return DemoActivations(
        activations.neutral[:n],
        activations.positive[:n],
        activations.negative[:n],
        activations.layers,
    )


def check_methods(names: Sequence[str], registry: Mapping[str, MethodSpec[Any]]) -> None:
    """``ValueError`` unless every name is a method of ``registry`` fitted from the
    captured activations (the sweep fits every N from them; ``none`` is always scored)."""
    usable = [n for n, spec in registry.items() if spec.uses_activations]
    bad = [n for n in names if n not in registry or not registry[n].uses_activations]
    if bad:
        raise ValueError(
            f"sea sweep fits every N from prefixes of captured activations, so it runs the "
            f"methods fitted from them ({', '.join(usable)}); not {', '.join(bad)}"
        )


def run_sweep(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    pool: Sequence[Demonstration],
    folds: Mapping[int, Sequence[MCQuestion]],
    options: SweepOptions,
    out: str | Path,
    *,
    model_name: str = "",
    registry: Mapping[str, MethodSpec[Any]] = METHODS,
    echo: Echo = print,
    progress: bool = False,
    prompt_format: PromptFormat = PLAIN,
) -> dict[str, Any]:
    """Run the sweep (module docstring) into ``out``; write ``sweep.json`` and ``sweep.png``
    (the plot needs the ``plots`` extra: without it, ``echo`` says so and the JSON is
    still written). Returns the JSON's content.

    Raises:
        ValueError: a method not fitted from activations, an empty fold, or a pool
            smaller than every size (before anything runs).
        FolderInUse: another run holds ``out``.
    """
    check_methods(options.methods, registry)
    if set(folds) != {1, 2} or not all(folds.values()):
        raise ValueError("the sweep needs TruthfulQA questions in both fold 1 and fold 2")
    sizes = [n for n in options.sizes if n <= len(pool)]
    if not sizes:
        raise ValueError(
            f"the pool has {len(pool)} demonstrations, fewer than every size "
            f"{list(options.sizes)}; give more demonstrations or smaller --sizes"
        )
    with Store(Path(out)).exclusive("sea sweep"):
        report = _Sweep(
            model, tokenizer, pool, folds, options, Path(out), registry, echo, progress
        ).run(sizes, model_name, prompt_format)
    write_json(Path(out) / "sweep.json", report)
    _plot(report, Path(out) / "sweep.png", echo)
    return report


@dataclass
class _Sweep:
    """One sweep's run in the folder ``out`` (held by the caller)."""

    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    pool: Sequence[Demonstration]
    folds: Mapping[int, Sequence[MCQuestion]]
    options: SweepOptions
    out: Path
    registry: Mapping[str, MethodSpec[Any]]
    echo: Echo
    progress: bool

    def context(self, demos: Sequence[Demonstration], prompt_format: PromptFormat) -> FitContext:
        return FitContext(
            self.model,
            self.tokenizer,
            demos,
            neutral=self.options.neutral,
            batch_size=min(self.options.batch_size, 8),
            seed=self.options.seed,
            progress=self.progress,
            prompt_format=prompt_format,
        )

    def run(self, sizes: list[int], model_name: str, prompt_format: PromptFormat) -> dict[str, Any]:
        o = self.options
        base = {
            "model": model_key(self.model, model_name),
            "neutral": o.neutral,
            "batch_size": o.batch_size,
            **prompt_format.key(),
        }
        none = self.registry.get("none", METHODS["none"])
        self.echo("── none: the unedited model")
        unedited, _ = self.point(
            none, self.context([], prompt_format), self.out / "units" / "none", base
        )
        points: dict[str, list[dict[str, Any]]] = {name: [] for name in o.methods}
        draws = []
        for draw in range(o.draws):
            index = draw_indices(len(self.pool), sizes[-1], o.seed, draw)
            demos = [self.pool[i] for i in index]
            folder = self.out / "draws" / f"draw-{draw}"
            key = {**base, "demos": content_key(demos)}
            ctx = self.context(demos, prompt_format)
            shared = SharedActivations(Store(folder), {**key, "capture": "all-layers"})
            shared.load_into(ctx)
            self.echo(f"── draw {draw}: {len(demos)} demonstrations of {len(self.pool)}")
            captured = ctx.activations()
            shared.keep(ctx)
            draws.append({"draw": draw, "indices": index, "capture_seconds": ctx.capture_seconds})
            for n in sizes:
                at_n = dataclasses.replace(ctx, demos=demos[:n], captured=prefix(captured, n))
                for name in o.methods:
                    spec = self.registry[name]
                    self.echo(f"── draw {draw}, N = {n}: {name}")
                    unit_key = {**key, "n": n, "method": name, "description": spec.description}
                    result, extra = self.point(spec, at_n, folder / f"n{n}" / name, unit_key)
                    points[name].append({"draw": draw, "n": n, **result, **extra})
        return {
            "model": shareable_name(model_name) if model_name else "",
            "options": dataclasses.asdict(o),
            "pool": len(self.pool),
            "sizes": sizes,
            "sizes_dropped": [n for n in o.sizes if n not in sizes],
            "questions": {f"fold{f}": n for f, n in self.sizes.items()},
            "directions": [d.label for d in self._directions()],
            "error_bars": ERROR_BARS,
            "unedited": unedited["held_out"],
            "methods": {
                name: {
                    "description": self.registry[name].description,
                    "curve": curve(points[name], sizes),
                    "points": points[name],
                }
                for name in o.methods
            },
            "draws": draws,
        }

    @property
    def scoring(self) -> CompareOptions:
        """The options the units are scored with."""
        return self.options.compare_options()

    @property
    def sizes(self) -> dict[int, int]:
        """Questions per fold."""
        return {f: len(q) for f, q in self.folds.items()}

    def _directions(self) -> list[Direction]:
        return list(DIRECTIONS if self.options.both_directions else DIRECTIONS[:1])

    def point(
        self, spec: MethodSpec[Any], ctx: FitContext, folder: Path, key: Mapping[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """One method at one N of one draw under the fold protocol: ``(result, fit
        check)``; ``result`` has the ``selections``, the ``held_out`` MC1/MC2/MC3 and the
        ``tuning`` scores, or an ``error`` where no setting of the grid can be fitted."""
        run = MethodRun(spec, ctx, Store(folder, self.echo), key)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # recorded by the fit check
            check = run.store.run("fit-check", key, lambda: fit_check(run))
            fitted = [s for s in spec.grid if check["errors"].get(setting_id(s)) is None]
            extra = {
                "unfit": {sid: e for sid, e in check["errors"].items() if e is not None},
                "fit_warnings": {sid: len(found) for sid, found in check["warnings"].items()},
            }
            if not fitted:
                return {"error": "no setting of the grid can be fitted at this N"}, extra
            selections = tune_on_folds(run, self.folds, self.scoring, self.progress, fitted)
        chosen = {d: setting_id(s) for d, s in selections.items()}
        result = {
            "selections": {d.label: sid for d, sid in chosen.items()},
            "held_out": held_out_metrics(run.units, chosen, self.sizes),
            "tuning": {
                sid: {f"fold{f}": {m: u.summary[m] for m in METRICS} for f, u in by_fold.items()}
                for sid, by_fold in run.units.items()
            },
        }
        return result, extra


def fit_check(run: MethodRun) -> dict[str, Any]:
    """Configure (fit) every setting of ``run``'s grid once: ``errors`` (setting id → the
    fit's refusal, or ``None``) and ``warnings`` (setting id → the fit's warnings). The
    fitted interventions stay in ``run`` for scoring; ``seconds``: the time all took."""
    started = time.perf_counter()
    errors: dict[str, str | None] = {}
    found: dict[str, list[str]] = {}
    for setting in run.spec.grid:
        sid = setting_id(setting)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                run.intervention(setting)
                errors[sid] = None
            except FitError as error:
                errors[sid] = f"FitError: {error}"
        messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
        if messages:
            found[sid] = messages
    return {"errors": errors, "warnings": found, "seconds": time.perf_counter() - started}


def curve(points: Sequence[Mapping[str, Any]], sizes: Sequence[int]) -> list[dict[str, Any]]:
    """Per N, over the draws that gave a result: their count and, per metric, the
    ``mean``, sample ``std`` (``None`` with one draw), ``min``, ``max`` and ``values``
    (draw order); ``failed``: the draws without a result."""
    rows = []
    for n in sizes:
        at_n = [p for p in points if p["n"] == n]
        done = [p for p in at_n if "held_out" in p]
        row: dict[str, Any] = {
            "n": n,
            "draws": len(done),
            "failed": [p["draw"] for p in at_n if "held_out" not in p],
        }
        for m in METRICS:
            values = [float(p["held_out"][m]) for p in done]
            row[m] = (
                {
                    "mean": statistics.fmean(values),
                    "std": statistics.stdev(values) if len(values) > 1 else None,
                    "min": min(values),
                    "max": max(values),
                    "values": values,
                }
                if values
                else None
            )
        rows.append(row)
    return rows


def _plot(report: Mapping[str, Any], path: Path, echo: Echo) -> None:
    """The curves' PNG; a missing ``plots`` extra is told, not raised (the JSON stands)."""
    from ..util.extras import MissingExtraError
    from .sweep_plot import plot_sweep

    try:
        plot_sweep(report, path)
    except MissingExtraError as error:
        echo(f"no plot: {error}")
