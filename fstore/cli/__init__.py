"""The ``fstore`` command line: each command parses options, calls one library function, prints.

One module per command group (:mod:`.export`, :mod:`.build`, :mod:`.store`, :mod:`.classifiers`,
:mod:`.inspection`, :mod:`.report`, :mod:`.bench`), the options they share in :mod:`.options`,
and here the group that holds them. Heavy libraries (torch, onnxruntime, h5py, scikit-learn)
are imported inside the commands, so ``fstore --help`` is instant. Errors a user can fix
(``FstoreError``) become one line on stderr and exit status 1; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import click

from fstore import __version__
from fstore.cli.bench import bench
from fstore.cli.build import build
from fstore.cli.classifiers import classify, study, train, zeroshot
from fstore.cli.export import export, inspect
from fstore.cli.inspection import activations, predict
from fstore.cli.options import FstoreGroup
from fstore.cli.quality import audit, duplicates, index, map_, neighbors
from fstore.cli.report import report
from fstore.cli.store import compact, info, verify
from fstore.export.layers import LAYER_NAMES


@click.group(cls=FstoreGroup, context_settings={"help_option_names": ["-h", "--help"]})
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

# in the order of the README's command table
for _command in (export, inspect, build, info, verify, compact, train, study, zeroshot,
                 classify, predict, activations, neighbors, index, duplicates, audit, map_,
                 report, bench):  # fmt: skip
    cli.add_command(_command)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="fstore")
