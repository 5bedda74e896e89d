//! The OpenAI wire format: parsing chat and completion requests into checked values (every bad
//! value a 400 naming its parameter) and building responses and stream chunks.

use super::errors::ApiError;
use agentcompress::api::{ChatMessage, Precision, Route};
use serde_json::{json, Map, Value};

/// Which endpoint a request came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/chat/completions`.
    Chat,
    /// `POST /v1/completions`.
    Completion,
}

impl Endpoint {
    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat_completions",
            Endpoint::Completion => "completions",
        }
    }
}

/// What the model is asked to continue.
#[derive(Debug, Clone)]
pub enum Prompt {
    /// Chat messages, rendered with the model's chat template.
    Chat(Vec<ChatMessage>),
    /// A text prompt.
    Text(String),
    /// A prompt already encoded as token ids.
    Ids(Vec<u32>),
}

/// A parsed request: the prompt and the sampling and routing parameters.
#[derive(Debug, Clone)]
pub struct Request {
    /// What to continue.
    pub prompt: Prompt,
    /// `max_tokens` (or `max_completion_tokens`); `None`: up to the context.
    pub max_tokens: Option<usize>,
    /// Sampling temperature (OpenAI's default 1; 0 is greedy).
    pub temperature: f32,
    /// Nucleus threshold in (0, 1].
    pub top_p: f32,
    /// Sampler seed; `None` picks one per request.
    pub seed: Option<u64>,
    /// Strings that end the generation (not included in the output).
    pub stop: Vec<String>,
    /// Server-sent events instead of one JSON response.
    pub stream: bool,
    /// `stream_options.include_usage`: a last chunk with the token counts.
    pub include_usage: bool,
    /// Keep generating past end-of-sequence (as vLLM's `ignore_eos`).
    pub ignore_eos: bool,
    /// `x_agentcompress.precision`: serve on this variant.
    pub precision: Option<Precision>,
    /// `x_agentcompress.quality_target`: the router's quality target for this request.
    pub quality_target: Option<f32>,
}

/// Most stop strings a request may carry (OpenAI's limit).
const MAX_STOPS: usize = 4;

/// Fields accepted on both endpoints.
const COMMON_FIELDS: &[&str] = &[
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "seed",
    "stop",
    "stream",
    "stream_options",
    "n",
    "user",
    "x_agentcompress",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "ignore_eos",
    "metadata",
    "store",
    "service_tier",
];
/// Fields only the chat endpoint accepts.
const CHAT_FIELDS: &[&str] = &[
    "messages",
    "max_completion_tokens",
    "top_logprobs",
    "tools",
    "tool_choice",
    "functions",
    "function_call",
    "parallel_tool_calls",
    "response_format",
];
/// Fields only the completions endpoint accepts.
const COMPLETION_FIELDS: &[&str] = &["prompt", "echo", "best_of", "suffix"];

/// A JSON object's fields, read with errors that name the parameter.
struct Fields<'a>(&'a Map<String, Value>);

fn type_error(param: &str, want: &str) -> ApiError {
    ApiError::invalid(format!("'{param}' must be {want}"), Some(param))
}

impl Fields<'_> {
    /// The field, with `null` read as absent.
    fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    fn number(&self, key: &str) -> Result<Option<f64>, ApiError> {
        self.get(key)
            .map(|v| v.as_f64().ok_or_else(|| type_error(key, "a number")))
            .transpose()
    }

    fn whole(&self, key: &str) -> Result<Option<u64>, ApiError> {
        self.get(key)
            .map(|v| {
                v.as_u64()
                    .ok_or_else(|| type_error(key, "a whole number >= 0"))
            })
            .transpose()
    }

    fn boolean(&self, key: &str) -> Result<Option<bool>, ApiError> {
        self.get(key)
            .map(|v| v.as_bool().ok_or_else(|| type_error(key, "true or false")))
            .transpose()
    }

    fn string(&self, key: &str) -> Result<Option<&str>, ApiError> {
        self.get(key)
            .map(|v| v.as_str().ok_or_else(|| type_error(key, "a string")))
            .transpose()
    }

    fn object(&self, key: &str) -> Result<Option<Fields<'_>>, ApiError> {
        self.get(key)
            .map(|v| {
                v.as_object()
                    .map(Fields)
                    .ok_or_else(|| type_error(key, "an object"))
            })
            .transpose()
    }
}

