"""Read PandaSet's pickled DataFrames without running code from the file or reading memory it does not own.

``pandas.read_pickle`` is a plain ``pickle.load``: a crafted ``.pkl.gz`` can name any callable (``os.system``,
``builtins.eval``) and have it called while loading. :class:`DataFrameUnpickler` resolves only the globals that
a pickled DataFrame of numbers and strings needs (numpy arrays and dtypes, pandas' frame, index and block
constructors, pyarrow's string arrays; pandas 1.x to 3.x, numpy 1.x and 2.x module paths) and refuses any other,
the approach of the Python docs' "Restricting Globals" (https://docs.python.org/3/library/pickle.html).

Allowed names are not enough: several of them trust their arguments and read or write memory where those point.
A numpy dtype's pickled state can drop the object flag of ``O`` (raw file bytes then become object pointers) or
resize a dtype an array already uses; a pyarrow string array's offsets can point past its buffer; a block's
placement indexes an unchecked C array when pandas rebuilds its block map. So every such constructor and every
``BUILD`` (``__setstate__``) on these objects is checked first, by the pure-Python unpickler whose opcodes we can
intercept: dtypes only as numpy itself writes them, arrays built once from a checked dtype, string arrays
validated in full by pyarrow, block placements inside the frame's columns. Messages name what was wrong, never
file bytes.
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
    ("builtins", "bytearray"),
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    *((m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray") for n in ("_reconstruct", "scalar")),
    *((m, "_frombuffer") for m in ("numpy.core.numeric", "numpy._core.numeric")),
    # dtype classes: a dtype they make is not one the checks built, so no array may use it
    *(("numpy.dtypes", n) for n in ("Float64DType", "Float32DType", "Int64DType", "Int32DType", "Int16DType",
                                    "Int8DType", "UInt8DType", "BoolDType", "ObjectDType", "StrDType")),
    *((m, "DataFrame") for m in ("pandas", "pandas.core.frame")),
    *((m, n) for m in ("pandas", "pandas.core.indexes.base") for n in ("Index",)),
    ("pandas.core.indexes.base", "_new_Index"),
    *((m, "RangeIndex") for m in ("pandas", "pandas.core.indexes.range")),
    *(("pandas.core.indexes.numeric", n) for n in ("Int64Index", "UInt64Index", "Float64Index")),
    ("pandas.core.internals.managers", "BlockManager"),
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
#: dtypes a column or index may have, as numpy pickles them (``np.dtype(code, False, True)``).
_DTYPE_CODES = frozenset({"f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "b1", "O4", "O8"})
_STRING_TYPES = frozenset({"string", "str", "utf8", "large_string", "large_str", "large_utf8"})


class _Refused(pickle.UnpicklingError):
    """A value the checks refuse; its message names the check, never file bytes."""


def _check(ok: bool, reason: str) -> None:
    if not ok:
        raise _Refused(reason)


def _short(text: str) -> str:
    return ascii(text[:60])[1:-1]


class DataFrameUnpickler(pickle._Unpickler):
    """An unpickler that builds DataFrames and refuses every global outside :data:`ALLOWED_GLOBALS` and every
    value that would make numpy, pandas or pyarrow touch memory outside the file's own, checked buffers."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: Any) -> None:
        super().__init__(file)
        # objects made here and not yet given their state; kept (not only their ids) so ids are not reused
        self._unbuilt: dict[int, object] = {}
        self._checked: dict[int, object] = {}  # dtypes, arrays and managers that passed their checks

    # globals -----------------------------------------------------------------------------------------------------

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refused to load {_short(module)}.{_short(name)}")
        module, name = _RENAMED.get((module, name), (module, name))
        value = super().find_class(module, name)
        guard = {"dtype": self._dtype, "_reconstruct": self._reconstruct, "scalar": self._scalar,
                 "_frombuffer": self._frombuffer, "_restore_array": self._restore_array,
                 "py_buffer": self._py_buffer, "type_for_alias": self._type_for_alias, "bytearray": _bytearray}
        if name == "BlockManager":
            return _manager_factory(value, self)
        return guard.get(name) or value

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refused a persistent id")

    def _keep(self, table: dict[int, object], value: object) -> object:
        table[id(value)] = value
        return value

    def _dtype(self, code: object, align: object = False, copy: object = True) -> Any:
        import numpy as np

        code = code if isinstance(code, str) else None
        base = code.rstrip("0123456789") if code and code[0] == "U" else code
        _check(base in _DTYPE_CODES or base == "U", "a dtype other than numbers, booleans, strings or objects")
        _check(align in (False, 0), "an aligned dtype")
        return self._keep(self._unbuilt, np.dtype(base, False, True))

    def _checked_dtype(self, dtype: object) -> Any:
        _check(id(dtype) in self._checked and self._checked[id(dtype)] is dtype, "an array of an unchecked dtype")
        return dtype

    def _reconstruct(self, cls: object, shape: object, code: object) -> Any:
        import numpy as np

        _check(cls is np.ndarray and shape == (0,) and code == b"b", "an ndarray subclass or a non-empty stub")
        return self._keep(self._unbuilt, np.ndarray.__new__(np.ndarray, (0,), "b"))

    def _scalar(self, dtype: object, data: object = None) -> Any:
        import numpy as np

        dtype = self._checked_dtype(dtype)
        if dtype.hasobject:
            return data
        _check(isinstance(data, bytes) and len(data) == dtype.itemsize, "a scalar whose bytes do not fit its dtype")
        return np.frombuffer(data, dtype)[0].copy()

    def _frombuffer(self, buf: object, dtype: object, shape: object, order: object) -> Any:
        import numpy as np

        dtype = self._checked_dtype(dtype)
        _check(not dtype.hasobject and isinstance(buf, (bytes, bytearray)) and order in ("C", "F"),
               "an array buffer that is not plain bytes")
        _check(_is_shape(shape) and _size(shape) * dtype.itemsize == len(buf),
               "an array whose buffer does not match its shape")
        return self._keep(self._checked, np.frombuffer(bytes(buf), dtype).reshape(shape, order=order).copy())

    def _py_buffer(self, data: object) -> Any:
        import pyarrow as pa

        _check(isinstance(data, (bytes, bytearray)), "a pyarrow buffer that is not plain bytes")
        return pa.py_buffer(bytes(data))

    def _type_for_alias(self, name: object) -> Any:
        import pyarrow as pa

        _check(name in _STRING_TYPES, "a pyarrow array of a type other than strings")
        return pa.lib.type_for_alias(name)

    def _restore_array(self, data: object) -> Any:
        import pyarrow as pa

        _check(isinstance(data, tuple) and len(data) == 7, "a pyarrow array of an unknown layout")
        kind, length, nulls, offset, buffers, children, dictionary = data
        _check(kind in (pa.string(), pa.large_string()) and not children and dictionary is None,
               "a pyarrow array of a type other than strings")
        _check(all(isinstance(v, int) and 0 <= v < 2**40 for v in (length, offset)) and isinstance(nulls, int)
               and isinstance(buffers, list) and len(buffers) == 3
               and all(b is None or isinstance(b, pa.Buffer) for b in buffers),
               "a pyarrow string array of an unknown layout")
        array = pa.lib._restore_array(data)
        try:  # offsets inside the data buffer, lengths inside the buffers, valid UTF-8: before anything reads it
            array.validate(full=True)
        except (pa.ArrowException, ValueError) as e:
            raise _Refused("a pyarrow string array whose offsets or lengths do not fit its buffers") from e
        return self._keep(self._checked, array)

    # BUILD: check the state before __setstate__ uses it ----------------------------------------------------------

    def load_build(self) -> None:
        import numpy as np
        import pandas as pd
        from pandas.core.arrays.string_ import StringArray
        from pandas.core.arrays.string_arrow import ArrowStringArray
        from pandas.core.internals.managers import BlockManager

        state, inst = self.stack[-1], self.stack[-2]
        if isinstance(inst, (np.dtype, np.ndarray)):
            _check(self._unbuilt.pop(id(inst), None) is inst, "a second state for a dtype or array")
            (self._build_dtype if isinstance(inst, np.dtype) else self._build_array)(inst, state)
            self._keep(self._checked, inst)
            self.stack.pop()
            return
        if isinstance(inst, BlockManager):
            _check(isinstance(state, tuple) and len(state) >= 4 and isinstance(state[3], dict)
                   and isinstance(state[3].get("0.14.1"), dict), "a block manager of an unknown layout")
            inner = state[3]["0.14.1"]
            _check(isinstance(inner.get("axes"), list) and isinstance(inner.get("blocks"), list)
                   and all(isinstance(b, dict) for b in inner["blocks"]), "a block manager of an unknown layout")
            _check_blocks([(b.get("values"), b.get("mgr_locs")) for b in inner["blocks"]], inner["axes"], self)
            _check(id(inst) not in self._checked, "a second state for a block manager")
            self._keep(self._checked, inst)
        elif isinstance(inst, ArrowStringArray):
            _check(isinstance(state, dict) and id(state.get("_pa_array")) in self._checked,
                   "a string array without a checked pyarrow array")
        elif isinstance(inst, StringArray):
            values = state.get("_ndarray") if isinstance(state, dict) else None
            _check(isinstance(values, np.ndarray) and id(values) in self._checked and values.dtype.hasobject
                   and all(v is None or isinstance(v, (str, float)) for v in values.ravel()),
                   "a string array holding something other than strings")
        elif isinstance(inst, pd.DataFrame):
            mgr = state.get("_mgr", state.get("_data")) if isinstance(state, dict) else None
            _check(isinstance(mgr, BlockManager) and id(mgr) in self._checked, "a frame without checked blocks")
        else:
            _check(not isinstance(inst, (pd.Index, pd.core.internals.blocks.Block)), "an index or block with state")
        super().load_build()

    dispatch[pickle.BUILD[0]] = load_build

    def _build_dtype(self, dtype: Any, state: object) -> None:
        import numpy as np

        probe = np.dtype(dtype.str if dtype.kind != "U" else "U", False, True)
        try:
            probe.__setstate__(state)
        except (TypeError, ValueError) as e:
            raise _Refused("a dtype state numpy does not write") from e
        canonical = np.dtype(probe.str)
        _check(probe.kind == dtype.kind and probe.fields is None and probe.subdtype is None
               and probe.flags == canonical.flags and probe.itemsize == canonical.itemsize
               and probe.hasobject == canonical.hasobject and probe.itemsize < 2**20,
               "a dtype state numpy does not write")
        dtype.__setstate__(state)

    def _build_array(self, array: Any, state: object) -> None:
        _check(isinstance(state, tuple) and len(state) in (4, 5), "an array state of an unknown layout")
        shape, dtype, fortran, data = state[-4:]
        dtype = self._checked_dtype(dtype)
        _check(_is_shape(shape) and isinstance(fortran, bool), "an array state of an unknown layout")
        if dtype.hasobject:
            _check(isinstance(data, list) and len(data) == _size(shape), "an object array of the wrong length")
        else:
            _check(isinstance(data, bytes) and len(data) == _size(shape) * dtype.itemsize,
                   "an array whose buffer does not match its shape")
        array.__setstate__(state)


