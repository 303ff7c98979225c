"""Where the examples find the bundled data sets, from any working folder (a notebook's too).

$MINICNN_DATA names the folder that holds ``cats_vs_dogs/`` and ``mnist/``; unset, it is ``../shared/data``
beside the checkout minicnn runs from (the package's own location, so a notebook with no ``__file__``
finds it as a script does).
"""
import os

DATA_VARIABLE = "MINICNN_DATA"
CHECKOUT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def data_root():
    """The folder holding the bundled data sets: $MINICNN_DATA, else ``../shared/data`` beside the checkout."""
    return os.environ.get(DATA_VARIABLE) or os.path.join(os.path.dirname(CHECKOUT), "shared", "data")


def bundled_data(name):
    """The folder of the bundled data set ``name`` (``"cats_vs_dogs"`` or ``"mnist"``), or a FileNotFoundError
    naming the folder expected and $MINICNN_DATA."""
    folder = os.path.join(data_root(), name)
    if not os.path.isdir(folder):
        where = f"${DATA_VARIABLE} is {os.environ[DATA_VARIABLE]!r}" if os.environ.get(DATA_VARIABLE) else \
            f"${DATA_VARIABLE} is not set, so it is looked for beside the checkout {CHECKOUT!r}"
        raise FileNotFoundError(f"no {name} data in {os.path.normpath(folder)!r} ({where}): set {DATA_VARIABLE} to "
                                f"the folder that holds {name}/, or pass the data folder on the command line")
    return os.path.normpath(folder)
