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
    (lambda h: h["persons"][0]["arrays"][0].update(shape=[10**12, 10**12]), "claims more than"),
    (lambda h: h["persons"][0]["arrays"][0].update(shape=[10**4, 10**4]), "is not"),
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


# -- hostile input: mutations of valid messages, hostile headers, part counts ----------------

def _valid_parts(persons=2):
    return encode_frame(make_frame(persons), 3, 1.0, wall_time=0.0)


def _decode_bounded(parts):
    """Decode under tracemalloc: only WireError may escape, and the decoder may not allocate
    much beyond the bytes it was given, whatever the header claims."""
    import tracemalloc

    present = sum(len(p) for p in parts)
    tracemalloc.start()
    try:
        decoded = decode_message(parts)
    except WireError as exc:
        assert str(exc) and "\n" not in str(exc)  # one line that says what was wrong
        return None
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 4 * present + (1 << 20), (peak, present)
    for person in decoded.persons:
        for arr in person.arrays.values():
            assert arr.nbytes <= len(parts[2])
    return decoded


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_bit_flips_truncation_and_splices_only_ever_raise_wire_error(data):
    parts = _valid_parts(data.draw(st.integers(0, 3)))
    which = data.draw(st.integers(0, 2))
    raw = bytearray(parts[which])
    for _ in range(data.draw(st.integers(0, 6))):  # single-bit flips
        if raw:
            pos = data.draw(st.integers(0, len(raw) - 1))
            raw[pos] ^= 1 << data.draw(st.integers(0, 7))
    op = data.draw(st.sampled_from(["none", "truncate", "insert", "duplicate"]))
    if op == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    elif op == "insert":
        pos = data.draw(st.integers(0, len(raw)))
        raw[pos:pos] = data.draw(st.binary(max_size=64))
    elif op == "duplicate" and raw:
        a = data.draw(st.integers(0, len(raw) - 1))
        raw[a:a] = raw[a:a + data.draw(st.integers(1, 200))]
    mutated = list(parts)
    mutated[which] = bytes(raw)
    _decode_bounded(mutated)


huge_ints = st.one_of(st.integers(-5, 5), st.integers(0, 10**6), st.just(2**63), st.just(10**30),
                      st.just(-(2**63)))
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), huge_ints, st.floats(allow_nan=False), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=10)


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_hostile_header_fields_never_allocate_from_claimed_shapes(data):
    parts = _valid_parts(data.draw(st.integers(1, 2)))
    header = json.loads(parts[1])
    payload = parts[2][: data.draw(st.integers(0, len(parts[2])))] if data.draw(st.booleans()) else parts[2]
    header["payload_bytes"] = len(payload)
    for _ in range(data.draw(st.integers(1, 4))):
        person = header["persons"][data.draw(st.integers(0, len(header["persons"]) - 1))]
        spec = person["arrays"][data.draw(st.integers(0, len(person["arrays"]) - 1))]
        field = data.draw(st.sampled_from(["shape", "offset", "nbytes", "dtype", "name"]))
        if field == "shape":
            spec["shape"] = data.draw(st.one_of(st.lists(huge_ints, max_size=10), json_values))
            if data.draw(st.booleans()):  # make nbytes agree with the claim, as an attacker would
                try:
                    spec["nbytes"] = int(np.prod([int(d) for d in spec["shape"]], dtype=object)) * 4
                except (TypeError, ValueError):
                    pass
        else:
            spec[field] = data.draw(st.one_of(huge_ints, json_values))
    _decode_bounded([parts[0], json.dumps(header).encode(), payload])


@pytest.mark.parametrize("shape", [[10**20, 0], [0, 2**62, 2**62], [2**40, 2**40, 0, 0, 0, 0, 0, 7]])
def test_empty_arrays_cannot_claim_absurd_shapes(shape):
    parts = _valid_parts(1)
    header = json.loads(parts[1])
    header["persons"][0]["arrays"][0].update(shape=shape, nbytes=0)
    with pytest.raises(WireError, match="claims more than"):
        decode_message([parts[0], json.dumps(header).encode(), parts[2]])


def test_numbers_beyond_pythons_digit_limit_are_a_wire_error():
    parts = _valid_parts(1)
    raw = parts[1].replace(b'"seq":3', b'"seq":' + b"7" * 5000)
    assert raw != parts[1]
    with pytest.raises(WireError, match="JSON"):
        decode_message([parts[0], raw, parts[2]])


@settings(max_examples=100, deadline=None)
@given(parts=st.lists(st.binary(max_size=300), max_size=6))
def test_random_part_counts_and_bytes_only_ever_raise_wire_error(parts):
    valid = _valid_parts(1)
    if len(parts) == 3 and parts[0] == b"":
        parts[0] = valid[0]  # often give it the right topic so the header is reached
    _decode_bounded(parts)
    _decode_bounded(valid + parts)  # a valid message with extra parts is still malformed
    _decode_bounded(valid[: len(parts) % 3])


def test_subscriber_skips_hostile_messages_and_receives_the_next_valid_one(endpoint):
    import time

    import zmq

    from streamer.subscriber import Subscriber

    pub = zmq.Context.instance().socket(zmq.PUB)
    pub.bind(endpoint)
    try:
        with Subscriber(endpoint, max_message_bytes=1 << 16) as sub:
            time.sleep(0.3)  # the subscription reaches the publisher
            valid = _valid_parts(2)
            pub.send_multipart([TOPIC, b"{", b""])
            pub.send_multipart([TOPIC, valid[1]])  # two parts
            pub.send_multipart([TOPIC, valid[1].replace(b'"payload_bytes":', b'"payload_bytes":1'), valid[2]])
            pub.send_multipart(valid)
            msg = sub.receive(timeout=5)
            assert msg is not None and [p.track_id for p in msg.frame.persons] == [1, 2]
            assert sub.bad_messages == 3
            # A part over max_message_bytes is never delivered (ZeroMQ drops the connection
            # instead of buffering it).
            pub.send_multipart([TOPIC, b"{}", b"x" * (1 << 17)])
            assert sub.receive(timeout=1.0) is None
    finally:
        pub.close(0)
