"""The ``fstore`` command line: each command parses options, calls one library function, prints.

One module per command group (:mod:`.export`, :mod:`.build`, :mod:`.store`, :mod:`.classifiers`,
:mod:`.inspection`, :mod:`.quality`, :mod:`.report`, :mod:`.bench`), the options they share in
:mod:`.options`, and here the group that holds them, which imports a command's module only when
that command runs (:data:`COMMANDS`). Heavy libraries (torch, onnxruntime, h5py, scikit-learn)
are imported inside the commands, so ``fstore --help`` is instant. Errors a user can fix
(``FstoreError``) become one line on stderr and exit status 1; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import click

from fstore import __version__
from fstore.cli.options import FstoreGroup
from fstore.export.layers import LAYER_NAMES

#: Each command and where it lives, in the order of the README's command table. A command's
#: module is imported when it runs, so ``fstore build`` does not import the benchmarks.
COMMANDS = {
    "export": "fstore.cli.export:export",
    "inspect": "fstore.cli.export:inspect",
    "build": "fstore.cli.build:build",
    "info": "fstore.cli.store:info",
    "verify": "fstore.cli.store:verify",
    "compact": "fstore.cli.store:compact",
    "train": "fstore.cli.classifiers:train",
    "study": "fstore.cli.classifiers:study",
    "zeroshot": "fstore.cli.classifiers:zeroshot",
    "classify": "fstore.cli.classifiers:classify",
    "predict": "fstore.cli.inspection:predict",
    "activations": "fstore.cli.inspection:activations",
    "neighbors": "fstore.cli.quality:neighbors",
    "index": "fstore.cli.quality:index",
    "duplicates": "fstore.cli.quality:duplicates",
    "audit": "fstore.cli.quality:audit",
    "map": "fstore.cli.quality:map_",
    "report": "fstore.cli.report:report",
    "bench": "fstore.cli.bench:bench",
}


@click.group(
    cls=FstoreGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(__version__, prog_name="fstore")
def cli() -> None:
    """fstore: features of VGG16, a torchvision or timm network or any ONNX image model, through
    ONNX Runtime into an HDF5 store; classifiers, neighbours and data quality from them.

    VGG16's layers: {layers}. Another network's: fstore inspect --arch NAME.

    Examples:

    \b
      fstore build ../shared/data/scene15 --layer fc7 --weights random --seed 0
      fstore info
      fstore train svm --C 0.1,1,10
      fstore bench --synthetic 8 --batch-sizes 4 --weights random
    """


# the layer table's names, from its one home, before the examples that end every --help
cli.help = (cli.help or "").format(layers=", ".join(LAYER_NAMES))


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="fstore")