/// Parses a request body for `endpoint`.
pub fn parse(body: &[u8], endpoint: Endpoint) -> Result<Request, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("the body is not valid JSON: {e}"), None))?;
    let obj = value
        .as_object()
        .ok_or_else(|| ApiError::invalid("the body must be a JSON object", None))?;
    let own = match endpoint {
        Endpoint::Chat => CHAT_FIELDS,
        Endpoint::Completion => COMPLETION_FIELDS,
    };
    if let Some(k) = obj
        .keys()
        .find(|k| !COMMON_FIELDS.contains(&k.as_str()) && !own.contains(&k.as_str()))
    {
        return Err(ApiError::invalid(
            format!("unrecognized request argument supplied: {k}"),
            Some(k),
        ));
    }
    let f = Fields(obj);
    reject_unsupported(&f, endpoint)?;
    let prompt = match endpoint {
        Endpoint::Chat => Prompt::Chat(messages(&f)?),
        Endpoint::Completion => prompt(&f)?,
    };
    let max_key = match endpoint {
        Endpoint::Chat if f.get("max_completion_tokens").is_some() => "max_completion_tokens",
        _ => "max_tokens",
    };
    let max_tokens = f.whole(max_key)?;
    if max_tokens == Some(0) {
        return Err(ApiError::invalid(
            format!("'{max_key}' must be at least 1"),
            Some(max_key),
        ));
    }
    let temperature = f.number("temperature")?.unwrap_or(1.0);
    if !(temperature.is_finite() && temperature >= 0.0) {
        return Err(ApiError::invalid(
            format!("'temperature' is {temperature}; it must be >= 0"),
            Some("temperature"),
        ));
    }
    let top_p = f.number("top_p")?.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::invalid(
            format!("'top_p' is {top_p}; it must be in (0, 1]"),
            Some("top_p"),
        ));
    }
    let include_usage = match f.object("stream_options")? {
        Some(o) => o.boolean("include_usage")?.unwrap_or(false),
        None => false,
    };
    let (precision, quality_target) = extension(&f)?;
    // Any model name is served by the one model (clients must send one), but it must be text.
    f.string("model")?;
    Ok(Request {
        prompt,
        max_tokens: max_tokens.map(|m| usize::try_from(m).unwrap_or(usize::MAX)),
        temperature: temperature as f32,
        top_p: top_p as f32,
        seed: f.whole("seed")?,
        stop: stop(&f)?,
        stream: f.boolean("stream")?.unwrap_or(false),
        include_usage,
        ignore_eos: f.boolean("ignore_eos")?.unwrap_or(false),
        precision,
        quality_target,
    })
}

/// Fields that would change the answer in ways this server does not do: rejected rather than
/// silently ignored (ignoring `tools` would make an agent believe the model saw them).
fn reject_unsupported(f: &Fields<'_>, endpoint: Endpoint) -> Result<(), ApiError> {
    let unsupported = |param: &str, what: &str| {
        Err(ApiError::invalid(
            format!("'{param}': {what} is not supported by this server"),
            Some(param),
        ))
    };
    if f.whole("n")?.is_some_and(|n| n != 1) {
        return unsupported("n", "more than one choice per request");
    }
    for p in ["presence_penalty", "frequency_penalty"] {
        if f.number(p)?.is_some_and(|v| v != 0.0) {
            return unsupported(p, "a non-zero penalty");
        }
    }
    if f.object("logit_bias")?.is_some_and(|o| !o.0.is_empty()) {
        return unsupported("logit_bias", "a logit bias");
    }
    match (endpoint, f.get("logprobs")) {
        (_, None) | (Endpoint::Chat, Some(Value::Bool(false))) => {}
        _ => return unsupported("logprobs", "returning log probabilities"),
    }
    if f.whole("top_logprobs")?.is_some_and(|n| n > 0) {
        return unsupported("top_logprobs", "returning log probabilities");
    }
    for p in ["tools", "functions"] {
        match f.get(p) {
            None => {}
            Some(Value::Array(a)) if a.is_empty() => {}
            Some(_) => return unsupported(p, "tool and function calling"),
        }
    }
    for p in ["tool_choice", "function_call"] {
        match f.get(p) {
            None => {}
            Some(Value::String(s)) if s == "none" || s == "auto" => {}
            Some(_) => return unsupported(p, "forcing a tool call"),
        }
    }
    if let Some(rf) = f.object("response_format")? {
        if rf.string("type")? != Some("text") {
            return unsupported("response_format", "a response format other than text");
        }
    }
    if f.boolean("echo")? == Some(true) {
        return unsupported("echo", "echoing the prompt");
    }
    if f.whole("best_of")?.is_some_and(|n| n != 1) {
        return unsupported("best_of", "best-of sampling");
    }
    if f.string("suffix")?.is_some_and(|s| !s.is_empty()) {
        return unsupported("suffix", "a suffix (insertion)");
    }
    Ok(())
}

