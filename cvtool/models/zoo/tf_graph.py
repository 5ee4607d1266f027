"""A reader for TensorFlow frozen graphs (``GraphDef`` protobuf files), without TensorFlow.

Only what a weight converter needs: every node's name, op, inputs and attributes, with ``Const``
tensors decoded into numpy arrays. The protobuf wire format is decoded here directly rather than
through the ``protobuf`` package: the format has been frozen for fifteen years, the five message
types involved (GraphDef, NodeDef, AttrValue, TensorProto, TensorShapeProto) are small, and this
way conversion depends on no library's version at all (``protobuf`` reaches cvtool only through
onnx, whose range it does not control, and its Python API to build message classes at run time has
changed across majors). Large tensors are read from the file's bytes without copying them twice.
``tests/test_tf_graph.py`` checks this reader against tensorboardX's compiled copies of
TensorFlow's own ``.proto`` files, parsed by the protobuf runtime.

Field numbers are those of TensorFlow's ``graph.proto``, ``node_def.proto``,
``attr_value.proto``, ``tensor.proto`` and ``tensor_shape.proto``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np


class GraphError(ValueError):
    """The file is not a GraphDef this reader understands (truncated, not a protobuf, an unknown
    tensor type)."""


# TensorFlow DataType enum values → numpy dtypes (types.proto).
DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"),   # DT_FLOAT
    2: np.dtype("<f8"),   # DT_DOUBLE
    3: np.dtype("<i4"),   # DT_INT32
    4: np.dtype("u1"),    # DT_UINT8
    5: np.dtype("<i2"),   # DT_INT16
    6: np.dtype("i1"),    # DT_INT8
    9: np.dtype("<i8"),   # DT_INT64
    10: np.dtype("?"),    # DT_BOOL
    17: np.dtype("<u2"),  # DT_UINT16
    19: np.dtype("<f2"),  # DT_HALF
    22: np.dtype("<u4"),  # DT_UINT32
    23: np.dtype("<u8"),  # DT_UINT64
}
DT_STRING = 7

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if i >= len(buf):
            raise GraphError("truncated varint")
        byte = buf[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, i
        shift += 7
        if shift > 63:
            raise GraphError("varint longer than 10 bytes")


def _signed(v: int) -> int:
    """int32/int64 fields are sent as 64-bit two's complement varints."""
    return v - (1 << 64) if v >= 1 << 63 else v


