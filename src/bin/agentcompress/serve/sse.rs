//! Server-sent events in OpenAI's streaming format: one `data: {chunk}` frame per piece of
//! text, a last chunk with the finish reason (and, when asked, one with the usage), then
//! `data: [DONE]`. Dropping the body (the client went away) drops the receiver, which the
//! scheduler sees and cancels the sequence.

use super::errors::ApiError;
use super::openai::{usage, ResponseMeta};
use super::scheduler::{Event, Finish};
use axum::body::Bytes;
use axum::http::StatusCode;
use futures_core::Stream;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc::UnboundedReceiver;

/// The response body of a streamed request.
pub struct SseBody {
    rx: UnboundedReceiver<Event>,
    meta: ResponseMeta,
    frames: VecDeque<Bytes>,
    prompt_tokens: usize,
    include_usage: bool,
    done: bool,
}

fn frame(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

impl SseBody {
    /// A stream of the events on `rx` for a request whose prompt (of `prompt_tokens`) has been
    /// prefilled; its first frame carries the assistant role and the route.
    pub fn new(
        rx: UnboundedReceiver<Event>,
        meta: ResponseMeta,
        prompt_tokens: usize,
        include_usage: bool,
    ) -> Self {
        let first = frame(&meta.chunk("", true, None));
        SseBody {
            rx,
            meta,
            frames: VecDeque::from([first]),
            prompt_tokens,
            include_usage,
            done: false,
        }
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Started { .. } => {}
            Event::Text(t) => self
                .frames
                .push_back(frame(&self.meta.chunk(&t, false, None))),
            Event::Done {
                finish,
                completion_tokens,
            } => {
                let mut last = self.meta.chunk("", false, Some(finish.reason()));
                // A sequence the server cut short ends like one that hit max_tokens, saying why.
                match finish {
                    Finish::Timeout => last["x_agentcompress"] = json!({"cut_short": "timeout"}),
                    Finish::Shutdown => last["x_agentcompress"] = json!({"cut_short": "shutdown"}),
                    Finish::Stop | Finish::Length => {}
                }
                self.frames.push_back(frame(&last));
                if self.include_usage {
                    let u = usage(self.prompt_tokens, completion_tokens);
                    self.frames.push_back(frame(&self.meta.usage_chunk(u)));
                }
                self.finish();
            }
            Event::Failed(e) => {
                self.frames.push_back(frame(&e.body()));
                self.finish();
            }
        }
    }

    fn finish(&mut self) {
        self.frames
            .push_back(Bytes::from_static(b"data: [DONE]\n\n"));
        self.done = true;
    }
}

impl Stream for SseBody {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(f) = this.frames.pop_front() {
                return Poll::Ready(Some(Ok(f)));
            }
            if this.done {
                return Poll::Ready(None);
            }
            match this.rx.poll_recv(cx) {
                Poll::Ready(Some(ev)) => this.on_event(ev),
                Poll::Ready(None) => this.on_event(Event::Failed(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "internal_error",
                    "the scheduler dropped the request",
                ))),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
