"""The Socket.IO wire's JSON (huddle/wirejson.py): what clients read, what the gateway needs."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from socketio import packet as sio_packet

from huddle import wirejson

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_what_it_writes_the_standard_library_reads_back_unchanged(value: object) -> None:
    assert json.loads(wirejson.dumps(value)) == value
    assert wirejson.loads(json.dumps(value)) == value


def test_compact_utf8_and_string_keys_as_socket_io_clients_expect() -> None:
    assert wirejson.dumps({"a": [1, 2], "name": "Zoë ✓"}, separators=(",", ":")) == (
        '{"a":[1,2],"name":"Zoë ✓"}'
    )
    assert wirejson.dumps({1: "x"}) == '{"1":"x"}'  # as json.dumps does
    assert wirejson.dumps(2**70) == str(2**70)  # beyond orjson: the standard library writes it


def test_bytes_still_raise_type_error_so_binary_packets_are_chosen() -> None:
    with pytest.raises(TypeError):
        wirejson.dumps(["upload", b"\x00\x01"])


def test_what_python_socketio_read_before_it_still_reads() -> None:
    with pytest.raises(ValueError):
        wirejson.loads('["task:update", {')
    assert wirejson.loads("[NaN, 1]")[1] == 1  # Python's json wrote and read NaN
    assert wirejson.loads("[Infinity]") == [float("inf")]
    value = wirejson.loads("[" + "9" * 25 + "]")[0]
    assert isinstance(value, float)  # as JavaScript reads it
    with pytest.raises(ValueError):  # beyond a double and too long an integer: refused
        wirejson.loads("[" + "9" * 5000 + "]")


def test_socket_io_packets_encode_through_it_once_the_gateway_is_built() -> None:
    from huddle.config import load_settings
    from huddle.gateway.server import Gateway

    packet_class = Gateway(load_settings(app_env="test", jwt_secret="s" * 40)).sio.packet_class
    encoded = packet_class(sio_packet.EVENT, data=["hi", {"who": "Zoë"}]).encode()
    assert encoded == '2["hi",{"who":"Zoë"}]'
    assert packet_class(encoded_packet=encoded).data == ["hi", {"who": "Zoë"}]
