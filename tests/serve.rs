//! `agentcompress serve` end to end: the built binary on a loopback port, driven over plain
//! HTTP (a std-only client) and, when the package is installed, the official `openai` client.
//! The built-in tiny model runs everywhere; stories260K and SmolLM2 tests skip visibly when
//! the shared models are absent.

mod common;

#[path = "../src/bin/agentcompress/serve/client.rs"]
#[allow(dead_code)]
mod client;

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A server process, killed when dropped.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    /// Starts `agentcompress serve --port 0 ARGS` and reads the address it prints.
    fn start(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_agentcompress"))
            .args(["serve", "--port", "0", "--device", "cpu"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the server");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the address");
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Server { child, addr }
    }

    fn get(&self, path: &str) -> client::Response {
        client::request(&self.addr, "GET", path, None).expect("GET")
    }

    fn post(&self, path: &str, body: &str) -> client::Response {
        client::request(&self.addr, "POST", path, Some(body)).expect("POST")
    }

    fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self.post(path, &body.to_string());
        let v = serde_json::from_str(&r.body)
            .unwrap_or_else(|e| panic!("{path}: body {:?} is not JSON: {e}", r.body));
        (r.status, v)
    }

    fn stream(&self, path: &str, body: &Value) -> client::Stream {
        client::open(&self.addr, "POST", path, Some(&body.to_string())).expect("stream")
    }

    /// A metric's value (the first sample whose name and labels start with `name`).
    fn metric(&self, name: &str) -> f64 {
        let text = self.get("/metrics").body;
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
    }

    /// Waits until `cond` holds (polling), failing after `limit`.
    fn wait_for(&self, what: &str, limit: Duration, mut cond: impl FnMut(&Server) -> bool) {
        let t0 = Instant::now();
        while !cond(self) {
            assert!(t0.elapsed() < limit, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal_term(&self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    }

    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let t0 = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s;
            }
            assert!(t0.elapsed() < limit, "the server did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const TINY: &str = "builtin:tiny";

fn chat_body(content: &str, max_tokens: usize) -> Value {
    json!({
        "model": "any",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
    })
}

/// The text of a whole chat or text completion.
fn answer(v: &Value) -> String {
    let c = &v["choices"][0];
    c["message"]["content"]
        .as_str()
        .or(c["text"].as_str())
        .unwrap_or_else(|| panic!("no answer in {v}"))
        .to_string()
}

/// Every `data:` payload of a stream, parsed, up to `[DONE]` (which must come last).
fn read_stream(mut s: client::Stream) -> Vec<Value> {
    let mut out = Vec::new();
    while let Some(d) = s.next_event().expect("read a stream") {
        if d == "[DONE]" {
            assert!(s.next_event().unwrap().is_none(), "data after [DONE]");
            return out;
        }
        out.push(serde_json::from_str(&d).unwrap_or_else(|e| panic!("chunk {d:?}: {e}")));
    }
    panic!("the stream ended without [DONE]: {out:?}");
}

fn streamed_text(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| {
            let ch = &c["choices"][0];
            ch["delta"]["content"].as_str().or(ch["text"].as_str())
        })
        .collect()
}

#[test]
fn health_models_and_a_routed_completion() {
    let s = Server::start(&["--model", TINY]);
    let h = s.get("/health");
    assert_eq!(h.status, 200);
    let models: Value = serde_json::from_str(&s.get("/v1/models").body).unwrap();
    assert_eq!(models["data"][0]["id"], TINY);

    let r = s.post(
        "/v1/completions",
        &json!({"prompt": "Once upon", "max_tokens": 6, "temperature": 0, "ignore_eos": true})
            .to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["usage"]["completion_tokens"], 6);
    assert_eq!(
        v["usage"]["total_tokens"].as_u64(),
        Some(v["usage"]["prompt_tokens"].as_u64().unwrap() + 6)
    );
    let header: Value = serde_json::from_str(r.header("x-agentcompress-route").unwrap()).unwrap();
    assert_eq!(header["precision"], "fp16");
    assert_eq!(
        header, v["x_agentcompress"],
        "header and body carry the same route"
    );
    assert!(header["reasons"].as_array().is_some_and(|r| !r.is_empty()));
    assert!(header["expected_cost"].is_number());

    // A model without a chat template still chats; the route says how the turns were joined.
    let (status, v) = s.post_json("/v1/chat/completions", &chat_body("Hello", 4));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert!(v["x_agentcompress"]["reasons"]
        .to_string()
        .contains("chat template"));

    let m = s.get("/metrics");
    assert!(m.header("content-type").unwrap().starts_with("text/plain"));
    assert!(m
        .body
        .contains("agentcompress_requests_total{endpoint=\"completions\",status=\"200\"} 1"));
    assert!(
        m.body
            .contains("agentcompress_tasks_total{precision=\"fp16\"} 2"),
        "{}",
        m.body
    );
    assert!(m
        .body
        .contains("agentcompress_time_to_first_token_seconds_count 2"));
}

#[test]
fn bad_requests_get_openai_errors_never_500() {
    let s = Server::start(&["--model", TINY, "--ctx", "64", "--max-body", "2K"]);
    let msg = |c: &str| json!([{"role": "user", "content": c}]);
    let long_ids: Vec<u32> = (0..80).map(|i| 65 + i % 26).collect();
    let cases: Vec<(&str, &str, String, u16, Option<&str>)> = vec![
        (
            "POST",
            "/v1/chat/completions",
            "{not json".into(),
            400,
            None,
        ),
        ("POST", "/v1/chat/completions", "[1, 2]".into(), 400, None),
        (
            "POST",
            "/v1/chat/completions",
            json!({"messages": []}).to_string(),
            400,
            Some("messages"),
        ),
        (
            "POST",
            "/v1/chat/completions",
            json!({"messages": "hi"}).to_string(),
            400,
            Some("messages"),
        ),
        (
            "POST",
            "/v1/chat/completions",
            json!({"messages": msg("x"), "temperature": -0.5}).to_string(),
            400,
            Some("temperature"),
        ),
        (
            "POST",
            "/v1/chat/completions",
            json!({"messages": msg("x"), "temperature": "warm"}).to_string(),
            400,
            Some("temperature"),
        ),
        (
            "POST",
            "/v1/chat/completions",
            json!({"messages": msg("x"), "top_p": 0}).to_string(),
            400,
            Some("top_p"),
        ),
        (
            "POST",
            "/v1/chat/completions",
            json!({"messages": msg("x"), "max_tokens": 0}).to_string(),
            400,
            Some("max_tokens"),
        ),
        (
            "POST",
            "/v1/chat/completions",
            json!({"messages": msg("x"), "max_tokens": 65}).to_string(),
            400,
            Some("max_tokens"),
        ),
        (
            "POST",
            "/v1/chat/completions",
            json!({"messages": msg("x"), "stream": "yes"}).to_string(),
            400,
            Some("stream"),
        ),
        (
            "POST",
            "/v1/chat/completions",
            json!({"messages": msg("x"), "x_agentcompress": {"precision": "int5"}}).to_string(),
            400,
            Some("x_agentcompress.precision"),
        ),
        // A single-model engine holds only its FP16 variant.
        (
            "POST",
            "/v1/chat/completions",
            json!({"messages": msg("x"), "x_agentcompress": {"precision": "int4"}}).to_string(),
            400,
            Some("x_agentcompress.precision"),
        ),
        (
            "POST",
            "/v1/chat/completions",
            json!({"messages": msg("x"), "n": 3}).to_string(),
            400,
            Some("n"),
        ),
        (
            "POST",
            "/v1/chat/completions",
            json!({"messages": msg("x"), "mystery": 1}).to_string(),
            400,
            Some("mystery"),
        ),
        (
            "POST",
            "/v1/chat/completions",
            json!({"messages": msg(&"a long turn ".repeat(8))}).to_string(),
            400,
            Some("messages"),
        ),
        (
            "POST",
            "/v1/completions",
            json!({"prompt": long_ids}).to_string(),
            400,
            Some("prompt"),
        ),
        (
            "POST",
            "/v1/completions",
            json!({"prompt": [1, 100000]}).to_string(),
            400,
            Some("prompt"),
        ),
        (
            "POST",
            "/v1/completions",
            json!({"prompt": 7}).to_string(),
            400,
            Some("prompt"),
        ),
        (
            "POST",
            "/v1/completions",
            json!({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}).to_string(),
            400,
            Some("stop"),
        ),
        (
            "POST",
            "/v1/completions",
            format!("{{\"prompt\": \"{}\"}}", "x".repeat(4096)),
            413,
            None,
        ),
        ("GET", "/v1/chat/completions", String::new(), 405, None),
        ("DELETE", "/v1/models", String::new(), 405, None),
        ("GET", "/v1/nothing-here", String::new(), 404, None),
    ];
    for (method, path, body, status, param) in cases {
        let r = client::request(&s.addr, method, path, Some(&body)).unwrap();
        assert_eq!(r.status, status, "{method} {path} {body:.80}: {}", r.body);
        let v: Value = serde_json::from_str(&r.body).unwrap_or_else(|e| {
            panic!("{method} {path}: error body {:?} is not JSON: {e}", r.body)
        });
        let err = &v["error"];
        assert!(
            err["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{v}"
        );
        assert!(err["type"].is_string(), "{v}");
        if let Some(p) = param {
            assert_eq!(err["param"], p, "{method} {path} {body:.80}: {v}");
        }
    }
    // The server is still healthy after all of that.
    assert_eq!(s.get("/health").status, 200);
    assert_eq!(s.metric("agentcompress_live_sequences"), 0.0);
}

/// Greedy answers of `prompts` served one at a time, then all at once from `clients`
/// threads; every concurrent answer must equal its lone one, and a step must have batched.
fn concurrent_equals_alone(model: &[&str], prompts: &[&str], tokens: usize) {
    let mut args = vec!["--max-batch", "16", "--step-delay-ms", "5"];
    args.extend_from_slice(model);
    let s = Server::start(&args);
    let body =
        |p: &str| json!({"prompt": p, "max_tokens": tokens, "temperature": 0, "ignore_eos": true});
    let alone: Vec<String> = prompts
        .iter()
        .map(|p| {
            let (status, v) = s.post_json("/v1/completions", &body(p));
            assert_eq!(status, 200, "{v}");
            answer(&v)
        })
        .collect();
    assert_eq!(
        s.metric("agentcompress_batch_rows_max"),
        1.0,
        "served alone"
    );
    let together: Vec<(usize, String)> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..32)
            .map(|i| {
                let (s, body) = (&s, body(prompts[i % prompts.len()]));
                sc.spawn(move || {
                    let (status, v) = s.post_json("/v1/completions", &body);
                    assert_eq!(status, 200, "{v}");
                    (i, answer(&v))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, text) in together {
        assert_eq!(
            text,
            alone[i % prompts.len()],
            "request {i} differs from the same served alone"
        );
    }
    let rows = s.metric("agentcompress_batch_rows_max");
    assert!(rows > 1.0 && rows <= 16.0, "batch rows max {rows}");
}

const STORY_PROMPTS: [&str; 8] = [
    "Once upon a time",
    "Lily and Tom went to the park",
    "The cat sat on the mat and",
    "One day, a bird found a shiny stone",
    "The sun was",
    "Ben had a red ball",
    "There was a little girl",
    "A big dog",
];

#[test]
fn thirty_two_concurrent_requests_equal_each_served_alone_builtin() {
    concurrent_equals_alone(&["--model", TINY], &STORY_PROMPTS, 12);
}

#[test]
fn thirty_two_concurrent_requests_equal_each_served_alone_stories260k() {
    let Some(dir) = common::stories260k_dir() else {
        return;
    };
    let model = dir.join("stories260K.bin");
    concurrent_equals_alone(&["--model", model.to_str().unwrap()], &STORY_PROMPTS, 24);
}

#[test]
fn streams_use_openai_chunks_and_agree_with_whole_answers() {
    let s = Server::start(&["--model", TINY]);
    for (path, object) in [
        ("/v1/chat/completions", "chat.completion.chunk"),
        ("/v1/completions", "text_completion"),
    ] {
        let mut body = if path.contains("chat") {
            chat_body("Tell me a story", 10)
        } else {
            json!({"prompt": "Tell me a story", "max_tokens": 10, "temperature": 0})
        };
        body["ignore_eos"] = json!(true);
        let (status, whole) = s.post_json(path, &body);
        assert_eq!(status, 200, "{whole}");
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
        let st = s.stream(path, &body);
        assert_eq!(st.status, 200);
        assert_eq!(st.header("content-type"), Some("text/event-stream"));
        let route: Value =
            serde_json::from_str(st.header("x-agentcompress-route").unwrap()).unwrap();
        let chunks = read_stream(st);
        assert!(chunks.len() >= 3, "{chunks:?}");
        let id = &chunks[0]["id"];
        assert!(
            chunks
                .iter()
                .all(|c| c["id"] == *id && c["object"] == object),
            "{chunks:?}"
        );
        assert_eq!(chunks[0]["x_agentcompress"], route);
        if path.contains("chat") {
            assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        }
        let (usage, rest) = chunks.split_last().unwrap();
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"], whole["usage"]);
        let last = rest.last().unwrap();
        assert_eq!(last["choices"][0]["finish_reason"], "length");
        assert!(rest[..rest.len() - 1]
            .iter()
            .all(|c| c["choices"][0]["finish_reason"].is_null()));
        assert_eq!(streamed_text(rest), answer(&whole), "{path}");
    }
}

#[test]
fn stop_strings_end_the_answer_before_them() {
    // stories260K writes varied text, so the stop string falls mid-answer; the tiny synthetic
    // model (when the shared models are absent) tends to repeat one character.
    let stories = common::models_dir()
        .map(|d| d.join("stories260K/stories260K.bin"))
        .filter(|p| p.is_file());
    let model = stories.as_deref().map_or(TINY, |p| p.to_str().unwrap());
    let s = Server::start(&["--model", model]);
    let mut body =
        json!({"prompt": "The end", "max_tokens": 24, "temperature": 0, "ignore_eos": true});
    let (_, v) = s.post_json("/v1/completions", &body);
    let full = answer(&v);
    let chars: Vec<char> = full.chars().collect();
    assert!(chars.len() >= 12, "{full:?}");
    let stop: String = chars[8..10].iter().collect();
    let want = &full[..full.find(&stop).unwrap()];
    body["stop"] = json!([stop]);
    let (status, v) = s.post_json("/v1/completions", &body);
    assert_eq!(status, 200, "{v}");
    assert_eq!(answer(&v), want);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    body["stream"] = json!(true);
    let chunks = read_stream(s.stream("/v1/completions", &body));
    assert_eq!(streamed_text(&chunks), want);
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
}

fn slow_stream_body(tokens: usize) -> Value {
    json!({"prompt": "Slowly", "max_tokens": tokens, "temperature": 0, "ignore_eos": true,
           "stream": true})
}

#[test]
fn a_full_queue_answers_429_with_retry_after() {
    let s = Server::start(&[
        "--model",
        TINY,
        "--max-queue",
        "1",
        "--max-batch",
        "1",
        "--step-delay-ms",
        "20",
    ]);
    // One request decodes (the batch is full) ...
    let mut running = s.stream("/v1/completions", &slow_stream_body(400));
    assert_eq!(running.status, 200);
    running.next_event().unwrap();
    // ... one waits in the queue ...
    let waiting = std::thread::scope(|sc| {
        let w = sc.spawn(|| {
            s.post_json(
                "/v1/completions",
                &json!({"prompt": "Next", "max_tokens": 2, "temperature": 0}),
            )
        });
        s.wait_for("a queued request", Duration::from_secs(20), |s| {
            s.metric("agentcompress_queue_depth") == 1.0
        });
        // ... so the next is refused at once.
        let r = s.post(
            "/v1/completions",
            &json!({"prompt": "More", "max_tokens": 2}).to_string(),
        );
        assert_eq!(r.status, 429, "{}", r.body);
        assert_eq!(r.header("retry-after"), Some("1"));
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["error"]["code"], "queue_full");
        // Leaving frees the batch for the waiting request.
        drop(running);
        w.join().unwrap()
    });
    assert_eq!(waiting.0, 200, "{}", waiting.1);
}

#[test]
fn a_client_that_disconnects_cancels_its_generation() {
    let s = Server::start(&["--model", TINY, "--step-delay-ms", "20"]);
    let mut st = s.stream("/v1/completions", &slow_stream_body(400));
    st.next_event().unwrap();
    st.next_event().unwrap();
    assert_eq!(s.metric("agentcompress_live_sequences"), 1.0);
    drop(st);
    s.wait_for("the cancel", Duration::from_secs(20), |s| {
        s.metric("agentcompress_cancelled_total{reason=\"disconnect\"}") == 1.0
            && s.metric("agentcompress_live_sequences") == 0.0
    });
    let done = s.metric("agentcompress_completion_tokens_total");
    assert!(
        done < 400.0,
        "generation went on after the disconnect ({done} tokens)"
    );
}

#[test]
fn timeouts_give_408_or_cut_the_stream() {
    let s = Server::start(&["--model", TINY, "--step-delay-ms", "20", "--timeout", "0.5"]);
    let (status, v) = s.post_json(
        "/v1/completions",
        &json!({"prompt": "Slowly", "max_tokens": 400, "temperature": 0, "ignore_eos": true}),
    );
    assert_eq!(status, 408, "{v}");
    assert_eq!(v["error"]["code"], "timeout");
    let chunks = read_stream(s.stream("/v1/completions", &slow_stream_body(400)));
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "length");
    assert_eq!(last["x_agentcompress"]["cut_short"], "timeout");
    assert_eq!(
        s.metric("agentcompress_cancelled_total{reason=\"timeout\"}"),
        2.0
    );
}

#[test]
fn sigterm_lets_in_flight_requests_finish_then_exits() {
    let mut s = Server::start(&["--model", TINY, "--step-delay-ms", "10"]);
    let mut st = s.stream("/v1/completions", &slow_stream_body(60));
    st.next_event().unwrap();
    s.signal_term();
    let mut rest = vec![];
    while let Some(d) = st.next_event().unwrap() {
        rest.push(d);
    }
    assert_eq!(rest.last().map(String::as_str), Some("[DONE]"));
    let last: Value = serde_json::from_str(&rest[rest.len() - 2]).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "length");
    assert!(
        last["x_agentcompress"].is_null(),
        "finished, not cut: {last}"
    );
    assert!(s.wait_exit(Duration::from_secs(20)).success());
    assert!(
        std::net::TcpStream::connect(&s.addr).is_err(),
        "still accepting"
    );
}

#[test]
fn sigterm_cancels_what_outlives_the_grace() {
    let mut s = Server::start(&[
        "--model",
        TINY,
        "--step-delay-ms",
        "20",
        "--shutdown-grace",
        "0.3",
    ]);
    // About eight seconds of decoding: far beyond the grace.
    let mut st = s.stream("/v1/completions", &slow_stream_body(400));
    assert_eq!(st.status, 200);
    st.next_event().unwrap();
    s.signal_term();
    let mut chunks = vec![];
    while let Some(d) = st.next_event().unwrap() {
        chunks.push(d);
    }
    let last: Value = serde_json::from_str(&chunks[chunks.len() - 2]).unwrap();
    assert_eq!(last["x_agentcompress"]["cut_short"], "shutdown", "{last}");
    assert!(s.wait_exit(Duration::from_secs(20)).success());
}

#[test]
fn a_request_pins_a_variant_of_a_variant_directory() {
    let Some(root) = common::stories260k_dir() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    common::build_stories_variants(&root, dir.path());
    let s = Server::start(&[
        "--model",
        dir.path().to_str().unwrap(),
        "--step-delay-ms",
        "5",
    ]);
    let body = |pin: Option<&str>| {
        let mut b = json!({"prompt": "Once upon a time", "max_tokens": 16, "temperature": 0,
                           "ignore_eos": true});
        if let Some(p) = pin {
            b["x_agentcompress"] = json!({"precision": p});
        }
        b
    };
    // Unpinned, a directory without a trained router serves its fallback (FP16).
    let (status, plain) = s.post_json("/v1/completions", &body(None));
    assert_eq!(status, 200, "{plain}");
    assert_eq!(plain["x_agentcompress"]["precision"], "fp16");
    let (status, pinned) = s.post_json("/v1/completions", &body(Some("int4")));
    assert_eq!(status, 200, "{pinned}");
    assert_eq!(pinned["x_agentcompress"]["precision"], "int4");
    assert!(pinned["x_agentcompress"]["reasons"]
        .to_string()
        .contains("pinned"));
    // Both at once: each decodes on its own variant, and each answer is the one served alone.
    let both: Vec<Value> = std::thread::scope(|sc| {
        let hs: Vec<_> = [None, Some("int4"), None, Some("int4")]
            .into_iter()
            .map(|p| {
                let (s, b) = (&s, body(p));
                sc.spawn(move || s.post_json("/v1/completions", &b).1)
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, v) in both.iter().enumerate() {
        let alone = if i % 2 == 0 { &plain } else { &pinned };
        assert_eq!(answer(v), answer(alone), "request {i}");
    }
    assert_eq!(
        s.metric("agentcompress_tasks_total{precision=\"int4\"}"),
        3.0
    );
    assert_eq!(
        s.metric("agentcompress_tasks_total{precision=\"fp16\"}"),
        3.0
    );
}

#[test]
fn smollm2_chat_uses_the_model_template() {
    let Some(dir) = common::shared_model("smollm2-135m-instruct") else {
        return;
    };
    let gguf = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let s = Server::start(&["--model", gguf.to_str().unwrap()]);
    let messages = [
        ("system", "You are brief."),
        ("user", "What is the capital of France?"),
    ];
    let engine = agentcompress::Engine::builder(&gguf)
        .device(agentcompress::Device::Cpu)
        .build()
        .unwrap();
    let ids = engine
        .encode_chat(
            &messages
                .iter()
                .map(|(r, c)| agentcompress::api::ChatMessage::new(*r, *c))
                .collect::<Vec<_>>(),
        )
        .unwrap();
    let body = json!({
        "messages": messages.iter().map(|(r, c)| json!({"role": r, "content": c})).collect::<Vec<_>>(),
        "max_tokens": 12,
        "temperature": 0,
    });
    let (status, v) = s.post_json("/v1/chat/completions", &body);
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["usage"]["prompt_tokens"],
        ids.len(),
        "the template's rendering was used"
    );
    assert!(!answer(&v).is_empty());
    assert!(!v["x_agentcompress"]["reasons"]
        .to_string()
        .contains("no chat template"));
}

#[test]
fn the_openai_python_client_works_against_the_server() {
    let has_openai = Command::new("python3")
        .args(["-c", "import openai"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_openai {
        eprintln!(
            "skipped: the openai Python package is not installed (python3 -m pip install openai)"
        );
        return;
    }
    let s = Server::start(&["--model", TINY]);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/serve_openai_client.py"
    );
    let out = Command::new("python3")
        .args([script, &format!("http://{}", s.addr)])
        .output()
        .expect("run the openai client script");
    assert!(
        out.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_flags_and_models_fail_at_start_naming_them() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_agentcompress"))
            .arg("serve")
            .args(args)
            .output()
            .expect("run serve");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for (args, named) in [
        (&["--model", TINY, "--max-batch", "0"][..], "--max-batch"),
        (&["--model", TINY, "--max-queue", "-1"][..], "--max-queue"),
        (&["--model", TINY, "--timeout", "0"][..], "--timeout"),
        (&["--model", TINY, "--port", "70000"][..], "--port"),
        (&["--model", "builtin:nothing"][..], "builtin:nothing"),
        (&["--model", "/no/such/model.bin"][..], "/no/such/model.bin"),
    ] {
        let (ok, err) = run(args);
        assert!(!ok, "{args:?} started");
        assert!(err.contains(named), "{args:?}: {err}");
    }
    // A port that is taken is an error naming the address, not a hang.
    let s = Server::start(&["--model", TINY]);
    let port = s.addr.rsplit(':').next().unwrap();
    let (ok, err) = run(&["--model", TINY, "--port", port, "--device", "cpu"]);
    assert!(!ok && err.contains(&s.addr), "{err}");
}
