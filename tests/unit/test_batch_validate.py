"""The batch input file's checks (services/batch/validate.py) and the multipart form reader."""

from __future__ import annotations

import json

import httpx
import pytest

from services.batch.multipart import FormError, parse_form
from services.batch.validate import BodyRefused, InvalidFile, parse_input


def accept(url: str, body: str) -> None:
    if json.loads(body).get("model") != "chat":
        raise BodyRefused("unknown model")


def request(custom_id: str, content: str = "hi", **extra: object) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                       "body": {"model": "chat", "messages": [{"role": "user", "content": content}]}, **extra})


def test_blank_lines_are_skipped_but_counted_and_the_body_is_kept_as_json() -> None:
    content = f"{request('a')}\n\n{request('b')}\r\n".encode()
    endpoint, requests = parse_input(content, endpoint=None, max_lines=10, check_body=accept)
    assert endpoint == "/v1/chat/completions" and [r.custom_id for r in requests] == ["a", "b"]
    assert json.loads(requests[0].body)["messages"][0]["content"] == "hi"
    with pytest.raises(InvalidFile) as bad:
        parse_input(f"{request('a')}\n\n{request('a')}".encode(), endpoint=None, max_lines=10, check_body=accept)
    assert bad.value.line == 3


def test_a_line_separator_inside_a_string_does_not_split_the_line() -> None:
    _, requests = parse_input((request("a", "one\u2028two") + "\n").encode(), endpoint=None, max_lines=10,
                              check_body=accept)
    assert json.loads(requests[0].body)["messages"][0]["content"] == "one\u2028two"


@pytest.mark.parametrize(("content", "message"), [
    (b"", "the file holds no requests"),
    (b'{"custom_id": "a", "x": NaN}', "line 1: not valid JSON"),
    (b"\xff\xfe", "line 1: not valid UTF-8"),
    (b"[1, 2]", "line 1: must be a JSON object"),
    (request("").encode(), "line 1: 'custom_id' must be a non-empty string"),
    (request("a", body=[1]).encode(), "line 1: 'body' must be a JSON object"),
])
def test_refusals_name_the_line_and_reason(content: bytes, message: str) -> None:
    with pytest.raises(InvalidFile, match=message):
        parse_input(content, endpoint=None, max_lines=10, check_body=accept)


def test_the_body_check_and_the_endpoint_apply_to_every_line() -> None:
    other = request("b").replace('"model": "chat"', '"model": "x"')
    with pytest.raises(InvalidFile, match="line 2: body: unknown model"):
        parse_input(f"{request('a')}\n{other}".encode(), endpoint=None, max_lines=10, check_body=accept)
    with pytest.raises(InvalidFile, match="line 1: 'url' is /v1/chat/completions but the batch's endpoint is"):
        parse_input(request("a").encode(), endpoint="/v1/completions", max_lines=10, check_body=accept)


def test_multipart_as_httpx_encodes_it() -> None:
    built = httpx.Request("POST", "http://x/v1/files", data={"purpose": "batch"},
                          files={"file": ('my "odd".jsonl', b"line 1\r\nline 2\r\n", "application/jsonl")})
    form = parse_form(built.headers["content-type"], built.read())
    assert form["purpose"].data == b"batch" and form["file"].data == b"line 1\r\nline 2\r\n"
    assert form["file"].filename == 'my "odd".jsonl'
    with pytest.raises(FormError, match="cut short"):
        parse_form(built.headers["content-type"], built.read()[:-10])
    with pytest.raises(FormError, match="must be multipart/form-data"):
        parse_form("application/json", b"{}")
