from tests.component.conftest import RunningBBS
from tests.factories import desired_lrp


async def test_desire_creates_unclaimed_instances_and_one_auction(bbs: RunningBBS) -> None:
    body = desired_lrp(instances=3)
    created = await bbs.client.desire_lrp(body)
    assert created.modification_tag is not None and created.modification_tag.epoch
    actual = await bbs.client.actual_lrps(process_guid=body["process_guid"])
    assert sorted(a.index for a in actual) == [0, 1, 2]
    assert {a.state for a in actual} == {"UNCLAIMED"}
    assert len(bbs.auctioneer.lrp_batches) == 1
    assert bbs.auctioneer.lrp_indices(body["process_guid"]) == [0, 1, 2]
