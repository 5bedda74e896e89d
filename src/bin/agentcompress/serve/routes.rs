//! The HTTP routes and their handlers. Parsing and tokenizing happen here (tokenizing and
//! routing on the blocking pool: they are engine work); generation is the scheduler's.

use super::errors::ApiError;
use super::metrics::Metrics;
use super::openai::{self, route_header, route_json, usage, Endpoint, Prompt, ResponseMeta};
use super::scheduler::{shutdown_error, timeout_error, Event, Finish, Handle, Job};
use super::sse::SseBody;
use agentcompress::api::{
    routing_text, ChatMessage, Engine, GenerateParams, Route, SamplingParams,
};
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The response header that carries the route as compact JSON.
pub const ROUTE_HEADER: &str = "x-agentcompress-route";

/// What every handler shares.
pub struct AppState {
    /// The engine (tokenizing, routing, statistics).
    pub engine: Arc<Engine>,
    /// The scheduler's queue.
    pub scheduler: Handle,
    /// Server metrics.
    pub metrics: Arc<Metrics>,
    /// The model id `/v1/models` lists and responses name.
    pub model_id: String,
    /// Most tokens a sequence may hold, prompt included.
    pub context: usize,
    /// How long a request may take from arrival to its last token.
    pub timeout: Duration,
    /// When the server started (Unix seconds).
    pub started: u64,
    /// Set on shutdown: new requests are refused with 503.
    pub draining: AtomicBool,
    /// Numbers response ids and default seeds.
    pub next_id: AtomicU64,
}

/// The application's routes over `state`, refusing bodies over `max_body` bytes.
pub fn router(state: Arc<AppState>, max_body: usize) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn chat(State(st): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    respond(st, body, Endpoint::Chat).await
}

async fn completions(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(st, body, Endpoint::Completion).await
}

async fn respond(
    st: Arc<AppState>,
    body: Result<Bytes, BytesRejection>,
    endpoint: Endpoint,
) -> Response {
    let resp = generate(&st, body, endpoint)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    st.metrics.request(endpoint.label(), resp.status().as_u16());
    resp
}

/// A request ready for the scheduler.
struct Prepared {
    ids: Vec<u32>,
    route: Route,
    params: GenerateParams,
    prompt_param: &'static str,
}

/// Tokenizes and routes a parsed request (blocking: engine work).
fn prepare(st: &AppState, req: &openai::Request, seed: u64) -> Result<Prepared, ApiError> {
    let engine = st.engine.as_ref();
    let (ids, route_ids, prompt_param, mut extra_reason) = match &req.prompt {
        Prompt::Chat(m) => {
            let (ids, reason) = encode_chat(engine, m)?;
            // As `Engine::chat` routes: on the last user message, not on the system prompt.
            let route_ids = match routing_text(m) {
                Some(task) => engine
                    .encode(task)
                    .map_err(|e| ApiError::from_engine(&e, Some("messages")))?,
                None => ids.clone(),
            };
            (ids, Some(route_ids), "messages", reason)
        }
        Prompt::Text(t) => (
            engine
                .encode(t)
                .map_err(|e| ApiError::from_engine(&e, Some("prompt")))?,
            None,
            "prompt",
            None,
        ),
        Prompt::Ids(ids) => (ids.clone(), None, "prompt", None),
    };
    let max_key = "max_tokens";
    let max_new_tokens = match req.max_tokens {
        Some(m) if m > st.context => {
            return Err(ApiError::invalid(
                format!(
                    "'{max_key}' is {m} but a sequence holds at most {} tokens, prompt included",
                    st.context
                ),
                Some(max_key),
            ))
        }
        Some(m) => m,
        // OpenAI's default: as much as the context leaves (at least one, so an over-long
        // prompt meets the engine's own check).
        None => st.context.saturating_sub(ids.len()).max(1),
    };
    let route = match req.precision {
        Some(p) => engine
            .pinned_route(p)
            .map_err(|e| ApiError::from_engine(&e, Some("x_agentcompress.precision")))?,
        None => engine
            .route_ids(route_ids.as_deref().unwrap_or(&ids), req.quality_target)
            .map_err(|e| ApiError::from_engine(&e, Some(prompt_param)))?,
    };
    let mut route = route;
    route.reasons.extend(extra_reason.take());
    let params = GenerateParams {
        max_new_tokens,
        sampling: SamplingParams {
            temperature: req.temperature,
            top_p: req.top_p,
            seed: req.seed.unwrap_or(seed),
        },
        stop_at_eos: !req.ignore_eos,
        context: st.context,
        ..GenerateParams::default()
    };
    params
        .sampling
        .validate()
        .map_err(|e| ApiError::from_engine(&e, None))?;
    Ok(Prepared {
        ids,
        route,
        params,
        prompt_param,
    })
}

