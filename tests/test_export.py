"""Tests of lmr_jax.export: .obj and .glb files parse back into the meshes that were written."""

import json
import os
import struct

import numpy as np
import pytest

from lmr_jax import export


@pytest.fixture(scope="module")
def body():
    """5 frames of the procedural SMPL body (frame 0 in the rest pose) and its faces."""
    import jax.numpy as jnp

    from lmr_jax import geometry, smpl

    model = smpl.resolve(None)
    pose = np.zeros((5, 72), np.float32)
    pose[:, 0] = np.pi  # upright in the y-down camera frame, as the data's labels are
    pose[1:, 3:] = np.random.default_rng(0).normal(0.0, 0.3, (4, 69))  # frame 0: rest pose
    vertices, _ = smpl.forward(
        model, jnp.zeros((5, 10)), geometry.pose72_to_rotmats(jnp.asarray(pose))
    )
    return np.asarray(vertices), np.asarray(model.faces)


@pytest.fixture(scope="module")
def nose_and_heel():
    from lmr_jax import smpl

    names = smpl.LANDMARK_NAMES
    landmarks = smpl.resolve(None).landmarks
    return landmarks[names.index("nose")], landmarks[names.index("left_heel")]


def read_obj(path):
    """A tiny .obj parser: 'v x y z' and 'f a b c' lines (1-based) only."""
    vertices, faces = [], []
    with open(path) as f:
        for line in f:
            fields = line.split()
            if fields and fields[0] == "v":
                vertices.append([float(x) for x in fields[1:4]])
            elif fields and fields[0] == "f":
                faces.append([int(x.split("/")[0]) - 1 for x in fields[1:4]])
    return np.array(vertices), np.array(faces)


def read_glb(path):
    """A minimal GLB reader: the header and the two chunks, checked against the spec."""
    with open(path, "rb") as f:
        data = f.read()
    magic, version, length = struct.unpack_from("<III", data, 0)
    assert (magic, version, length) == (0x46546C67, 2, len(data))
    json_length, json_type = struct.unpack_from("<II", data, 12)
    assert json_type == 0x4E4F534A and json_length % 4 == 0
    document = json.loads(data[20 : 20 + json_length].decode("utf-8"))
    offset = 20 + json_length
    bin_length, bin_type = struct.unpack_from("<II", data, offset)
    assert bin_type == 0x004E4942 and bin_length % 4 == 0
    assert offset + 8 + bin_length == len(data)
    return document, data[offset + 8 :]


def accessor_array(document, binary, index):
    accessor = document["accessors"][index]
    view = document["bufferViews"][accessor["bufferView"]]
    dtype = {5126: "<f4", 5125: "<u4"}[accessor["componentType"]]
    width = {"SCALAR": 1, "VEC3": 3}[accessor["type"]]
    start = view["byteOffset"] + accessor.get("byteOffset", 0)
    assert start % 4 == 0
    flat = np.frombuffer(binary, dtype, accessor["count"] * width, start)
    return flat.reshape(accessor["count"], width) if width > 1 else flat


def test_obj_round_trip(body, nose_and_heel, tmp_path):
    vertices, faces = body
    path = str(tmp_path / "body.obj")
    export.write_obj(path, vertices[0], faces)
    read_v, read_f = read_obj(path)
    np.testing.assert_array_equal(read_f, faces)
    # Stored y up: undoing the rotation gives the camera-frame vertices to the 6 printed decimals.
    np.testing.assert_allclose(export.to_y_up(read_v), vertices[0], atol=5.1e-7)
    # In the file the body stands upright (y up) and faces +z, the glTF front.
    nose, heel = read_v[list(nose_and_heel)]
    assert nose[1] > heel[1] + 1.2 and nose[2] > read_v[:, 2].mean() + 0.05


def test_obj_camera_frame_and_sequence(body, tmp_path):
    vertices, faces = body
    export.write_obj(str(tmp_path / "raw.obj"), vertices[1], faces, y_up=False)
    np.testing.assert_allclose(read_obj(str(tmp_path / "raw.obj"))[0], vertices[1], atol=5.1e-7)
    paths = export.write_obj_sequence(
        str(tmp_path / "seq"), vertices, faces, frame_ids=[7, 8, 9, 10, 11]
    )
    assert [os.path.basename(p) for p in paths] == [f"frame_{i:06d}.obj" for i in range(7, 12)]
    for path, frame in zip(paths, vertices, strict=True):
        read_v, read_f = read_obj(path)
        np.testing.assert_allclose(export.to_y_up(read_v), frame, atol=5.1e-7)
        np.testing.assert_array_equal(read_f, faces)


