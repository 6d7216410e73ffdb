"""Submissions refused before anything is sent: media ids, types, JSON, sizes, regions."""

from __future__ import annotations

from typing import Any

import pytest

from tests.submit.simulator import BOTH
from tracker.errors import BadRequest
from tracker.submit.claims import SubmitRequest
from tracker.submit.validate import validate_request


def test_valid_request_is_normalised() -> None:
    request = validate_request(
        " m1 ", "AIVideoTag, AIMediaDNA,AIVideoTag", '{"AIVideoTag":{}}', None, region="cn-beijing"
    )
    assert request == SubmitRequest("m1", BOTH, {"AIVideoTag": {}}, None, region="cn-beijing")


@pytest.mark.parametrize(
    ("media_id", "types", "config", "user_data", "fragment"),
    [
        ("", "AIVideoTag", None, None, "media_id"),
        ("a b", "AIVideoTag", None, None, "media_id"),
        ("m1", "AIVideoCover", None, None, "valid types are AIVideoTag, AIMediaDNA"),
        ("m1", "", None, None, "types"),
        ("m1", "AIVideoTag", "[1]", None, "config: must be a JSON object"),
        ("m1", "AIVideoTag", "{bad", None, "config: not valid JSON"),
        ("m1", "AIVideoTag", None, {"Extend": "x" * 513}, "513 bytes"),
        ("m1", "AIVideoTag", None, {"MessageCallback": {"CallbackURL": "ftp://x"}}, "CallbackURL"),
    ],
)
def test_invalid_requests_are_refused_with_a_reason(
    media_id: str, types: str, config: Any, user_data: Any, fragment: str
) -> None:
    with pytest.raises(BadRequest) as caught:
        validate_request(media_id, types, config, user_data, region="cn-shanghai")
    assert fragment in caught.value.message


def test_extend_of_512_bytes_is_accepted() -> None:
    extend = "é" * 256  # 512 bytes in UTF-8
    validate_request("m1", "AIVideoTag", None, {"Extend": extend}, region="cn-shanghai")


def test_types_the_region_lacks_are_refused() -> None:
    validate_request("m1", "AIMediaDNA", None, None, region="ap-southeast-1")
    with pytest.raises(BadRequest) as caught:
        validate_request("m1", BOTH, None, None, region="ap-southeast-1")
    assert caught.value.code == "type_not_in_region"
    assert "AIVideoTag" in caught.value.message