def _bytearray(data: object = b"") -> bytearray:
    _check(isinstance(data, bytes), "a bytearray made from something other than bytes")
    return bytearray(data)


def _is_shape(shape: object) -> bool:
    return (isinstance(shape, tuple) and len(shape) <= 2
            and all(isinstance(n, int) and 0 <= n < 2**40 for n in shape))


def _size(shape: tuple[int, ...]) -> int:
    size = 1
    for n in shape:
        size *= n
    return size


def _placement(locs: object, items: int) -> list[int]:
    """The column numbers a block's placement names; each in ``range(items)``."""
    import numpy as np
    from pandas._libs.internals import BlockPlacement

    if isinstance(locs, BlockPlacement):
        locs = locs.indexer
    if isinstance(locs, slice):
        _check(all(v is None or isinstance(v, int) for v in (locs.start, locs.stop, locs.step)),
               "a block placement that is not a range of columns")
        start, stop, step = locs.start or 0, locs.stop, locs.step or 1
        _check(stop is not None and 0 <= start and stop <= items and step > 0,
               "a block placement outside the frame's columns")
        return list(range(start, stop, step))
    _check(isinstance(locs, np.ndarray) and locs.ndim == 1 and locs.dtype.kind in "iu" and len(locs) <= items,
           "a block placement that is not a list of columns")
    _check(bool(np.all((locs >= 0) & (locs < items))), "a block placement outside the frame's columns")
    return locs.tolist()


