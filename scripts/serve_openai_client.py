#!/usr/bin/env python3
"""Drives `agentcompress serve` with the official `openai` package: model list, a chat
completion (whole and streamed, which must agree under greedy decoding), a text completion,
the route header, and an error. Usage: serve_openai_client.py http://127.0.0.1:PORT"""

import json
import sys

import openai


def main() -> int:
    base = sys.argv[1].rstrip("/")
    client = openai.OpenAI(base_url=base + "/v1", api_key="not-needed", max_retries=0)
    model = client.models.list().data[0].id
    messages = [{"role": "user", "content": "Tell me a story about a dog."}]

    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=messages, max_tokens=16, temperature=0
    )
    route = json.loads(raw.headers["x-agentcompress-route"])
    whole = raw.parse()
    assert whole.object == "chat.completion", whole
    assert whole.choices[0].message.role == "assistant", whole
    assert whole.usage.completion_tokens > 0, whole.usage
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens
    assert whole.model_extra["x_agentcompress"]["precision"] == route["precision"], route

    parts, finish, usage = [], None, None
    stream = client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=16,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk", chunk
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                parts.append(choice.delta.content)
            finish = choice.finish_reason or finish
    streamed = "".join(parts)
    assert streamed == whole.choices[0].message.content, (streamed, whole)
    assert finish == whole.choices[0].finish_reason, finish
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens

    text = client.completions.create(
        model=model, prompt="Once upon a time", max_tokens=8, temperature=0
    )
    assert text.object == "text_completion" and text.usage.completion_tokens > 0, text

    try:
        client.chat.completions.create(model=model, messages=[], max_tokens=4)
        raise AssertionError("empty messages were accepted")
    except openai.BadRequestError as e:
        body = e.body.get("error", e.body) if isinstance(e.body, dict) else {}
        assert e.status_code == 400 and body.get("param") == "messages", e.body

    print(f"openai {openai.__version__}: ok ({route['precision']}, {len(streamed)} chars)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