/// The chat rendered with the model's template; a model without one (a base model) gets the
/// turns as `role: content` lines and an open `assistant:` turn, and the route says so.
fn encode_chat(
    engine: &Engine,
    messages: &[ChatMessage],
) -> Result<(Vec<u32>, Option<String>), ApiError> {
    let has_template = engine
        .tokenizer()
        .is_some_and(|t| t.chat_template().is_some());
    let to_api = |e: agentcompress::Error| ApiError::from_engine(&e, Some("messages"));
    if has_template {
        return Ok((engine.encode_chat(messages).map_err(to_api)?, None));
    }
    let mut text = String::new();
    for m in messages {
        text.push_str(&format!("{}: {}\n", m.role, m.content));
    }
    text.push_str("assistant:");
    let reason = "the model has no chat template: messages joined as 'role: content' lines";
    Ok((engine.encode(&text).map_err(to_api)?, Some(reason.into())))
}

async fn generate(
    st: &Arc<AppState>,
    body: Result<Bytes, BytesRejection>,
    endpoint: Endpoint,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    if st.draining.load(Ordering::SeqCst) {
        return Err(shutdown_error());
    }
    let body = body.map_err(|r| {
        let code = if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            "request_too_large"
        } else {
            "invalid_body"
        };
        ApiError::new(r.status(), "invalid_request_error", code, r.body_text())
    })?;
    let req = openai::parse(&body, endpoint)?;
    let n = st.next_id.fetch_add(1, Ordering::Relaxed);
    // A request without a seed samples differently from the last one without.
    let seed = n ^ u64::from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos()),
    );
    let prepared = {
        let st = st.clone();
        let req = req.clone();
        tokio::task::spawn_blocking(move || prepare(&st, &req, seed))
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "internal_error",
                    format!("tokenizing failed: {e}"),
                )
            })??
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let route = route_json(&prepared.route);
    st.scheduler.submit(Job {
        ids: prepared.ids,
        params: prepared.params,
        route: prepared.route,
        stops: req.stop.clone(),
        prompt_param: prepared.prompt_param,
        arrived,
        deadline: arrived + st.timeout,
        tx,
    })?;
    let prompt_tokens = match rx.recv().await {
        Some(Event::Started { prompt_tokens }) => prompt_tokens,
        Some(Event::Failed(e)) => return Err(e),
        _ => return Err(dropped()),
    };
    let prefix = match endpoint {
        Endpoint::Chat => "chatcmpl",
        Endpoint::Completion => "cmpl",
    };
    let meta = ResponseMeta {
        id: format!("{prefix}-{:x}-{n}", st.started),
        created: unix_now(),
        model: st.model_id.clone(),
        endpoint,
        route,
    };
    let route_value = HeaderValue::from_str(&route_header(&meta.route)).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal_error",
            format!("route header: {e}"),
        )
    })?;
    let mut resp = if req.stream {
        let body = SseBody::new(rx, meta, prompt_tokens, req.include_usage);
        let mut r = Body::from_stream(body).into_response();
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        r
    } else {
        let mut text = String::new();
        loop {
            match rx.recv().await {
                Some(Event::Text(t)) => text.push_str(&t),
                Some(Event::Started { .. }) => {}
                Some(Event::Done {
                    finish,
                    completion_tokens,
                }) => {
                    match finish {
                        Finish::Timeout => return Err(timeout_error()),
                        Finish::Shutdown => return Err(shutdown_error()),
                        Finish::Stop | Finish::Length => {}
                    }
                    let u = usage(prompt_tokens, completion_tokens);
                    break Json(meta.response(&text, finish.reason(), u)).into_response();
                }
                Some(Event::Failed(e)) => return Err(e),
                None => return Err(dropped()),
            }
        }
    };
    resp.headers_mut().insert(ROUTE_HEADER, route_value);
    Ok(resp)
}

fn dropped() -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        "internal_error",
        "the scheduler dropped the request",
    )
}

async fn models(State(st): State<Arc<AppState>>) -> Response {
    st.metrics.request("models", 200);
    Json(json!({
        "object": "list",
        "data": [{
            "id": st.model_id,
            "object": "model",
            "created": st.started,
            "owned_by": "agentcompress",
        }],
    }))
    .into_response()
}

async fn health(State(st): State<Arc<AppState>>) -> Response {
    if st.draining.load(Ordering::SeqCst) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "shutting down"})),
        )
            .into_response()
    } else {
        Json(json!({"status": "ok"})).into_response()
    }
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let stats = st.engine.stats();
    let resident = st.engine.resident().unwrap_or_default();
    let text = st.metrics.render(&stats, st.scheduler.queued(), &resident);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn not_found(method: Method, uri: axum::http::Uri) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "not_found",
        format!("no route {method} {}", uri.path()),
    )
    .into_response()
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
    .into_response()
}
