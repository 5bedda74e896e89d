//! Continuous batching: one thread owns a batch session per precision in use. Each iteration
//! it admits waiting requests into the session of their route's precision (up to
//! `--max-batch` sequences each), ends sequences whose client left or whose deadline passed,
//! runs one multi-row step of every session with live sequences, sends each token to its
//! request's channel, and drops sessions that emptied. A plain thread, not an async task:
//! engine work blocks and runs on rayon.

use super::errors::ApiError;
use super::metrics::{CancelReason, Metrics};
use super::stop::StopText;
use agentcompress::api::{
    BatchEvent, BatchSession, Engine, FinishReason, GenerateParams, Precision, Route, SeqId,
};
use agentcompress::Result;
use axum::http::StatusCode;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

/// How long an idle scheduler sleeps before looking at its control flags again.
const IDLE_POLL: Duration = Duration::from_millis(20);

/// A batch of sequences decoding together (the engine's [`BatchSession`]; tests use a fake).
pub trait Batch: Send {
    /// Prefills `prompt` as a new sequence.
    fn join(&mut self, prompt: &[u32], params: &GenerateParams) -> Result<SeqId>;
    /// One decode step of every live sequence.
    fn step(&mut self) -> Result<Vec<BatchEvent>>;
    /// Ends a sequence now.
    fn cancel(&mut self, id: SeqId) -> bool;
    /// Rows of the last step.
    fn last_step_rows(&self) -> usize;
    /// Most rows any step ran.
    fn max_step_rows(&self) -> usize;
    /// Prompt tokens taken from other sequences' caches so far (prefix reuse).
    fn reused_prompt_tokens(&self) -> usize;
}

/// Where sessions come from and where served requests are counted.
pub trait Sessions: Send + 'static {
    /// The session type.
    type Session: Batch;
    /// A new session on variant `p`.
    fn open(&self, p: Precision) -> Result<Self::Session>;
    /// Counts a finished request against its route.
    fn served(&self, route: &Route, generated: usize);
}

impl Batch for BatchSession {
    fn join(&mut self, prompt: &[u32], params: &GenerateParams) -> Result<SeqId> {
        BatchSession::join(self, prompt, params)
    }
    fn step(&mut self) -> Result<Vec<BatchEvent>> {
        BatchSession::step(self)
    }
    fn cancel(&mut self, id: SeqId) -> bool {
        BatchSession::cancel(self, id)
    }
    fn last_step_rows(&self) -> usize {
        BatchSession::last_step_rows(self)
    }
    fn max_step_rows(&self) -> usize {
        BatchSession::max_step_rows(self)
    }
    fn reused_prompt_tokens(&self) -> usize {
        BatchSession::reused_prompt_tokens(self)
    }
}

impl Sessions for Arc<Engine> {
    type Session = BatchSession;
    fn open(&self, p: Precision) -> Result<BatchSession> {
        self.batch_session(p)
    }
    fn served(&self, route: &Route, generated: usize) {
        // Statistics only: a failure here must not fail a request that was served.
        if let Err(e) = self.record_served(route, generated) {
            eprintln!("warning: could not count a served request: {e}");
        }
    }
}

/// One request for the scheduler.
#[derive(Debug)]
pub struct Job {
    /// Encoded prompt.
    pub ids: Vec<u32>,
    /// Generation parameters (`max_new_tokens`, sampling, context).
    pub params: GenerateParams,
    /// The route: its precision picks the session.
    pub route: Route,
    /// Stop strings.
    pub stops: Vec<String>,
    /// The request parameter holding the prompt (for errors about it).
    pub prompt_param: &'static str,
    /// When the request arrived (time to first token counts from here).
    pub arrived: Instant,
    /// When the request times out.
    pub deadline: Instant,
    /// Where its events go; dropping the receiver cancels the request.
    pub tx: UnboundedSender<Event>,
}

/// What the scheduler tells a request.
#[derive(Debug)]
pub enum Event {
    /// The prompt was prefilled; tokens follow.
    Started {
        /// Prompt tokens.
        prompt_tokens: usize,
    },
    /// Released text (stop strings held back and cut).
    Text(String),
    /// The sequence ended.
    Done {
        /// Why.
        finish: Finish,
        /// Tokens generated.
        completion_tokens: usize,
    },
    /// The request failed before it started (or the engine failed during it).
    Failed(ApiError),
}

