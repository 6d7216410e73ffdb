"""How errors show what failed: a URL by its host, a peer's answer by its size (issue 23, P1)."""

from __future__ import annotations

import pytest

from tracker.errors import redact_url, unreadable_answer


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://127.0.0.1:9000/creds?token=s3cret", "http://127.0.0.1:9000/..."),
        ("https://user:s3cret@example.com/", "https://...@example.com"),
        ("https://hooks.example.com/services/T0/B0/s3cret", "https://hooks.example.com/..."),
        ("http://[::1]:8080/#s3cret", "http://[::1]:8080/..."),
        ("https://vod.cn-shanghai.aliyuncs.com", "https://vod.cn-shanghai.aliyuncs.com"),
        ("s3cret", "(a URL without a scheme and host)"),
        ("http://h:99999/s3cret", "(a URL that does not parse)"),
    ],
)
def test_a_url_is_shown_by_its_scheme_host_and_port(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_an_unreadable_answer_is_shown_by_status_and_size() -> None:
    said = unreadable_answer(502, b"<html>token=s3cret</html>")
    assert said == "HTTP 502, 25 bytes not in the expected format"