/// The chat messages: a non-empty array of `{role, content}` with text content.
fn messages(f: &Fields<'_>) -> Result<Vec<ChatMessage>, ApiError> {
    let arr = f
        .get("messages")
        .ok_or_else(|| ApiError::invalid("'messages' is required", Some("messages")))?
        .as_array()
        .ok_or_else(|| type_error("messages", "an array of messages"))?;
    if arr.is_empty() {
        return Err(ApiError::invalid(
            "'messages' is empty: at least one message is needed",
            Some("messages"),
        ));
    }
    arr.iter()
        .enumerate()
        .map(|(i, m)| {
            let here = format!("messages[{i}]");
            let m = Fields(
                m.as_object()
                    .ok_or_else(|| type_error(&here, "an object with role and content"))?,
            );
            let role = m
                .string("role")
                .map_err(|_| type_error(&format!("{here}.role"), "a string"))?
                .ok_or_else(|| {
                    ApiError::invalid(format!("'{here}.role' is required"), Some(here.as_str()))
                })?;
            let role = match role {
                "system" | "user" | "assistant" | "tool" => role,
                // OpenAI's newer name for the system turn.
                "developer" => "system",
                other => {
                    return Err(ApiError::invalid(
                        format!(
                            "'{here}.role' is '{other}'; expected system, developer, user, \
                             assistant or tool"
                        ),
                        Some(format!("{here}.role").as_str()),
                    ))
                }
            };
            Ok(ChatMessage::new(role, content(m.get("content"), &here)?))
        })
        .collect()
}

/// A message's content: a string, `null` (an assistant turn that only called tools) or an
/// array of text parts.
fn content(v: Option<&Value>, here: &str) -> Result<String, ApiError> {
    let param = format!("{here}.content");
    match v {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for p in parts {
                let p = p
                    .as_object()
                    .map(Fields)
                    .ok_or_else(|| type_error(&param, "a string or an array of parts"))?;
                match (p.string("type"), p.string("text")) {
                    (Ok(Some("text")), Ok(Some(t))) => text.push_str(t),
                    _ => {
                        return Err(ApiError::invalid(
                            format!("'{param}': only text parts are supported"),
                            Some(param.as_str()),
                        ))
                    }
                }
            }
            Ok(text)
        }
        Some(_) => Err(type_error(&param, "a string or an array of text parts")),
    }
}

/// The completions prompt: a string, an array of one string, or an array of token ids.
fn prompt(f: &Fields<'_>) -> Result<Prompt, ApiError> {
    let bad = || type_error("prompt", "a string, or an array of token ids");
    match f.get("prompt") {
        None => Err(ApiError::invalid("'prompt' is required", Some("prompt"))),
        Some(Value::String(s)) => Ok(Prompt::Text(s.clone())),
        Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
            Ok(Prompt::Text(a[0].as_str().unwrap_or_default().to_string()))
        }
        Some(Value::Array(a)) if a.iter().all(Value::is_string) && !a.is_empty() => {
            Err(ApiError::invalid(
                "'prompt': one prompt per request is supported, not a batch",
                Some("prompt"),
            ))
        }
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(|v| {
                v.as_u64()
                    .and_then(|i| u32::try_from(i).ok())
                    .ok_or_else(bad)
            })
            .collect::<Result<_, _>>()
            .map(Prompt::Ids),
        Some(_) => Err(bad()),
    }
}

/// `stop`: a string or an array of up to four non-empty strings.
fn stop(f: &Fields<'_>) -> Result<Vec<String>, ApiError> {
    let list = match f.get("stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| type_error("stop", "a string or an array of strings"))?,
        Some(_) => return Err(type_error("stop", "a string or an array of strings")),
    };
    if list.len() > MAX_STOPS {
        return Err(ApiError::invalid(
            format!(
                "'stop' has {} strings; at most {MAX_STOPS} are allowed",
                list.len()
            ),
            Some("stop"),
        ));
    }
    if list.iter().any(String::is_empty) {
        return Err(ApiError::invalid(
            "'stop' strings must not be empty",
            Some("stop"),
        ));
    }
    Ok(list)
}

