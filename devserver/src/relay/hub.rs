//! Where the relay keeps recent events and how it fans them out: the `Hub` trait, and its
//! in-process implementation. The Redis one (`REDIS_URL`: a short-lived store plus pub/sub,
//! shared by instances) is `redis::RedisHub`; the handlers only see `Hub`.

use std::{
    collections::{HashMap, VecDeque},
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use futures_util::stream::{self, BoxStream, StreamExt};
use tokio::sync::broadcast;

/// A hub's answer, later.
pub(crate) type HubFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// One event as the relay keeps and sends it.
#[derive(Clone, Debug)]
pub(crate) struct Delivered {
    /// Its position among the run's events, from 1: the SSE `id:` and what `Last-Event-ID` names.
    pub seq: u64,
    /// The callback's `event` (`run.completed`, ...): what a redelivery is recognised by.
    pub event: String,
    /// The `CallbackEvent` as one line of JSON (the SSE `data:`).
    pub data: Arc<str>,
}

/// What `publish` did.
#[derive(Debug)]
pub(crate) enum Published {
    /// A new (`run_id`, `event`): kept, and sent to the run's subscribers.
    New(Delivered),
    /// Already kept: nothing sent.
    Duplicate,
}

/// A run's events so far, and the ones to come.
pub(crate) struct Subscription {
    /// The events kept for the run, oldest first.
    pub kept: Vec<Delivered>,
    /// Events published after `kept` was read (some may repeat it: skip by `seq`).
    pub live: BoxStream<'static, Delivered>,
}

/// Keeps recent events per run and fans new ones out to subscribers.
pub(crate) trait Hub: Send + Sync + 'static {
    /// Keeps `event` under (`run_id`, `event.event`) unless already kept, and sends it to the
    /// run's subscribers when new. `event.seq` is ignored: the hub numbers it.
    fn publish<'a>(&'a self, run_id: &'a str, event: Delivered) -> HubFuture<'a, Published>;
    /// Subscribes to `run_id`, then reads what is kept for it, so nothing falls in between.
    fn subscribe<'a>(&'a self, run_id: &'a str) -> HubFuture<'a, Subscription>;
    /// How the start-up line names it.
    fn describe(&self) -> String;
}

/// The in-process hub: a map of recent runs and one broadcast channel that subscribers filter.
pub(crate) struct Memory(Arc<Shared>);

struct Shared {
    state: Mutex<State>,
    sender: broadcast::Sender<(Arc<str>, Delivered)>,
    retention: Duration,
    max_runs: usize,
}

#[derive(Default)]
struct State {
    runs: HashMap<Arc<str>, Kept>,
    /// Runs in the order their first event came, for expiry and the count bound.
    order: VecDeque<(Instant, Arc<str>)>,
}

struct Kept {
    since: Instant,
    events: Vec<Delivered>,
}

/// Events in flight to slow subscribers before they must re-read the store.
const CHANNEL_CAPACITY: usize = 1024;

impl Memory {
    /// Keeps each run's events for `retention` after its first one, and at most `max_runs` runs.
    pub(crate) fn new(retention: Duration, max_runs: usize) -> Memory {
        let (sender, _) = broadcast::channel(CHANNEL_CAPACITY);
        Memory(Arc::new(Shared {
            state: Mutex::default(),
            sender,
            retention,
            max_runs: max_runs.max(1),
        }))
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the maps consistent (every change is one insert).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The events kept for `run_id`, if not expired.
    fn kept(&self, state: &State, run_id: &str, now: Instant) -> Vec<Delivered> {
        state
            .runs
            .get(run_id)
            .filter(|kept| now.duration_since(kept.since) < self.retention)
            .map(|kept| kept.events.clone())
            .unwrap_or_default()
    }
}

impl State {
    /// Drops expired runs, then the oldest while more than `max_runs - 1` remain.
    fn evict(&mut self, now: Instant, retention: Duration, max_runs: usize) {
        while let Some((since, _)) = self.order.front() {
            let expired = now.duration_since(*since) >= retention;
            if !expired && self.order.len() < max_runs {
                break;
            }
            if let Some((_, run_id)) = self.order.pop_front() {
                self.runs.remove(&run_id);
            }
        }
    }
}

impl Hub for Memory {
    fn publish<'a>(&'a self, run_id: &'a str, mut event: Delivered) -> HubFuture<'a, Published> {
        let shared = &self.0;
        let now = Instant::now();
        let mut state = shared.lock();
        if let Some(kept) = state.runs.get_mut(run_id) {
            if now.duration_since(kept.since) < shared.retention {
                if kept.events.iter().any(|e| e.event == event.event) {
                    return Box::pin(std::future::ready(Ok(Published::Duplicate)));
                }
                event.seq = kept.events.len() as u64 + 1;
                kept.events.push(event.clone());
                let _ = shared.sender.send((Arc::from(run_id), event.clone()));
                return Box::pin(std::future::ready(Ok(Published::New(event))));
            }
        }
        // New (or expired): starts a fresh entry at the back of the order.
        state.runs.remove(run_id);
        state.order.retain(|(_, id)| &**id != run_id);
        state.evict(now, shared.retention, shared.max_runs);
        let key: Arc<str> = Arc::from(run_id);
        event.seq = 1;
        state.runs.insert(
            key.clone(),
            Kept {
                since: now,
                events: vec![event.clone()],
            },
        );
        state.order.push_back((now, key.clone()));
        // Sent under the lock, so a subscriber sees it either in `kept` or live, never neither.
        let _ = shared.sender.send((key, event.clone()));
        Box::pin(std::future::ready(Ok(Published::New(event))))
    }