def _fields(buf: memoryview, start: int, end: int) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of one message; a length-delimited value is a (start, end)
    pair into ``buf``, a varint an int, a fixed-size value its bytes."""
    i = start
    while i < end:
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, i = _varint(buf, i)
        elif wire == _LEN:
            n, i = _varint(buf, i)
            value = (i, i + n)
            i += n
        elif wire == _I64:
            value = buf[i:i + 8]
            i += 8
        elif wire == _I32:
            value = buf[i:i + 4]
            i += 4
        else:
            raise GraphError(f"unsupported protobuf wire type {wire} (field {number})")
        if i > end or number == 0:
            raise GraphError("truncated or malformed protobuf message")
        yield number, wire, value


def _text(buf: memoryview, span: tuple[int, int]) -> str:
    return bytes(buf[span[0]:span[1]]).decode("utf-8")


def _packed(buf: memoryview, wire: int, value, fmt: str) -> list:
    """A repeated scalar field: packed (one LEN value) or not (one value per occurrence)."""
    if wire == _LEN:
        raw = buf[value[0]:value[1]]
        if fmt == "varint":
            out, i = [], 0
            while i < len(raw):
                v, i = _varint(raw, i)
                out.append(v)
            return out
        return np.frombuffer(raw, dtype=fmt).tolist()
    if fmt == "varint":
        return [value]
    return np.frombuffer(value, dtype=fmt).tolist()


def _shape(buf: memoryview, span: tuple[int, int]) -> tuple[int, ...] | None:
    """TensorShapeProto → dims (−1 for unknown), or None for an unknown rank."""
    dims = []
    for number, _, value in _fields(buf, *span):
        if number == 2:  # Dim
            size = 0
            for n2, _, v2 in _fields(buf, *value):
                if n2 == 1:
                    size = _signed(v2)
            dims.append(size)
        elif number == 3 and value:  # unknown_rank
            return None
    return tuple(dims)


_TENSOR_VALUE_FIELDS = {  # TensorProto field → how its repeated values are encoded
    5: "<f4",      # float_val
    6: "<f8",      # double_val
    7: "varint",   # int_val (int32, int16, int8, uint8, uint16)
    10: "varint",  # int64_val
    11: "varint",  # bool_val
    13: "varint",  # half_val (the float16 bits, as int32)
    16: "varint",  # uint32_val
    17: "varint",  # uint64_val
}


def _tensor(buf: memoryview, span: tuple[int, int]) -> np.ndarray | list[bytes]:
    """TensorProto → numpy array (strings → list of bytes)."""
    dtype = 0
    shape: tuple[int, ...] | None = ()
    content = None
    values: list = []
    strings: list[bytes] = []
    for number, wire, value in _fields(buf, *span):
        if number == 1:
            dtype = value
        elif number == 2:
            shape = _shape(buf, value)
        elif number == 4:
            content = buf[value[0]:value[1]]
        elif number == 8:
            strings.append(bytes(buf[value[0]:value[1]]))
        elif number in _TENSOR_VALUE_FIELDS:
            values.extend(_packed(buf, wire, value, _TENSOR_VALUE_FIELDS[number]))
    if dtype == DT_STRING:
        return strings
    if dtype not in DTYPES:
        raise GraphError(f"tensor of TensorFlow DataType {dtype}, which this reader does not decode")
    if shape is None or any(d < 0 for d in shape):
        raise GraphError(f"constant tensor with an unknown shape {shape}")
    np_dtype = DTYPES[dtype]
    count = int(np.prod(shape, dtype=np.int64))
    if content is not None and len(content):
        if len(content) != count * np_dtype.itemsize:
            raise GraphError(f"tensor_content holds {len(content)} bytes; shape {shape} of "
                             f"{np_dtype} needs {count * np_dtype.itemsize}")
        return np.frombuffer(content, dtype=np_dtype).reshape(shape).copy()
    if dtype == 19:  # half_val carries the raw 16 bits
        arr = np.array(values, dtype=np.uint16).view(np.float16)
    elif dtype in (9, 23):
        arr = np.array([_signed(v) if dtype == 9 else v for v in values], dtype=np_dtype)
    elif dtype in (3, 5, 6):
        arr = np.array([_signed(v) for v in values], dtype=np.int64).astype(np_dtype)
    else:
        arr = np.array(values).astype(np_dtype)
    if arr.size == count:
        return arr.reshape(shape)
    if arr.size == 0:
        return np.zeros(shape, dtype=np_dtype)
    if arr.size > count:
        raise GraphError(f"tensor holds {arr.size} values; its shape {shape} takes {count}")
    # TensorFlow's rule: a short value list is padded with its last value (a single value fills).
    return np.concatenate([arr, np.full(count - arr.size, arr[-1], dtype=np_dtype)]).reshape(shape)


def _list(buf: memoryview, span: tuple[int, int]) -> list:
    """AttrValue.ListValue → a python list of its one non-empty kind."""
    out: list = []
    for number, wire, value in _fields(buf, *span):
        if number == 2:
            out.append(bytes(buf[value[0]:value[1]]))
        elif number == 3:
            out.extend(_signed(v) for v in _packed(buf, wire, value, "varint"))
        elif number == 4:
            out.extend(_packed(buf, wire, value, "<f4"))
        elif number == 5:
            out.extend(bool(v) for v in _packed(buf, wire, value, "varint"))
        elif number == 6:
            out.extend(_packed(buf, wire, value, "varint"))
        elif number == 7:
            out.append(_shape(buf, value))
        elif number == 8:
            out.append(_tensor(buf, value))
    return out


def _attr(buf: memoryview, span: tuple[int, int]):
    """AttrValue → bytes (s), int (i, type), float (f), bool (b), shape tuple, ndarray, list."""
    for number, wire, value in _fields(buf, *span):
        if number == 1:
            return _list(buf, value)
        if number == 2:
            return bytes(buf[value[0]:value[1]])
        if number == 3:
            return _signed(value)
        if number == 4:
            return float(np.frombuffer(value, "<f4")[0])
        if number == 5:
            return bool(value)
        if number == 6:
            return value
        if number == 7:
            return _shape(buf, value)
        if number == 8:
            return _tensor(buf, value)
        if number == 9:
            return f"${_text(buf, value)}"  # placeholder (function attributes); kept as text
    return None


@dataclass
class Node:
    """One NodeDef: ``attrs`` maps an attribute name to its decoded value (see :func:`_attr`)."""

    name: str
    op: str
    inputs: list[str] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)

    def text(self, key: str) -> str | None:
        """A string attribute (``padding``, ``data_format``) as text."""
        v = self.attrs.get(key)
        return v.decode("utf-8") if isinstance(v, bytes) else v


def _node(buf: memoryview, span: tuple[int, int]) -> Node:
    node = Node("", "")
    for number, _, value in _fields(buf, *span):
        if number == 1:
            node.name = _text(buf, value)
        elif number == 2:
            node.op = _text(buf, value)
        elif number == 3:
            node.inputs.append(_text(buf, value))
        elif number == 5:  # map<string, AttrValue> entry: key = 1, value = 2
            key, attr_span = "", None
            for n2, _, v2 in _fields(buf, *value):
                if n2 == 1:
                    key = _text(buf, v2)
                elif n2 == 2:
                    attr_span = v2
            node.attrs[key] = _attr(buf, attr_span) if attr_span is not None else None
    return node


def parse_graph(data: bytes) -> dict[str, Node]:
    """A serialised GraphDef → its nodes by name, in file order."""
    buf = memoryview(data)
    nodes: dict[str, Node] = {}
    try:
        for number, wire, value in _fields(buf, 0, len(buf)):
            if number == 1 and wire == _LEN:  # repeated NodeDef node = 1
                node = _node(buf, value)
                if node.name in nodes:
                    raise GraphError(f"node {node.name!r} appears twice")
                nodes[node.name] = node
    except UnicodeDecodeError as e:
        raise GraphError(f"not a GraphDef (a node name is not UTF-8: {e})") from None
    except IndexError:
        raise GraphError("truncated GraphDef") from None
    if not nodes:
        raise GraphError("no nodes: not a TensorFlow GraphDef")
    return nodes


def read_graph(path: str | os.PathLike) -> dict[str, Node]:
    """Read a frozen graph (``.pb``) from disk; :class:`GraphError` names the file on failure."""
    path = Path(path)
    try:
        return parse_graph(path.read_bytes())
    except GraphError as e:
        raise GraphError(f"{path}: {e}") from None


def producer(nodes: dict[str, Node], name: str) -> Node:
    """The node that feeds input ``name`` (``node:0`` and ``^node`` spellings accepted), followed
    through ``Identity`` nodes (the ``weights/read`` nodes of a frozen graph)."""
    seen = set()
    name = name.split(":")[0].lstrip("^")
    while True:
        node = nodes.get(name)
        if node is None:
            raise GraphError(f"node {name!r} is not in the graph")
        if node.op != "Identity":
            return node
        if not node.inputs or name in seen:
            raise GraphError(f"Identity node {name!r} has no input")
        seen.add(name)
        name = node.inputs[0].split(":")[0].lstrip("^")


def constant(nodes: dict[str, Node], name: str) -> np.ndarray:
    """The value of the ``Const`` node ``name`` (or the one behind an ``Identity``)."""
    node = producer(nodes, name)
    value = node.attrs.get("value")
    if node.op != "Const" or not isinstance(value, np.ndarray):
        raise GraphError(f"node {node.name!r} is a {node.op}, not a numeric constant")
    return value
