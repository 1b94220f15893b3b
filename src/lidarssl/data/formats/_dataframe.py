"""Read PandaSet's pickled DataFrames without running code from the file.

``pandas.read_pickle`` is a plain ``pickle.load``: a crafted ``.pkl.gz`` can name any callable (``os.system``,
``builtins.eval``) and have it called while loading. :class:`DataFrameUnpickler` resolves only the globals that
a pickled DataFrame of numbers and strings needs (numpy arrays and dtypes, pandas' frame, index and block
constructors, pyarrow's string arrays; pandas 1.x to 3.x, numpy 1.x and 2.x module paths) and refuses any other,
the approach of the Python docs' "Restricting Globals" (https://docs.python.org/3/library/pickle.html).
"""

from __future__ import annotations

import gzip
import pickle
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lidarssl.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

#: (module, name) pairs a pickled DataFrame may reference; each builds data and calls nothing else.
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset({
    ("builtins", "slice"),
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    *((m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray") for n in ("_reconstruct", "scalar")),
    *((m, "_frombuffer") for m in ("numpy.core.numeric", "numpy._core.numeric")),
    *(("numpy.dtypes", n) for n in ("Float64DType", "Float32DType", "Int64DType", "Int32DType", "Int16DType",
                                    "Int8DType", "UInt8DType", "BoolDType", "ObjectDType", "StrDType")),
    *((m, "DataFrame") for m in ("pandas", "pandas.core.frame")),
    *((m, n) for m in ("pandas", "pandas.core.indexes.base") for n in ("Index",)),
    ("pandas.core.indexes.base", "_new_Index"),
    *((m, "RangeIndex") for m in ("pandas", "pandas.core.indexes.range")),
    *(("pandas.core.indexes.numeric", n) for n in ("Int64Index", "UInt64Index", "Float64Index")),
    ("pandas.core.internals.managers", "BlockManager"),
    ("pandas.core.internals.managers", "SingleBlockManager"),
    ("pandas.core.internals.blocks", "new_block"),
    ("pandas._libs.internals", "_unpickle_block"),
    ("pandas._libs.internals", "BlockPlacement"),
    *((m, "StringDtype") for m in ("pandas", "pandas.core.arrays.string_")),
    *((m, n) for m in ("pandas.arrays", "pandas.core.arrays.string_arrow", "pandas.core.arrays.string_")
      for n in ("ArrowStringArray", "StringArray")),
    *(("pyarrow.lib", n) for n in ("_restore_array", "py_buffer", "type_for_alias")),
})

# pandas 1.x pickles name index classes pandas 2 removed; they are plain Index objects now.
_RENAMED = {("pandas.core.indexes.numeric", n): ("pandas", "Index") for n in ("Int64Index", "UInt64Index",
                                                                              "Float64Index")}


class DataFrameUnpickler(pickle.Unpickler):
    """An unpickler that builds DataFrames and refuses every global outside :data:`ALLOWED_GLOBALS`."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}")
        module, name = _RENAMED.get((module, name), (module, name))
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refused a persistent id")


def read_dataframe(path: Path, what: str) -> pd.DataFrame:
    """The DataFrame pickled (gzip-compressed) in ``path``; a :class:`DataError` naming the file otherwise."""
    try:
        import pandas as pd
    except ImportError as e:
        raise DataError(f"{path}: reading PandaSet needs pandas (its files are pickled DataFrames); "
                        "install it with `pip install pandas`") from e
    try:
        with gzip.open(path, "rb") as f:
            value = DataFrameUnpickler(f).load()
    except pickle.UnpicklingError as e:
        if str(e).startswith("refused"):
            raise DataError(f"{path}: the {what} is not a plain pickled DataFrame ({e}); lidarssl loads no "
                            "other pickled objects since they can run code; replace the file with the "
                            "dataset's original") from e
        raise DataError(f"{path}: cannot read the {what} (damaged pickle: {e})") from e
    except (OSError, EOFError, zlib.error, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError, ImportError) as e:  # gzip, pickle and pandas each raise their own types for a damaged file
        raise DataError(f"{path}: cannot read the {what} ({type(e).__name__}: {e}); "
                        "the file is damaged or truncated") from e
    if not isinstance(value, pd.DataFrame):
        raise DataError(f"{path}: the {what} holds a {type(value).__name__}, expected a pandas DataFrame")
    return value