def _check_blocks(blocks: list[tuple[object, object]], axes: object, unpickler: DataFrameUnpickler) -> None:
    """Blocks that tile the frame: each column in exactly one block, each block's values of the frame's length."""
    import numpy as np
    import pandas as pd

    _check(isinstance(axes, (list, tuple)) and len(axes) == 2 and all(isinstance(a, pd.Index) for a in axes),
           "a block manager whose axes are not two indexes")
    items, rows = len(axes[0]), len(axes[1])
    seen: list[int] = []
    for values, locs in blocks:
        columns = _placement(locs, items)
        seen += columns
        if isinstance(values, np.ndarray):
            _check(id(values) in unpickler._checked, "a block of an unchecked array")
            _check(values.shape == (len(columns), rows), "a block whose values do not match the frame's shape")
        else:
            _check(isinstance(values, pd.api.extensions.ExtensionArray) and len(values) == rows
                   and len(columns) == 1, "a block whose values do not match the frame's shape")
    _check(sorted(seen) == list(range(items)), "blocks that do not cover each column exactly once")


def _manager_factory(manager: type, unpickler: DataFrameUnpickler) -> type:
    """``BlockManager`` as the unpickler sees it: called with blocks and axes (pandas 2 and 3), they are checked
    first; created empty (pandas 1, state given by BUILD), it is checked in ``load_build``."""

    class _Manager:
        def __new__(cls, *args: Any) -> Any:
            if not args:
                return manager.__new__(manager)
            _check(len(args) == 2 and isinstance(args[0], (tuple, list)), "a block manager of an unknown layout")
            blocks = args[0]
            _check(all(isinstance(b, _block_type()) for b in blocks), "a block manager of an unknown layout")
            _check_blocks([(b.values, b.mgr_locs) for b in blocks], args[1], unpickler)
            return unpickler._keep(unpickler._checked, manager(*args))

    return _Manager


def _block_type() -> type:
    from pandas.core.internals.blocks import Block

    return Block


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
    except _Refused as e:
        raise DataError(f"{path}: the {what} is damaged or crafted: it holds {e}; replace the file with the "
                        "dataset's original") from e
    except pickle.UnpicklingError as e:
        if str(e).startswith("refused"):
            raise DataError(f"{path}: the {what} is not a plain pickled DataFrame ({e}); lidarssl loads no "
                            "other pickled objects since they can run code; replace the file with the "
                            "dataset's original") from e
        raise DataError(f"{path}: cannot read the {what} (damaged pickle: {_short(str(e))})") from e
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read the {what} ({type(e).__name__}: {_short(str(e))}); "
                        "the file is damaged or truncated") from e
    except Exception as e:  # pickle and pandas raise many types for a damaged file; their messages may quote it
        raise DataError(f"{path}: cannot read the {what} ({type(e).__name__}); the file is damaged or "
                        "truncated") from e
    if not isinstance(value, pd.DataFrame):
        raise DataError(f"{path}: the {what} holds a {type(value).__name__}, expected a pandas DataFrame")
    return value