    fn subscribe<'a>(&'a self, run_id: &'a str) -> HubFuture<'a, Subscription> {
        let shared = self.0.clone();
        let (receiver, kept) = {
            let state = shared.lock();
            let receiver = shared.sender.subscribe();
            (receiver, shared.kept(&state, run_id, Instant::now()))
        };
        let run: Arc<str> = Arc::from(run_id);
        let last = kept.last().map_or(0, |e| e.seq);
        let live = stream::unfold(
            (receiver, shared, run, last, VecDeque::<Delivered>::new()),
            |(mut receiver, shared, run, mut last, mut pending)| async move {
                loop {
                    if let Some(event) = pending.pop_front() {
                        last = last.max(event.seq);
                        return Some((event, (receiver, shared, run, last, pending)));
                    }
                    match receiver.recv().await {
                        Ok((id, event)) if id == run && event.seq > last => {
                            pending.push_back(event)
                        }
                        Ok(_) => {}
                        // Missed some: what was kept has them.
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            let kept = shared.kept(&shared.lock(), &run, Instant::now());
                            pending.extend(kept.into_iter().filter(|e| e.seq > last));
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            },
        )
        .boxed();
        Box::pin(std::future::ready(Ok(Subscription { kept, live })))
    }

    fn describe(&self) -> String {
        format!(
            "in process, events kept {:?} (up to {} runs)",
            self.0.retention, self.0.max_runs
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str) -> Delivered {
        Delivered {
            seq: 0,
            event: name.into(),
            data: Arc::from(format!("{{\"event\":\"{name}\"}}")),
        }
    }

    #[tokio::test]
    async fn keeps_dedups_and_bounds() {
        let hub = Memory::new(Duration::from_secs(60), 2);
        assert!(matches!(
            hub.publish("a", event("run.completed")).await,
            Ok(Published::New(Delivered { seq: 1, .. }))
        ));
        assert!(matches!(
            hub.publish("a", event("run.completed")).await,
            Ok(Published::Duplicate)
        ));
        assert!(matches!(
            hub.publish("a", event("run.failed")).await,
            Ok(Published::New(Delivered { seq: 2, .. }))
        ));
        hub.publish("b", event("run.completed")).await.unwrap();
        hub.publish("c", event("run.completed")).await.unwrap();
        // Two runs at most: `a`, the oldest, went.
        assert!(hub.subscribe("a").await.unwrap().kept.is_empty());
        assert_eq!(hub.subscribe("c").await.unwrap().kept.len(), 1);
    }

    #[tokio::test]
    async fn expires() {
        let hub = Memory::new(Duration::from_millis(20), 10);
        hub.publish("a", event("run.completed")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert!(hub.subscribe("a").await.unwrap().kept.is_empty());
        // Expired: the same event again is new.
        assert!(matches!(
            hub.publish("a", event("run.completed")).await,
            Ok(Published::New(_))
        ));
    }

    #[tokio::test]
    async fn live_events_reach_only_their_run() {
        let hub = Memory::new(Duration::from_secs(60), 10);
        let mut sub = hub.subscribe("a").await.unwrap();
        hub.publish("b", event("run.completed")).await.unwrap();
        hub.publish("a", event("run.failed")).await.unwrap();
        let got = sub.live.next().await.unwrap();
        assert_eq!((got.seq, got.event.as_str()), (1, "run.failed"));
    }
}