/// `x_agentcompress`: `{"precision": "int4", "quality_target": 0.9}`, both optional.
fn extension(f: &Fields<'_>) -> Result<(Option<Precision>, Option<f32>), ApiError> {
    let Some(x) = f.object("x_agentcompress")? else {
        return Ok((None, None));
    };
    if let Some(k) =
        x.0.keys()
            .find(|k| *k != "precision" && *k != "quality_target")
    {
        return Err(ApiError::invalid(
            format!("'x_agentcompress.{k}' is unknown; expected precision or quality_target"),
            Some(format!("x_agentcompress.{k}").as_str()),
        ));
    }
    let param = "x_agentcompress.precision";
    let precision = x
        .string("precision")
        .map_err(|_| type_error(param, "a string"))?
        .map(|s| {
            s.parse::<Precision>()
                .map_err(|e| ApiError::invalid(e.to_string(), Some(param)))
        })
        .transpose()?;
    let param = "x_agentcompress.quality_target";
    let target = x
        .number("quality_target")
        .map_err(|_| type_error(param, "a number"))?;
    if let Some(t) = target {
        if !(0.0..=1.0).contains(&t) {
            return Err(ApiError::invalid(
                format!("'{param}' is {t}; it must be in [0, 1]"),
                Some(param),
            ));
        }
    }
    Ok((precision, target.map(|t| t as f32)))
}

/// A route as the response's `x_agentcompress` field and header show it.
pub fn route_json(route: &Route) -> Value {
    json!({
        "precision": route.precision,
        "complexity": route.complexity,
        "expected_cost": route.expected_cost,
        "swap": route.swap,
        "reasons": route.reasons,
    })
}

/// `route_json` as a header value: compact JSON with every non-ASCII character escaped
/// (`\uXXXX`, valid JSON), since header values are ASCII.
pub fn route_header(route: &Value) -> String {
    let mut out = String::new();
    for c in route.to_string().chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

/// Token counts in OpenAI's `usage` shape.
pub fn usage(prompt: usize, completion: usize) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    })
}

/// Names a response the same way across its chunks.
#[derive(Debug, Clone)]
pub struct ResponseMeta {
    /// `chatcmpl-...` or `cmpl-...`.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// The model id.
    pub model: String,
    /// Which endpoint (chat or text shapes).
    pub endpoint: Endpoint,
    /// The route, as [`route_json`] writes it.
    pub route: Value,
}

impl ResponseMeta {
    /// A whole (non-streamed) response.
    pub fn response(&self, text: &str, finish: &str, usage: Value) -> Value {
        let choice = match self.endpoint {
            Endpoint::Chat => json!({
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": null,
                "finish_reason": finish,
            }),
            Endpoint::Completion => json!({
                "index": 0,
                "text": text,
                "logprobs": null,
                "finish_reason": finish,
            }),
        };
        json!({
            "id": self.id,
            "object": self.object(false),
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": usage,
            "x_agentcompress": self.route,
        })
    }