/// Why a sequence ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// End of sequence or a stop string.
    Stop,
    /// `max_tokens` or the context.
    Length,
    /// The request's deadline passed.
    Timeout,
    /// The server shut down.
    Shutdown,
}

impl Finish {
    /// OpenAI's `finish_reason`: a sequence cut short by the server ends as "length" (the
    /// answer is truncated, as at `max_tokens`).
    pub fn reason(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length | Finish::Timeout | Finish::Shutdown => "length",
        }
    }
}

/// Limits of the scheduler.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Requests that may wait to join a batch; more are refused (429).
    pub max_queue: usize,
    /// Sequences one batch session decodes together.
    pub max_batch: usize,
    /// A pause after each iteration that stepped (tests slow the server down with it).
    pub step_delay: Duration,
}

/// Flags the server sets to stop the scheduler.
#[derive(Debug, Default)]
struct Control {
    cancel_all: AtomicBool,
    exit: AtomicBool,
}

/// The handlers' side of the scheduler.
#[derive(Clone, Debug)]
pub struct Handle {
    jobs: Sender<Job>,
    queued: Arc<AtomicUsize>,
    max_queue: usize,
    control: Arc<Control>,
}

impl Handle {
    /// Queues a job, or refuses it with 429 when `max_queue` are waiting already.
    pub fn submit(&self, job: Job) -> std::result::Result<(), ApiError> {
        let reserved = self
            .queued
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |q| {
                (q < self.max_queue).then_some(q + 1)
            })
            .is_ok();
        if !reserved {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "queue_full",
                format!(
                    "{} requests are waiting already (--max-queue); retry later",
                    self.max_queue
                ),
            )
            .retry_after(1));
        }
        self.jobs.send(job).map_err(|_| {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "shutting_down",
                "the server is shutting down",
            )
        })
    }

    /// Requests waiting to join a batch.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    /// Ends every waiting and live request now (the shutdown grace ran out).
    pub fn cancel_all(&self) {
        self.control.cancel_all.store(true, Ordering::SeqCst);
    }

    /// Lets the scheduler thread return once nothing is left.
    pub fn exit(&self) {
        self.control.exit.store(true, Ordering::SeqCst);
    }
}

/// Starts the scheduler thread.
pub fn spawn<S: Sessions>(
    sessions: S,
    limits: Limits,
    metrics: Arc<Metrics>,
) -> std::io::Result<(Handle, JoinHandle<()>)> {
    let (handle, sched) = Scheduler::new(sessions, limits, metrics);
    let thread = std::thread::Builder::new()
        .name("scheduler".into())
        .spawn(move || sched.run())?;
    Ok((handle, thread))
}

/// A live sequence.
struct Seq {
    tx: UnboundedSender<Event>,
    route: Route,
    stop: StopText,
    prompt_tokens: usize,
    completion_tokens: usize,
    arrived: Instant,
    deadline: Instant,
    last_token: Option<Instant>,
}

/// One precision's session and its sequences.
struct Slot<B> {
    precision: Precision,
    session: B,
    seqs: HashMap<SeqId, Seq>,
    /// The session's reused prompt tokens already counted in the metrics.
    reused: usize,
}

struct Scheduler<S: Sessions> {
    sessions: S,
    limits: Limits,
    metrics: Arc<Metrics>,
    jobs: Receiver<Job>,
    queued: Arc<AtomicUsize>,
    control: Arc<Control>,
    pending: VecDeque<Job>,
    slots: Vec<Slot<S::Session>>,
}

