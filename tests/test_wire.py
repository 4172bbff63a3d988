"""Wire format v1: the encoder, the decoder, and a decoder written from the document alone."""

import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.frames import Frame
from streamer.wire import TOPIC, WireError, decode_message, encode_frame
from synthetic import synthetic_person


def make_frame(persons=2, index=7):
    f = Frame(index=index, image=None, capture_time=100.0, source_size=(1768, 994), stream_time=0.25)
    f.persons = [synthetic_person(i + 1, index) for i in range(persons)]
    return f


def test_round_trip_keeps_every_array_bit_exact():
    frame = make_frame(3)
    parts = encode_frame(frame, seq=5, publish_time=100.01, wall_time=1.7e9, extra={"source": "x.mp4"})
    decoded = decode_message(parts)
    assert decoded.seq == 5 and decoded.frame_index == 7
    assert decoded.header["source"] == "x.mp4"
    assert [p.track_id for p in decoded.persons] == [1, 2, 3]
    for sent, got in zip(frame.persons, decoded.persons):
        assert set(got.arrays) == set(sent.arrays)
        for name, value in sent.arrays.items():
            assert got.arrays[name].dtype == np.dtype("<f4")
            np.testing.assert_array_equal(got.arrays[name], value)


def test_empty_frame_is_a_valid_message():
    decoded = decode_message(encode_frame(make_frame(0), 0, 1.0, wall_time=0.0))
    assert decoded.persons == [] and decoded.header["payload_bytes"] == 0


def test_dtypes_are_normalised_to_the_documented_set():
    frame = make_frame(0)
    from streamer.frames import Person
    frame.persons = [Person(1, 1.0, {"a": np.arange(3, dtype=np.int16), "b": np.ones(2, bool),
                                     "c": np.ones(2, np.float16), "d": np.arange(4, dtype=">f8")})]
    got = decode_message(encode_frame(frame, 0, 1.0, wall_time=0.0)).persons[0].arrays
    assert got["a"].dtype == np.dtype("<i4") and got["b"].dtype == np.uint8
    assert got["c"].dtype.str == "<f4" and got["d"].dtype.str == "<f8"
    np.testing.assert_array_equal(got["d"], np.arange(4))


def decode_from_document(parts):
    """Written from docs/wire-format.md only: struct and byte offsets, no numpy, no client."""
    topic, header_bytes, payload = parts
    assert topic == b"smplstream.v1"
    header = json.loads(header_bytes.decode("utf-8"))
    assert header["schema"] == "smplstream.frame" and header["version"] == 1
    assert header["payload_bytes"] == len(payload)
    formats = {"<f4": ("f", 4), "<f8": ("d", 8), "<i4": ("i", 4), "<i8": ("q", 8),
               "<u1": ("B", 1), "<u2": ("H", 2)}
    persons = {}
    for person in header["persons"]:
        arrays = {}
        for a in person["arrays"]:
            code, size = formats[a["dtype"]]
            count = 1
            for d in a["shape"]:
                count *= d
            assert a["offset"] % 8 == 0 and count * size == a["nbytes"]
            assert a["offset"] + a["nbytes"] <= len(payload)
            flat = struct.unpack_from("<" + code * count, payload, a["offset"])
            arrays[a["name"]] = (a["shape"], flat)
        persons[person["track_id"]] = arrays
    return header, persons


def test_message_decodes_with_only_the_documented_layout():
    frame = make_frame(2, index=41)
    parts = encode_frame(frame, 41, 5123.4, wall_time=1.7e9)
    header, persons = decode_from_document(parts)
    assert header["frame_index"] == 41 and header["source_size"] == [1768, 994]
    for person in frame.persons:
        shape, flat = persons[person.track_id]["joints"]
        assert shape == [24, 3]
        np.testing.assert_array_equal(np.array(flat, np.float32).reshape(24, 3), person.arrays["joints"])
        shape, flat = persons[person.track_id]["trans"]
        np.testing.assert_array_equal(np.array(flat, np.float32), person.arrays["trans"])


def _mutate_header(parts, fn):
    header = json.loads(parts[1])
    fn(header)
    return [parts[0], json.dumps(header).encode(), parts[2]]


@pytest.mark.parametrize("mutation, message", [
    (lambda h: h["persons"][0]["arrays"][0].update(shape=[10**12, 10**12]), "is not"),
    (lambda h: h["persons"][0]["arrays"][0].update(offset=10**9), "outside"),
    (lambda h: h["persons"][0]["arrays"][0].update(dtype="object"), "dtype"),
    (lambda h: h["persons"][0]["arrays"][0].update(shape=[-1, 3]), "shape"),
    (lambda h: h.update(version=2), "version"),
    (lambda h: h.update(payload_bytes=1), "payload"),
    (lambda h: h.update(persons={}), "persons"),
    (lambda h: h["persons"][0].update(track_id="1"), "track_id"),
])
def test_malformed_headers_are_rejected_with_a_reason(mutation, message):
    parts = encode_frame(make_frame(1), 0, 1.0, wall_time=0.0)
    with pytest.raises(WireError, match=message):
        decode_message(_mutate_header(parts, mutation))


def test_wrong_part_count_topic_and_json_are_rejected():
    parts = encode_frame(make_frame(1), 0, 1.0, wall_time=0.0)
    with pytest.raises(WireError, match="3 message parts"):
        decode_message(parts[:2])
    with pytest.raises(WireError, match="topic"):
        decode_message([b"other", parts[1], parts[2]])
    with pytest.raises(WireError, match="JSON"):
        decode_message([TOPIC, b"{not json", parts[2]])


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_random_mutations_only_ever_raise_wire_error(data):
    parts = encode_frame(make_frame(data.draw(st.integers(0, 3))), 3, 1.0, wall_time=0.0)
    which = data.draw(st.integers(0, 2))
    raw = bytearray(parts[which])
    for _ in range(data.draw(st.integers(1, 8))):
        if not raw:
            break
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    mutated = list(parts)
    mutated[which] = bytes(raw)
    try:
        decoded = decode_message(mutated)
    except WireError:
        return
    for person in decoded.persons:  # whatever decodes must be backed by real bytes
        for arr in person.arrays.values():
            assert arr.nbytes <= len(mutated[2])
