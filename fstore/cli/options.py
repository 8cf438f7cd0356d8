"""What every ``fstore`` command module shares: the one conversion of user errors, the one
comma-list parameter type, log lines on stderr, and options whose choices come from the library.

Nothing heavy is imported here (no torch, onnxruntime, h5py, scikit-learn): ``fstore --help``
loads this module. The library modules it takes constants from are light at import time.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import click

from fstore.classifiers.svm_options import DEFAULT_C, SvmOptions
from fstore.classifiers.transforms import SCALES
from fstore.errors import FstoreError
from fstore.export.calibration import DEFAULT_CALIBRATION_COUNT
from fstore.runtime.providers import PROVIDERS

# --------------------------------------------------------------------------- user errors


@contextlib.contextmanager
def _one_line_errors() -> Iterator[None]:
    """An ``FstoreError`` becomes a ``click.ClickException``: ``Error: <message>`` on stderr,
    exit status 1, no traceback. Any other exception is a bug and keeps its traceback."""
    try:
        yield
    except FstoreError as exc:
        raise click.ClickException(str(exc)) from None


class FstoreCommand(click.Command):
    """A command whose user errors (``FstoreError``) print as one line, also when the command
    runs on its own, outside the ``fstore`` group."""

    def invoke(self, ctx: click.Context) -> Any:
        with _one_line_errors():
            return super().invoke(ctx)


class FstoreGroup(click.Group):
    """A group whose subcommands (and subgroups, and commands added from other modules) print
    user errors as one line: ``@click.group(cls=FstoreGroup)``; ``@group.command()`` then
    makes an :class:`FstoreCommand` and ``@group.group()`` another ``FstoreGroup``.

    ``lazy`` maps command names to ``"module:attribute"``: such a command's module is imported
    only when the command runs or a help lists it, so that one command does not pay for the
    imports of every other.
    """

    command_class = FstoreCommand
    group_class = type  # subgroups are of this same class

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            import importlib

            module, attribute = self.lazy[cmd_name].split(":")
            self.add_command(getattr(importlib.import_module(module), attribute), cmd_name)
        return self.commands.get(cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        with _one_line_errors():
            return super().invoke(ctx)


# --------------------------------------------------------------------------- comma lists


_METAVARS = {
    "text": "NAME",
    "integer": "INT",
    "integer range": "INT",
    "float": "NUMBER",
    "float range": "NUMBER",
    "choice": "NAME",
}


class CommaList(click.ParamType):
    """A comma-separated list such as ``fc7,pool5`` or ``0.01,0.1,1``, as a tuple.

    Each item is converted by ``item`` (``str``, ``int``, ``float`` or any click type, e.g.
    ``click.IntRange(min=1)`` or ``click.Choice(PRECISIONS)``), so a bad item is reported with
    the option's name. Spaces around items and empty items are ignored. ``length`` demands
    exactly that many items; ``empty_ok`` allows an empty list. A tuple or list (a default
    given as values) is converted item by item too.
    """

    name = "list"

    def __init__(self, item: Any = str, length: int | None = None, empty_ok: bool = False):
        self.item = click.types.convert_type(item)
        self.length = length
        self.empty_ok = empty_ok

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        one = _METAVARS.get(self.item.name, "VALUE")
        return f"{one},..." if self.length is None else ",".join([one] * self.length)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):
        items = value if isinstance(value, (tuple, list)) else split_commas(str(value))
        converted = tuple(self.item.convert(v, param, ctx) for v in items)
        if self.length is not None and len(converted) != self.length:
            self.fail(
                f"needs {self.length} comma-separated values, got {len(converted)}: {value!r}",
                param,
                ctx,
            )
        if not converted and not self.empty_ok:
            self.fail("needs at least one value", param, ctx)
        return converted


def split_commas(text: str) -> list[str]:
    """``" a, b,,c "`` → ``["a", "b", "c"]``."""
    return [part.strip() for part in text.split(",") if part.strip()]


def format_list(values: Sequence[Any]) -> str:
    """The inverse of :class:`CommaList` for a default shown in ``--help``: ``0.01,0.1,1``."""
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


# --------------------------------------------------------------------------- log lines


class _EchoHandler(logging.Handler):
    """Log records as plain lines on the current stderr (``click.echo`` looks it up at each
    line, so a ``CliRunner`` sees them)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            click.echo(self.format(record), err=True)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def use_stderr_logging(quiet: bool = False) -> None:
    """Show the library's log lines (logger ``fstore`` and its children) on stderr while a
    command runs: INFO and above, or only warnings with ``quiet``. A command whose library
    logs progress calls it first, ``use_stderr_logging(quiet)``; calling it again only changes
    the level."""
    logger = logging.getLogger("fstore")
    if not any(isinstance(h, _EchoHandler) for h in logger.handlers):
        handler = _EchoHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)


def echo_err(message: str) -> None:
    click.echo(message, err=True)


def echo_json(data: Any) -> None:
    """``--json``: ``data`` (a dataclass, or what ``json`` takes) as indented JSON."""
    import json
    from dataclasses import asdict, is_dataclass

    click.echo(json.dumps(asdict(data) if is_dataclass(data) else data, indent=2))