impl<S: Sessions> Scheduler<S> {
    fn new(sessions: S, limits: Limits, metrics: Arc<Metrics>) -> (Handle, Self) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let handle = Handle {
            jobs: tx,
            queued: Arc::new(AtomicUsize::new(0)),
            max_queue: limits.max_queue,
            control: Arc::new(Control::default()),
        };
        let sched = Scheduler {
            sessions,
            limits,
            metrics,
            jobs: rx,
            queued: handle.queued.clone(),
            control: handle.control.clone(),
            pending: VecDeque::new(),
            slots: Vec::new(),
        };
        (handle, sched)
    }

    fn run(mut self) {
        while self.iteration() {}
    }

    /// One round: take arrivals, admit, end abandoned and late sequences, step every session.
    /// False when the scheduler should return.
    fn iteration(&mut self) -> bool {
        let busy = !self.pending.is_empty() || !self.slots.is_empty();
        if !busy && self.control.exit.load(Ordering::SeqCst) {
            return false;
        }
        if !self.receive(busy) && !busy {
            // Every handle is gone: nothing can arrive any more.
            return false;
        }
        if self.control.cancel_all.load(Ordering::SeqCst) {
            self.end_everything();
        }
        self.admit();
        self.reap();
        let stepped = self.step_all();
        self.slots.retain(|s| !s.seqs.is_empty());
        let live = self.slots.iter().map(|s| s.seqs.len()).sum();
        self.metrics.set_live(live);
        if stepped && !self.limits.step_delay.is_zero() {
            std::thread::sleep(self.limits.step_delay);
        }
        true
    }

    /// Moves arrived jobs to `pending`, waiting a little for one when idle. False when the
    /// channel is closed.
    fn receive(&mut self, busy: bool) -> bool {
        if !busy {
            match self.jobs.recv_timeout(IDLE_POLL) {
                Ok(j) => self.pending.push_back(j),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return false,
            }
        }
        while let Ok(j) = self.jobs.try_recv() {
            self.pending.push_back(j);
        }
        true
    }

    /// A job left the queue (joined, failed or dropped).
    fn dequeued(&self) {
        self.queued.fetch_sub(1, Ordering::SeqCst);
    }

    /// Joins waiting jobs into their precision's session, oldest first, while it has room.
    fn admit(&mut self) {
        let mut waiting = VecDeque::new();
        while let Some(job) = self.pending.pop_front() {
            if job.tx.is_closed() {
                self.dequeued();
                self.metrics.cancelled(CancelReason::Disconnect);
                continue;
            }
            if Instant::now() >= job.deadline {
                self.dequeued();
                self.metrics.cancelled(CancelReason::Timeout);
                let _ = job.tx.send(Event::Failed(timeout_error()));
                continue;
            }
            let p = job.route.precision;
            let at = match self.slots.iter().position(|s| s.precision == p) {
                Some(i) => i,
                None => match self.sessions.open(p) {
                    Ok(session) => {
                        self.slots.push(Slot {
                            precision: p,
                            session,
                            seqs: HashMap::new(),
                            reused: 0,
                        });
                        self.slots.len() - 1
                    }
                    Err(e) => {
                        self.dequeued();
                        let _ = job.tx.send(Event::Failed(ApiError::from_engine(&e, None)));
                        continue;
                    }
                },
            };
            let slot = &mut self.slots[at];
            if slot.seqs.len() >= self.limits.max_batch {
                waiting.push_back(job);
                continue;
            }
            self.queued.fetch_sub(1, Ordering::SeqCst);
            match slot.session.join(&job.ids, &job.params) {
                Ok(id) => {
                    let prompt_tokens = job.ids.len();
                    let _ = job.tx.send(Event::Started { prompt_tokens });
                    slot.seqs.insert(
                        id,
                        Seq {
                            tx: job.tx,
                            route: job.route,
                            stop: StopText::new(job.stops),
                            prompt_tokens,
                            completion_tokens: 0,
                            arrived: job.arrived,
                            deadline: job.deadline,
                            last_token: None,
                        },
                    );
                }
                Err(e) => {
                    let err = ApiError::from_engine(&e, Some(job.prompt_param));
                    let _ = job.tx.send(Event::Failed(err));
                }
            }
        }
        self.pending = waiting;
    }

    /// Ends live sequences whose client went away or whose deadline passed.
    fn reap(&mut self) {
        let now = Instant::now();
        for slot in &mut self.slots {
            let gone: Vec<SeqId> = slot
                .seqs
                .iter()
                .filter(|(_, s)| s.tx.is_closed() || now >= s.deadline)
                .map(|(id, _)| *id)
                .collect();
            for id in gone {
                slot.session.cancel(id);
                if let Some(seq) = slot.seqs.remove(&id) {
                    let finish = if seq.tx.is_closed() {
                        None
                    } else {
                        Some(Finish::Timeout)
                    };
                    end(&self.sessions, &self.metrics, seq, finish);
                }
            }
        }
    }

    /// The shutdown grace ran out: every waiting and live request ends now.
    fn end_everything(&mut self) {
        for job in self.pending.drain(..) {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            self.metrics.cancelled(CancelReason::Shutdown);
            let _ = job.tx.send(Event::Failed(shutdown_error()));
        }
        for slot in &mut self.slots {
            for (id, seq) in slot.seqs.drain() {
                slot.session.cancel(id);
                end(&self.sessions, &self.metrics, seq, Some(Finish::Shutdown));
            }
        }
    }

    /// One step of every session with live sequences; true when any ran.
    fn step_all(&mut self) -> bool {
        let mut stepped = false;
        for slot in &mut self.slots {
            if slot.seqs.is_empty() {
                continue;
            }
            stepped = true;
            match slot.session.step() {
                Ok(events) => {
                    self.metrics
                        .step(slot.session.last_step_rows(), slot.session.max_step_rows());
                    let reused = slot.session.reused_prompt_tokens();
                    self.metrics.reused(reused.saturating_sub(slot.reused));
                    slot.reused = reused;
                    let now = Instant::now();
                    for ev in events {
                        deliver(&self.sessions, &self.metrics, slot, ev, now);
                    }
                }
                Err(e) => {
                    // The session is broken: fail its requests; the slot is dropped empty.
                    let err = ApiError::from_engine(&e, None);
                    for (id, seq) in slot.seqs.drain() {
                        slot.session.cancel(id);
                        let _ = seq.tx.send(Event::Failed(err.clone()));
                    }
                }
            }
        }
        stepped
    }
}