    /// One stream chunk: the first carries the assistant role (chat) and the route, the last
    /// the finish reason.
    pub fn chunk(&self, text: &str, first: bool, finish: Option<&str>) -> Value {
        let choice = match self.endpoint {
            Endpoint::Chat => {
                let mut delta = Map::new();
                if first {
                    delta.insert("role".into(), "assistant".into());
                }
                if !text.is_empty() || (first && finish.is_none()) {
                    delta.insert("content".into(), text.into());
                }
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
            }
            Endpoint::Completion => {
                json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish})
            }
        };
        let mut c = json!({
            "id": self.id,
            "object": self.object(true),
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        });
        if first {
            c["x_agentcompress"] = self.route.clone();
        }
        c
    }

    /// The chunk after the last that `stream_options.include_usage` asks for: no choices.
    pub fn usage_chunk(&self, usage: Value) -> Value {
        json!({
            "id": self.id,
            "object": self.object(true),
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage,
        })
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.endpoint, chunk) {
            (Endpoint::Chat, false) => "chat.completion",
            (Endpoint::Chat, true) => "chat.completion.chunk",
            (Endpoint::Completion, _) => "text_completion",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: &str) -> Result<Request, ApiError> {
        parse(body.as_bytes(), Endpoint::Chat)
    }

    fn param_of(r: Result<Request, ApiError>) -> Option<String> {
        r.err().and_then(|e| e.param)
    }

    #[test]
    fn a_full_chat_request_parses() {
        let r = chat(
            r#"{"model":"m","messages":[{"role":"developer","content":"be brief"},
            {"role":"user","content":[{"type":"text","text":"hi"}]}],"max_tokens":5,
            "temperature":0,"top_p":0.5,"seed":3,"stop":["\n"],"stream":true,
            "stream_options":{"include_usage":true},"x_agentcompress":{"precision":"int4",
            "quality_target":0.9}}"#,
        )
        .unwrap();
        let Prompt::Chat(m) = &r.prompt else { panic!() };
        assert_eq!(
            (m[0].role.as_str(), m[1].content.as_str()),
            ("system", "hi")
        );
        assert_eq!(
            (r.max_tokens, r.temperature, r.top_p, r.seed),
            (Some(5), 0.0, 0.5, Some(3))
        );
        assert!(r.stream && r.include_usage && r.stop == ["\n"]);
        assert_eq!(
            (r.precision, r.quality_target),
            (Some(Precision::Int4), Some(0.9))
        );
    }

    #[test]
    fn bad_values_name_their_parameter() {
        let m = r#""messages":[{"role":"user","content":"x"}]"#;
        let cases = [
            (format!("{{{m},\"temperature\":-1}}"), "temperature"),
            (format!("{{{m},\"temperature\":\"hot\"}}"), "temperature"),
            (format!("{{{m},\"top_p\":0}}"), "top_p"),
            (format!("{{{m},\"top_p\":1.5}}"), "top_p"),
            (format!("{{{m},\"max_tokens\":0}}"), "max_tokens"),
            (format!("{{{m},\"max_tokens\":-3}}"), "max_tokens"),
            (format!("{{{m},\"stop\":[\"\"]}}"), "stop"),
            (
                format!("{{{m},\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}}"),
                "stop",
            ),
            (format!("{{{m},\"n\":2}}"), "n"),
            (
                format!("{{{m},\"tools\":[{{\"type\":\"function\"}}]}}"),
                "tools",
            ),
            (format!("{{{m},\"bogus\":1}}"), "bogus"),
            (
                format!("{{{m},\"x_agentcompress\":{{\"precision\":\"int3\"}}}}"),
                "x_agentcompress.precision",
            ),
            (
                format!("{{{m},\"x_agentcompress\":{{\"quality_target\":2}}}}"),
                "x_agentcompress.quality_target",
            ),
            (r#"{"messages":[]}"#.to_string(), "messages"),
            (r#"{"messages":"hi"}"#.to_string(), "messages"),
            (
                r#"{"messages":[{"role":"wizard","content":"x"}]}"#.to_string(),
                "messages[0].role",
            ),
            (
                r#"{"messages":[{"role":"user","content":5}]}"#.to_string(),
                "messages[0].content",
            ),
        ];
        for (body, param) in cases {
            assert_eq!(param_of(chat(&body)).as_deref(), Some(param), "{body}");
        }
        assert!(chat("{not json").unwrap_err().message.contains("JSON"));
        assert!(chat("[1]").is_err());
    }

    #[test]
    fn completion_prompts_take_text_or_ids() {
        let p = |b: &str| parse(b.as_bytes(), Endpoint::Completion).map(|r| r.prompt);
        assert!(matches!(p(r#"{"prompt":"hi"}"#), Ok(Prompt::Text(t)) if t == "hi"));
        assert!(matches!(p(r#"{"prompt":["hi"]}"#), Ok(Prompt::Text(t)) if t == "hi"));
        assert!(matches!(p(r#"{"prompt":[1,2]}"#), Ok(Prompt::Ids(v)) if v == [1, 2]));
        assert!(p(r#"{"prompt":["a","b"]}"#).is_err());
        assert!(p(r#"{"prompt":[-1]}"#).is_err());
        assert!(p(r#"{"messages":[]}"#).is_err());
    }

    #[test]
    fn route_header_is_ascii_json() {
        let v = json!({"reasons": ["q ≥ 0.9 → int4"]});
        let h = route_header(&v);
        assert!(h.is_ascii());
        assert_eq!(serde_json::from_str::<Value>(&h).unwrap(), v);
    }

    #[test]
    fn chunks_carry_role_first_and_finish_last() {
        let meta = ResponseMeta {
            id: "chatcmpl-1".into(),
            created: 1,
            model: "m".into(),
            endpoint: Endpoint::Chat,
            route: json!({"precision": "fp16"}),
        };
        let first = meta.chunk("", true, None);
        assert_eq!(first["object"], "chat.completion.chunk");
        assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(first["x_agentcompress"]["precision"], "fp16");
        let last = meta.chunk("", false, Some("stop"));
        assert_eq!(last["choices"][0]["finish_reason"], "stop");
        assert!(last["choices"][0]["delta"].as_object().unwrap().is_empty());
    }
}