# --------------------------------------------------------------------------- options

weights_option = click.option(
    "--weights",
    default="imagenet",
    show_default=True,
    help="'imagenet' (torchvision download), 'random' (with --seed), "
    "or PATH to a VGG16 state_dict.",
)
seed_option = click.option(
    "--seed",
    default=0,
    show_default=True,
    type=int,
    help="Random seed: of --weights random, and of folds and random splits.",
)


def provider_choice(default: str = "auto", help: str | None = None) -> Callable:
    """``--provider`` with the runtime's choices (cpu, cuda, auto)."""
    return click.option(
        "--provider",
        type=click.Choice(PROVIDERS),
        default=default,
        show_default=True,
        help=help or "ONNX Runtime execution provider; auto uses CUDA when available.",
    )


provider_option = provider_choice()


def scale_option(
    default: str,
    help: str = "Feature scaling before PCA and the classifier (power: signed square root, "
    "then l2).",
):
    """``--scale`` with the classifiers' choices (standard, l2, none, power)."""
    return click.option(
        "--scale", type=click.Choice(SCALES), default=default, show_default=True, help=help
    )


c_grid_option = click.option(
    "--C",
    "c_grid",
    type=CommaList(float),
    default=format_list(DEFAULT_C),
    show_default=True,
    help="Comma-separated C values searched.",
)
max_iter_option = click.option(
    "--max-iter",
    default=SvmOptions.max_iter,
    show_default=True,
    type=click.IntRange(min=1),
    help="The primal (LinearSVC) solver's iteration limit (fits that reach it are counted).",
)
cv_option = click.option(
    "--cv", default=5, show_default=True, type=int, help="Stratified CV folds."
)


def hidden_option(default: str = "0", help: str = "0 for a linear head, or hidden layer sizes "
                  "such as 512 or 1024,256."):  # fmt: skip
    """``--hidden``: the torch head's hidden layer sizes, ``()`` for a linear head."""
    return click.option(
        "--hidden",
        type=CommaList(click.IntRange(min=0)),
        default=default,
        show_default=True,
        callback=lambda ctx, param, sizes: () if sizes == (0,) else sizes,
        help=help,
    )


input_size_option = click.option(
    "--input-size",
    default=224,
    show_default=True,
    type=int,
    help="Input side in pixels (the centre crop); resize is 256/224 of it.",
)
store_option = click.option(
    "--store",
    type=click.Path(path_type=Path),
    default=None,
    help="Store file. Default: $FSTORE_STORE or ./fstore.h5.",
)


def option_group(*options: Callable) -> Callable:
    """One decorator applying ``options`` (click options or other such groups) as if they were
    stacked in this order above a command, which is their order in ``--help``."""

    def decorate(command):
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def precision_options(calibration_default: str):
    """``--calibration``, ``--calibration-count`` and ``--fidelity-images`` (export and bench)."""
    folder = click.Path(path_type=Path, exists=True, file_okay=False)
    return option_group(
        click.option("--calibration", type=folder, default=None,
                     help=f"Images to calibrate int8 on (default: {calibration_default})."),
        click.option("--calibration-count", default=DEFAULT_CALIBRATION_COUNT, show_default=True,
                     type=click.IntRange(min=1), help="Calibration images drawn."),
        click.option("--fidelity-images", type=folder, default=None,
                     help="Labelled folder: report the SVM test accuracy change vs fp32."),
    )  # fmt: skip


def weights_source(weights: str, seed: int):
    """Parse ``--weights``/``--seed`` into a ``WeightsSource``."""
    from fstore.runtime.weights_source import WeightsSource

    return WeightsSource.parse(weights, seed)


def preprocessing_for(input_size: int):
    """The standard preprocessing scaled to ``input_size`` (224 → resize 256, crop 224)."""
    from fstore.images.preprocess import for_options

    return for_options(input_size)


def preprocessing_options(command: Callable) -> Callable:
    """``--size``, ``--resize``, ``--mean`` and ``--std``, handed to the command as one
    ``preprocessing`` argument: the ``PreprocessingFlags`` given, or ``None`` when none of them
    is (the model's own preprocessing then applies). Flags, not a ``Preprocessing``, so that a
    model's own preprocessing is checked against what the user typed, not against defaults."""

    @functools.wraps(command)
    def collect(*args, size, resize, mean, std, **kwargs):
        from fstore.images.preprocess import PreprocessingFlags

        flags = PreprocessingFlags(size, resize, mean, std)
        return command(*args, preprocessing=flags if flags.given else None, **kwargs)

    return option_group(
        click.option("--size", type=int, default=None,
                     help="Input size (crop) of a --model without fstore metadata."),
        click.option("--resize", type=int, default=None,
                     help="Short side before the crop (default 256/224 of --size)."),
        click.option("--mean", type=CommaList(float, length=3), default=None,
                     help="Normalisation mean, e.g. 0.485,0.456,0.406."),
        click.option("--std", type=CommaList(float, length=3), default=None,
                     help="Normalisation std, e.g. 0.229,0.224,0.225."),
    )(collect)  # fmt: skip