/// Hands one step's event to its request: timing, stop strings, finish.
fn deliver<S: Sessions>(
    sessions: &S,
    metrics: &Metrics,
    slot: &mut Slot<S::Session>,
    ev: BatchEvent,
    now: Instant,
) {
    let Some(seq) = slot.seqs.get_mut(&ev.id) else {
        return;
    };
    if ev.token.is_some() {
        seq.completion_tokens += 1;
        match seq.last_token {
            None => metrics.ttft(now.duration_since(seq.arrived).as_secs_f64()),
            Some(t) => metrics.itl(now.duration_since(t).as_secs_f64()),
        }
        seq.last_token = Some(now);
    }
    let released = seq.stop.push(&ev.text);
    let mut connected = released.text.is_empty() || seq.tx.send(Event::Text(released.text)).is_ok();
    let finish = if released.stopped {
        Some(Finish::Stop)
    } else {
        ev.finish.map(|f| match f {
            FinishReason::Stop => Finish::Stop,
            FinishReason::Length => Finish::Length,
        })
    };
    if finish.is_some() && !released.stopped {
        let rest = seq.stop.flush();
        connected &= rest.is_empty() || seq.tx.send(Event::Text(rest)).is_ok();
    }
    if finish.is_none() && connected {
        return;
    }
    if ev.finish.is_none() {
        slot.session.cancel(ev.id);
    }
    if let Some(seq) = slot.seqs.remove(&ev.id) {
        end(sessions, metrics, seq, finish.filter(|_| connected));
    }
}

/// A sequence ended: `Some(finish)` is told to its request, `None` means its client left.
fn end<S: Sessions>(sessions: &S, metrics: &Metrics, seq: Seq, finish: Option<Finish>) {
    match finish {
        Some(Finish::Timeout) => metrics.cancelled(CancelReason::Timeout),
        Some(Finish::Shutdown) => metrics.cancelled(CancelReason::Shutdown),
        Some(_) => {}
        None => metrics.cancelled(CancelReason::Disconnect),
    }
    metrics.tokens(seq.prompt_tokens, seq.completion_tokens);
    sessions.served(&seq.route, seq.completion_tokens);
    if let Some(finish) = finish {
        let _ = seq.tx.send(Event::Done {
            finish,
            completion_tokens: seq.completion_tokens,
        });
    }
}

/// 408 for a request whose deadline passed before it produced anything.
pub fn timeout_error() -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "timeout_error",
        "timeout",
        "the request ran past the server's --timeout",
    )
}

