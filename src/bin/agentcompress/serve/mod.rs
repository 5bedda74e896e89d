//! `agentcompress serve`: an OpenAI-compatible HTTP server (axum on tokio) over one engine,
//! with continuous batching. Requests are parsed and tokenized on the async side
//! ([`routes`]); generation runs on one scheduler thread ([`scheduler`]) that decodes the
//! requests routed to the same variant together.
//!
//! Shutdown (SIGTERM or Ctrl-C): the listener stops accepting, new requests on open
//! connections get 503, in-flight requests may finish within `--shutdown-grace`, then the
//! ones left are cancelled (a streamed answer ends with finish_reason "length" and
//! `x_agentcompress.cut_short = "shutdown"`, a whole one gets 503).

mod args;
// Shared with tests/serve.rs, which uses all of it; `bench serve` needs only part.
#[allow(dead_code)]
pub mod client;
mod errors;
mod metrics;
mod openai;
mod routes;
mod scheduler;
mod sse;
mod stop;

pub use args::ServeArgs;

use crate::common::require_regular_file;
use agentcompress::api::{Device, Engine};
use agentcompress::{Error, Result};
use metrics::Metrics;
use routes::AppState;
use scheduler::{Handle, Limits};
use std::future::{Future, IntoFuture};
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long to wait for connections to close after the in-flight requests were cancelled.
const AFTER_CANCEL_WAIT: Duration = Duration::from_secs(5);

/// Opens the engine `args` name (a built-in model, a file, or a variant directory).
pub fn open_engine(args: &ServeArgs) -> Result<Engine> {
    let device: Device = args.device.parse()?;
    let source = args.model.to_string_lossy();
    let mut b = if Engine::is_builtin(&source) {
        Engine::builtin(&source)?
    } else {
        Engine::builder(&args.model)
    };
    b = b.device(device);
    if let Some(t) = &args.tokenizer {
        require_regular_file(t, "--tokenizer")?;
        b = b.tokenizer_path(t);
    }
    if let Some(m) = args.memory_budget {
        b = b.memory_budget(m);
    }
    if let Some(q) = args.quality_target {
        b = b.router_target(q);
    }
    b.build()
}

/// The id `/v1/models` lists: the built-in name, or the model file's stem or directory name.
fn model_id(p: &Path) -> String {
    let s = p.to_string_lossy();
    if Engine::is_builtin(&s) {
        return s.into_owned();
    }
    let name = if p.is_dir() {
        p.file_name()
    } else {
        p.file_stem()
    };
    name.map_or_else(|| s.into_owned(), |n| n.to_string_lossy().into_owned())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("http")
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the async runtime: {e}")))
}

async fn bind(args: &ServeArgs) -> Result<tokio::net::TcpListener> {
    let addr = format!("{}:{}", args.host, args.port);
    tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| Error::invalid(format!("cannot listen on {addr}: {e}")))
}

/// Runs the subcommand: serves until SIGTERM or Ctrl-C.
pub fn run(args: ServeArgs) -> Result<()> {
    let engine = Arc::new(open_engine(&args)?);
    eprintln!(
        "serving {} on {} (max batch {}, max queue {})",
        engine.source(),
        engine.backend_name(),
        args.max_batch,
        args.max_queue
    );
    runtime()?.block_on(async {
        let listener = bind(&args).await?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Internal(format!("listener address: {e}")))?;
        println!("listening on http://{addr}");
        // The address is how a parent process finds a `--port 0` server.
        let _ = std::io::stdout().flush();
        serve(listener, engine, &args, shutdown_signal()).await
    })
}

/// A server on its own thread (for `bench serve`).
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl Running {
    /// Shuts the server down gracefully and waits for it.
    pub fn stop(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(Error::Internal("the server thread panicked".into())),
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// Starts serving `engine` on a thread of its own; returns once it listens.
pub fn start(args: ServeArgs, engine: Arc<Engine>) -> Result<Running> {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("server".into())
        .spawn(move || -> Result<()> {
            runtime()?.block_on(async move {
                let listener = match bind(&args).await {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = addr_tx.send(Err(e));
                        return Ok(());
                    }
                };
                let addr = listener
                    .local_addr()
                    .map_err(|e| Error::Internal(format!("listener address: {e}")));
                let _ = addr_tx.send(addr);
                serve(listener, engine, &args, async move {
                    let _ = stop_rx.await;
                })
                .await
            })
        })
        .map_err(|e| Error::Internal(format!("cannot start the server thread: {e}")))?;
    let addr = addr_rx
        .recv()
        .map_err(|_| Error::Internal("the server thread ended before listening".into()))??;
    Ok(Running {
        addr,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// Serves on `listener` until `signal`, then drains (see the module documentation).
async fn serve(
    listener: tokio::net::TcpListener,
    engine: Arc<Engine>,
    args: &ServeArgs,
    signal: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let metrics = Arc::new(Metrics::default());
    let limits = Limits {
        max_queue: args.max_queue,
        max_batch: args.max_batch,
        step_delay: Duration::from_millis(args.step_delay_ms),
    };
    let (handle, thread) = scheduler::spawn(engine.clone(), limits, metrics.clone())
        .map_err(|e| Error::Internal(format!("cannot start the scheduler thread: {e}")))?;
    let context = args.ctx.min(engine.config().max_seq_len);
    let state = Arc::new(AppState {
        engine,
        scheduler: handle.clone(),
        metrics,
        model_id: model_id(&args.model),
        context,
        timeout: Duration::from_secs_f64(args.timeout),
        started: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        draining: AtomicBool::new(false),
        next_id: AtomicU64::new(0),
    });
    let max_body = usize::try_from(args.max_body).unwrap_or(usize::MAX);
    let app = routes::router(state.clone(), max_body);
    let (fired_tx, mut fired_rx) = tokio::sync::watch::channel(false);
    let graceful = {
        let state = state.clone();
        async move {
            signal.await;
            state.draining.store(true, Ordering::SeqCst);
            eprintln!("shutting down: no new requests; in-flight ones may finish");
            let _ = fired_tx.send(true);
        }
    };
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(graceful)
        .into_future();
    let mut server = std::pin::pin!(server);
    let grace = Duration::from_secs_f64(args.shutdown_grace);
    let finished = tokio::select! {
        r = &mut server => Some(r),
        _ = fired_rx.wait_for(|fired| *fired) => None,
    };
    let result = match finished {
        Some(r) => r,
        None => drain(server, &handle, grace).await,
    };
    handle.exit();
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    result.map_err(|e| Error::Internal(format!("the HTTP server failed: {e}")))
}

/// After the signal: waits `grace` for the server to finish its requests, then cancels them
/// and waits a little more for the connections to close.
async fn drain<F: Future<Output = std::io::Result<()>>>(
    mut server: Pin<&mut F>,
    handle: &Handle,
    grace: Duration,
) -> std::io::Result<()> {
    if let Ok(r) = tokio::time::timeout(grace, server.as_mut()).await {
        return r;
    }
    eprintln!("shutdown grace over: cancelling the requests still in flight");
    handle.cancel_all();
    match tokio::time::timeout(AFTER_CANCEL_WAIT, server).await {
        Ok(r) => r,
        Err(_) => {
            eprintln!("connections still open after cancelling; exiting");
            Ok(())
        }
    }
}