def test_glb_own_reader(body, tmp_path):
    vertices, faces = body
    path = str(tmp_path / "seq.glb")
    size = export.write_glb(path, vertices, faces, fps=25.0)
    assert size == os.path.getsize(path)
    document, binary = read_glb(path)
    primitive = document["meshes"][0]["primitives"][0]
    np.testing.assert_array_equal(
        accessor_array(document, binary, primitive["indices"]).reshape(-1, 3), faces
    )
    base_id = primitive["attributes"]["POSITION"]
    base = accessor_array(document, binary, base_id)
    np.testing.assert_allclose(export.to_y_up(base), vertices[0], atol=1e-6)
    targets = primitive["targets"]
    assert len(targets) == len(vertices) == len(document["meshes"][0]["weights"])
    for i, target in enumerate(targets):
        displacement = accessor_array(document, binary, target["POSITION"])
        np.testing.assert_allclose(export.to_y_up(base + displacement), vertices[i], atol=1e-6)
        accessor = document["accessors"][target["POSITION"]]  # min/max are REQUIRED
        np.testing.assert_allclose(accessor["min"], displacement.min(axis=0), atol=1e-7)
        np.testing.assert_allclose(accessor["max"], displacement.max(axis=0), atol=1e-7)
    np.testing.assert_allclose(document["accessors"][base_id]["max"], base.max(axis=0))
    # The animation: STEP keys at i / fps, one-hot weights, N keys x N targets values.
    (animation,) = document["animations"]
    (sampler,) = animation["samplers"]
    assert sampler["interpolation"] == "STEP"
    assert animation["channels"][0]["target"] == {"node": 0, "path": "weights"}
    times = accessor_array(document, binary, sampler["input"])
    np.testing.assert_allclose(times, np.arange(5) / 25.0, rtol=1e-6)
    weights = accessor_array(document, binary, sampler["output"])
    np.testing.assert_array_equal(weights.reshape(5, 5), np.eye(5))


def test_glb_pygltflib(body, tmp_path):
    import pygltflib  # in the test extra (setup.py)

    vertices, faces = body
    path = str(tmp_path / "seq.glb")
    export.write_glb(path, vertices, faces, fps=30.0, with_normals=True)
    gltf = pygltflib.GLTF2().load(path)
    binary = gltf.binary_blob()

    def read(index):
        accessor = gltf.accessors[index]
        view = gltf.bufferViews[accessor.bufferView]
        dtype = {pygltflib.FLOAT: "<f4", pygltflib.UNSIGNED_INT: "<u4"}[accessor.componentType]
        width = {pygltflib.SCALAR: 1, pygltflib.VEC3: 3}[accessor.type]
        start = (view.byteOffset or 0) + (accessor.byteOffset or 0)
        flat = np.frombuffer(binary, dtype, accessor.count * width, start)
        return flat.reshape(accessor.count, width)

    primitive = gltf.meshes[0].primitives[0]
    np.testing.assert_array_equal(read(primitive.indices).reshape(-1, 3), faces)
    base = read(primitive.attributes.POSITION)
    for i, target in enumerate(primitive.targets):
        np.testing.assert_allclose(
            export.to_y_up(base + read(target["POSITION"])), vertices[i], atol=1e-6
        )
        normals = read(primitive.attributes.NORMAL) + read(target["NORMAL"])
        np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-5)
    sampler = gltf.animations[0].samplers[0]
    np.testing.assert_allclose(read(sampler.input)[:, 0], np.arange(5) / 30.0, rtol=1e-6)
    assert read(sampler.output).size == 5 * 5
    assert gltf.meshes[0].extras["targetNames"][4] == "frame_000004"


def test_glb_faces_outward_in_y_up_frame(body, tmp_path):
    # Counter-clockwise winding seen from outside: the closed body's signed volume is positive,
    # and stays so after the rotation (a reflection would flip its sign).
    vertices, faces = body
    tri = export.to_y_up(vertices[0])[faces]
    volume = np.einsum("ij,ij->", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])) / 6.0
    assert volume > 0.03  # m^3; a 1.7 m body has roughly 0.07


def test_vertex_normals_of_a_tetrahedron():
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    faces = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])  # outward, CCW
    normals = export.vertex_normals(vertices, faces)
    np.testing.assert_allclose(normals[0], -np.ones(3) / np.sqrt(3), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize(
    "vertices, faces, match",
    [
        (np.zeros((4, 3)), [[0, 1, 2]], r"shape \[N, V, 3\]"),
        (np.zeros((2, 4, 2)), [[0, 1, 2]], r"shape \[N, V, 3\]"),
        (np.zeros((0, 4, 3)), [[0, 1, 2]], "empty"),
        (np.zeros((2, 4, 3)), [[0, 1, 4]], "outside 0..3"),
        (np.zeros((2, 4, 3)), [[0, -1, 2]], "outside 0..3"),
        (np.zeros((2, 4, 3)), [[0.0, 1.0, 2.0]], "integer"),
        (np.zeros((2, 4, 3)), np.zeros((0, 3), int), r"shape \[F, 3\]"),
        (np.full((2, 4, 3), np.nan), [[0, 1, 2]], "NaN"),
    ],
)
def test_bad_inputs(tmp_path, vertices, faces, match):
    with pytest.raises(ValueError, match=match):
        export.write_glb(str(tmp_path / "bad.glb"), vertices, faces)
    with pytest.raises(ValueError, match=match):
        export.write_obj_sequence(str(tmp_path / "bad"), vertices, faces)
    assert not os.path.exists(tmp_path / "bad.glb")


def test_bad_obj_and_fps(tmp_path):
    with pytest.raises(ValueError, match=r"shape \[V, 3\]"):
        export.write_obj(str(tmp_path / "bad.obj"), np.zeros((2, 4, 3)), [[0, 1, 2]])
    with pytest.raises(ValueError, match="outside 0..3"):
        export.write_obj(str(tmp_path / "bad.obj"), np.zeros((4, 3)), [[0, 1, 9]])
    with pytest.raises(ValueError, match="fps must be positive"):
        export.write_glb(str(tmp_path / "bad.glb"), np.zeros((1, 4, 3)), [[0, 1, 2]], fps=0)
    with pytest.raises(ValueError, match="one id per frame"):
        export.write_obj_sequence(
            str(tmp_path / "s"), np.zeros((2, 4, 3)), [[0, 1, 2]], frame_ids=[1]
        )
