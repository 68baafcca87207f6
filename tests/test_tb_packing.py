"""tb/packing.py: payloads are packed where the Amaranth layouts say, and round-trip."""

import pytest
from amaranth.lib import data
from hypothesis import given
from hypothesis import strategies as st

from models import arch
from models.transaction import Request, Response, Status
from rtl import layouts
from tb import packing

TAG_BITS = 8


@pytest.mark.parametrize("layout", [
    layouts.translation_request(TAG_BITS), layouts.translation_response(TAG_BITS),
    layouts.FaultReport, layouts.Invalidation, layouts.mem_request(3), layouts.mem_response(3),
    layouts.TranslationContext, layouts.ContextResult, layouts.WalkResult,
])
def test_fields_tile_the_layout(layout):
    infos = packing.fields(layout)
    assert [f.name for f in infos] == [name for name, _ in data.Layout.cast(layout)]
    covered = 0
    for info in infos:
        mask = ((1 << info.width) - 1) << info.offset
        assert not covered & mask, f"{info.name} overlaps another field"
        covered |= mask
    assert covered == (1 << packing.width(layout)) - 1


def test_each_field_lands_where_amaranth_puts_it():
    layout = data.Layout.cast(layouts.translation_request(TAG_BITS))
    for name, field in layout:
        ones = (1 << field.width) - 1
        if isinstance(field.shape, type):  # enum: its largest value
            ones = max(int(m.value) for m in field.shape)
        assert packing.pack(layout, {name: ones}) == ones << field.offset
        # ... and where Amaranth's own constant of the layout has it.
        assert packing.pack(layout, {name: ones}) == layout.const({name: ones}).as_value().value


def test_enums_accept_members_names_and_values():
    layout = layouts.translation_request(TAG_BITS)
    a = packing.pack(layout, {"access": layouts.Access.WRITE})
    assert a == packing.pack(layout, {"access": arch.Access.WRITE})
    assert a == packing.pack(layout, {"access": "WRITE"})
    assert a == packing.pack(layout, {"access": 1})
    with pytest.raises(ValueError, match="not a value of Access"):
        packing.pack(layout, {"access": 3})
    with pytest.raises(ValueError, match="does not fit 8 bits"):
        packing.pack(layout, {"tag": 256})
    with pytest.raises(KeyError, match="no field"):
        packing.pack(layout, {"tags": 1})


def test_nested_layouts_pack_as_dicts():
    value = packing.pack(layouts.ContextResult, {"fault": 1, "context": {"pscid": 0x12345}})
    assert packing.unpack(layouts.ContextResult, value)["context"]["pscid"] == 0x12345


requests = st.builds(
    Request, device_id=st.integers(0, (1 << 24) - 1), iova=st.integers(0, (1 << 64) - 1),
    access=st.sampled_from(list(arch.Access)), process_id=st.integers(0, (1 << 20) - 1),
    pv=st.just(True), priv=st.sampled_from(list(arch.Priv)),
    addr_type=st.sampled_from(list(arch.AddrType)), tag=st.integers(0, 255))


@given(requests)
def test_request_round_trip(request):
    assert packing.request_from_payload(packing.request_payload(request, TAG_BITS),
                                        TAG_BITS) == request


@given(st.integers(0, (1 << 56) - 1), st.sampled_from([12, 16, 21, 30, 39]),
       st.lists(st.booleans(), min_size=5, max_size=5), st.integers(0, 2), st.integers(0, 255))
def test_response_round_trip(spa, size_log2, perms, pbmt, tag):
    r, w, x, u, g = perms
    response = Response(Status.SUCCESS, tag=tag, spa=spa, page_size=1 << size_log2, r=r, w=w,
                        x=x, u=u, g=g, pbmt=pbmt)
    assert packing.response_from_payload(packing.response_payload(response, TAG_BITS),
                                         TAG_BITS) == response
    fault = Response.fault(arch.Cause.DDT_ENTRY_NOT_VALID, tag=tag)
    assert packing.response_from_payload(packing.response_payload(fault, TAG_BITS),
                                         TAG_BITS) == fault


def test_fault_record_round_trip():
    record = arch.FaultRecord(cause=258, ttyp=2, device_id=0xABCDEF, process_id=0x12345,
                              pv=True, priv=True, iotval=(1 << 64) - 1, iotval2=0x1234)
    assert packing.fault_record_from_payload(packing.fault_record_payload(record)) == record