/// 503 for a request the shutdown ended.
pub fn shutdown_error() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "server_error",
        "shutting_down",
        "the server is shutting down",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentcompress::Error;
    use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

    /// A batch whose sequence `i` emits the pieces "a", "b", "c", ... up to its token limit.
    #[derive(Default)]
    struct Fake {
        next: SeqId,
        live: Vec<(SeqId, usize, usize, usize)>,
        last: usize,
        most: usize,
    }

    impl Batch for Fake {
        fn join(&mut self, prompt: &[u32], params: &GenerateParams) -> Result<SeqId> {
            if prompt.is_empty() {
                return Err(Error::invalid("empty prompt"));
            }
            self.next += 1;
            self.live
                .push((self.next, 0, params.max_new_tokens, prompt.len()));
            Ok(self.next)
        }
        fn step(&mut self) -> Result<Vec<BatchEvent>> {
            self.last = self.live.len();
            self.most = self.most.max(self.last);
            let mut out = Vec::new();
            for (id, done, max, prompt) in &mut self.live {
                let text = char::from(b'a' + (*done % 26) as u8).to_string();
                *done += 1;
                out.push(BatchEvent {
                    id: *id,
                    token: Some(*done as u32),
                    text,
                    finish: (*done == *max).then_some(FinishReason::Length),
                    prompt_tokens: *prompt,
                });
            }
            self.live.retain(|(_, done, max, _)| done < max);
            Ok(out)
        }
        fn cancel(&mut self, id: SeqId) -> bool {
            let n = self.live.len();
            self.live.retain(|s| s.0 != id);
            n != self.live.len()
        }
        fn last_step_rows(&self) -> usize {
            self.last
        }
        fn max_step_rows(&self) -> usize {
            self.most
        }
        fn reused_prompt_tokens(&self) -> usize {
            0
        }
    }

    #[derive(Clone, Default)]
    struct FakeSessions {
        served: Arc<std::sync::Mutex<Vec<usize>>>,
    }

    impl Sessions for FakeSessions {
        type Session = Fake;
        fn open(&self, _: Precision) -> Result<Fake> {
            Ok(Fake::default())
        }
        fn served(&self, _: &Route, generated: usize) {
            self.served.lock().unwrap().push(generated);
        }
    }

    fn route() -> Route {
        Route {
            precision: Precision::Fp16,
            complexity: None,
            expected_cost: 1.0,
            swap: false,
            alternatives: Vec::new(),
            next: None,
            reasons: Vec::new(),
            speculation: None,
        }
    }

    fn setup(max_queue: usize, max_batch: usize) -> (Handle, Scheduler<FakeSessions>) {
        let limits = Limits {
            max_queue,
            max_batch,
            step_delay: Duration::ZERO,
        };
        Scheduler::new(
            FakeSessions::default(),
            limits,
            Arc::new(Metrics::default()),
        )
    }

    fn job(tokens: usize, stops: &[&str], timeout: Duration) -> (Job, UnboundedReceiver<Event>) {
        let (tx, rx) = unbounded_channel();
        let now = Instant::now();
        let params = GenerateParams {
            max_new_tokens: tokens,
            ..GenerateParams::default()
        };
        let j = Job {
            ids: vec![1, 2, 3],
            params,
            route: route(),
            stops: stops.iter().map(|s| s.to_string()).collect(),
            prompt_param: "prompt",
            arrived: now,
            deadline: now + timeout,
            tx,
        };
        (j, rx)
    }

    const LONG: Duration = Duration::from_secs(3600);

    /// Text and finish of a request that ended; panics on a failure.
    fn outcome(rx: &mut UnboundedReceiver<Event>) -> (String, Option<(Finish, usize)>) {
        let mut text = String::new();
        while let Ok(ev) = rx.try_recv() {
            match ev {
                Event::Started { prompt_tokens } => assert_eq!(prompt_tokens, 3),
                Event::Text(t) => text.push_str(&t),
                Event::Done {
                    finish,
                    completion_tokens,
                } => return (text, Some((finish, completion_tokens))),
                Event::Failed(e) => panic!("failed: {}", e.message),
            }
        }
        (text, None)
    }

    #[test]
    fn sequences_decode_together_up_to_the_batch_limit() {
        let (h, mut s) = setup(8, 2);
        let mut rxs = Vec::new();
        for n in [3, 4, 2] {
            let (j, rx) = job(n, &[], LONG);
            h.submit(j).unwrap();
            rxs.push(rx);
        }
        assert!(s.iteration());
        assert_eq!(s.metrics.rows_max(), 2, "two rows in the first step");
        assert_eq!(h.queued(), 1, "the third waits for room");
        for _ in 0..8 {
            s.iteration();
        }
        let got: Vec<_> = rxs.iter_mut().map(outcome).collect();
        assert_eq!(got[0], ("abc".into(), Some((Finish::Length, 3))));
        assert_eq!(got[1], ("abcd".into(), Some((Finish::Length, 4))));
        assert_eq!(got[2], ("ab".into(), Some((Finish::Length, 2))));
        assert_eq!(h.queued(), 0);
        assert!(s.slots.is_empty(), "empty sessions are dropped");
        let mut served = s.sessions.served.lock().unwrap().clone();
        served.sort();
        assert_eq!(served, [2, 3, 4]);
    }

    #[test]
    fn a_stop_string_ends_the_sequence_and_is_cut() {
        let (h, mut s) = setup(8, 4);
        let (j, mut rx) = job(10, &["cd"], LONG);
        h.submit(j).unwrap();
        for _ in 0..6 {
            s.iteration();
        }
        assert_eq!(outcome(&mut rx), ("ab".into(), Some((Finish::Stop, 4))));
        assert!(s.slots.is_empty());
    }

    #[test]
    fn a_full_queue_refuses_with_retry_after() {
        let (h, _s) = setup(1, 1);
        let (a, _ra) = job(1, &[], LONG);
        let (b, _rb) = job(1, &[], LONG);
        h.submit(a).unwrap();
        let e = h.submit(b).unwrap_err();
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.retry_after, Some(1));
    }

    #[test]
    fn a_dropped_receiver_cancels_its_sequence() {
        let (h, mut s) = setup(8, 4);
        let (a, ra) = job(100, &[], LONG);
        let (b, mut rb) = job(3, &[], LONG);
        h.submit(a).unwrap();
        h.submit(b).unwrap();
        s.iteration();
        drop(ra);
        s.iteration();
        assert_eq!(s.slots[0].seqs.len(), 1, "only the other sequence is left");
        assert_eq!(
            s.slots[0].session.live.len(),
            1,
            "the session cancelled it too"
        );
        for _ in 0..3 {
            s.iteration();
        }
        assert_eq!(outcome(&mut rb).1, Some((Finish::Length, 3)));
        let text = s.metrics.render(&Default::default(), 0, &[]);
        assert!(text.contains("agentcompress_cancelled_total{reason=\"disconnect\"} 1"));
    }

    #[test]
    fn deadlines_fail_waiting_requests_and_cut_live_ones() {
        let (h, mut s) = setup(8, 1);
        let (a, mut ra) = job(100, &[], Duration::from_millis(30));
        let (b, mut rb) = job(100, &[], Duration::from_millis(30));
        h.submit(a).unwrap();
        h.submit(b).unwrap();
        s.iteration();
        std::thread::sleep(Duration::from_millis(40));
        s.iteration();
        let (text, end) = outcome(&mut ra);
        assert_eq!(text, "a");
        assert_eq!(end, Some((Finish::Timeout, 1)));
        match rb.try_recv() {
            Ok(Event::Failed(e)) => assert_eq!(e.status, StatusCode::REQUEST_TIMEOUT),
            other => panic!("expected a 408, got {other:?}"),
        }
        assert_eq!(h.queued(), 0);
    }

    #[test]
    fn a_rejected_prompt_fails_naming_its_parameter() {
        let (h, mut s) = setup(8, 1);
        let (mut j, mut rx) = job(1, &[], LONG);
        j.ids.clear();
        h.submit(j).unwrap();
        s.iteration();
        match rx.try_recv() {
            Ok(Event::Failed(e)) => {
                assert_eq!(e.status, StatusCode::BAD_REQUEST);
                assert_eq!(e.param.as_deref(), Some("prompt"));
            }
            other => panic!("expected a 400, got {other:?}"),
        }
        assert_eq!(h.queued(), 0);
    }

    #[test]
    fn cancel_all_ends_waiting_and_live_requests() {
        let (h, mut s) = setup(8, 1);
        let (a, mut ra) = job(100, &[], LONG);
        let (b, mut rb) = job(100, &[], LONG);
        h.submit(a).unwrap();
        h.submit(b).unwrap();
        s.iteration();
        h.cancel_all();
        h.exit();
        s.iteration();
        assert_eq!(outcome(&mut ra).1, Some((Finish::Shutdown, 1)));
        assert!(
            matches!(rb.try_recv(), Ok(Event::Failed(e)) if e.status == StatusCode::SERVICE_UNAVAILABLE)
        );
        assert!(!s.iteration(), "an idle scheduler told to exit returns");
    }
}
