//! The relay's hub in Redis. A run's events are kept in one hash that expires `retention` after
//! its first event; a Lua script keeps, numbers and publishes an event in one step, so two
//! instances receiving the same callback keep it once. Every instance holds one pub/sub
//! connection on one channel and fans its messages out to its own subscribers; a message names
//! the run and the event's number only (an event may be megabytes: a `sync_mode` run's images as
//! `data:` URIs), and a subscriber of that run reads the event from the hash.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, LazyLock, Weak,
    },
    time::Duration,
};

use futures_util::stream::{self, StreamExt};
use redis::Script;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use super::{Redis, CONNECT_TIMEOUT, PREFIX};
use crate::relay::hub::{Delivered, Hub, HubFuture, Published, Subscription};

/// Keeps an event unless its (run, event) is kept, numbering it 1, 2, ... per run, and
/// publishes it. KEYS[1]: the run's hash (fields `n`: events so far, `e:<event>`: its number,
/// `s:<number>`: the record). ARGV: event, record, retention in ms, channel, run id. Returns
/// the event's number, or 0 for a duplicate. The message is `<run id> <number>`.
const PUBLISH_LUA: &str = r"
if redis.call('HEXISTS', KEYS[1], 'e:' .. ARGV[1]) == 1 then return 0 end
local seq = redis.call('HINCRBY', KEYS[1], 'n', 1)
redis.call('HSET', KEYS[1], 'e:' .. ARGV[1], seq, 's:' .. seq, ARGV[2])
if seq == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
redis.call('PUBLISH', ARGV[4], ARGV[5] .. ' ' .. seq)
return seq
";
static PUBLISH: LazyLock<Script> = LazyLock::new(|| Script::new(PUBLISH_LUA));

/// Local fan-out: messages in flight to slow subscribers before they must re-read the store.
const CHANNEL_CAPACITY: usize = 1024;
/// The pub/sub connection is pinged this often, so a silent break is noticed.
const PING_EVERY: Duration = Duration::from_secs(5);
/// A subscriber whose read of the store failed tries again this often (and at the next message).
const REREAD_EVERY: Duration = Duration::from_secs(1);
/// Waits between attempts to get the pub/sub connection back.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(1);

/// An event as kept in the hash.
#[derive(Serialize, Deserialize)]
struct Record {
    event: String,
    data: String,
}

/// What the listener passes to this instance's subscribers.
#[derive(Clone)]
enum Note {
    /// An event published by any instance: its run and its number.
    Event(Arc<str>, u64),
    /// The pub/sub connection is back: what was published meanwhile is only in the store.
    Resync,
}

/// The pub/sub connection's state, as subscribers need it.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Link {
    /// The first attempt is under way.
    Connecting,
    /// Subscribed to the channel.
    Up,
    /// Lost, or never made: being retried.
    Down,
}

/// The hub shared by every instance on one Redis.
pub(crate) struct RedisHub(Arc<Shared>);

struct Shared {
    redis: Redis,
    retention: Duration,
    channel: String,
    notes: broadcast::Sender<Note>,
    link: watch::Sender<Link>,
    listening: AtomicBool,
}

impl RedisHub {
    /// Keeps each run's events in `redis` for `retention` after its first one.
    pub(crate) fn new(redis: Redis, retention: Duration) -> RedisHub {
        let (notes, _) = broadcast::channel(CHANNEL_CAPACITY);
        RedisHub(Arc::new(Shared {
            redis,
            retention,
            channel: format!("{PREFIX}relay:events"),
            notes,
            link: watch::Sender::new(Link::Connecting),
            listening: AtomicBool::new(false),
        }))
    }

    /// Starts the pub/sub listener on first use (it needs the runtime, which `new` may not have).
    fn listen(&self) {
        if !self.0.listening.swap(true, Ordering::AcqRel) {
            tokio::spawn(listen(Arc::downgrade(&self.0)));
        }
    }
}

fn run_key(run_id: &str) -> String {
    format!("{PREFIX}relay:run:{run_id}")
}

impl Shared {
    /// The events kept for `run_id`, oldest first.
    async fn kept(&self, run_id: &str) -> Result<Vec<Delivered>, String> {
        let read = redis::cmd("HGETALL").arg(run_key(run_id)).clone();
        let fields: HashMap<String, String> = self
            .redis
            .run(|mut connection| {
                let read = &read;
                async move { read.query_async(&mut connection).await }
            })
            .await?;
        let mut events: Vec<Delivered> = fields
            .iter()
            .filter_map(|(field, value)| {
                let seq = field.strip_prefix("s:")?.parse().ok()?;
                let record: Record = serde_json::from_str(value).ok()?;
                Some(Delivered {
                    seq,
                    event: record.event,
                    data: Arc::from(record.data),
                })
            })
            .collect();
        events.sort_by_key(|e| e.seq);
        Ok(events)
    }
}

/// A channel message: `<run id> <number>`.
fn decode(payload: &[u8]) -> Option<(Arc<str>, u64)> {
    let (run, seq) = std::str::from_utf8(payload).ok()?.split_once(' ')?;
    Some((Arc::from(run), seq.parse().ok()?))
}

/// The instance's one pub/sub connection, for as long as the hub lives: subscribes, passes
/// messages on, and when the connection is lost gets it back and tells subscribers to re-read.
async fn listen(shared: Weak<Shared>) {
    let mut retry = RETRY_FIRST;
    loop {
        let Some(hub) = shared.upgrade() else { return };
        let client = hub.redis.0.client.clone();
        let channel = hub.channel.clone();
        let shown = hub.redis.shown().to_string();
        drop(hub);
        let attempt = tokio::time::timeout(CONNECT_TIMEOUT * 2, async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await;
        let Some(hub) = shared.upgrade() else { return };
        let pubsub = match attempt {
            Ok(Ok(pubsub)) => pubsub,
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "no answer".into(),
                };
                if hub.link.send_replace(Link::Down) != Link::Down {
                    eprintln!("relay: cannot reach Redis at {shown} ({why}): the receiver and the streams answer 503 until it is back; retrying");
                }
                drop(hub);
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(RETRY_MAX);
                continue;
            }
        };
        retry = RETRY_FIRST;
        if hub.link.send_replace(Link::Up) == Link::Down {
            eprintln!("relay: Redis at {shown} is back");
        }
        // Subscribed from here on; what came while not is in the store.
        let _ = hub.notes.send(Note::Resync);
        drop(hub);
        let (mut sink, mut messages) = pubsub.split();
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        loop {
            tokio::select! {
                message = messages.next() => {
                    let Some(message) = message else { break };
                    let Some(hub) = shared.upgrade() else { return };
                    if let Some((run, seq)) = decode(message.get_payload_bytes()) {
                        let _ = hub.notes.send(Note::Event(run, seq));
                    }
                }
                _ = ping.tick() => {
                    if shared.strong_count() == 0 {
                        return;
                    }
                    let pong = tokio::time::timeout(CONNECT_TIMEOUT * 2, sink.ping::<redis::Value>()).await;
                    if !matches!(pong, Ok(Ok(_))) {
                        break;
                    }
                }
            }
        }
        let Some(hub) = shared.upgrade() else { return };
        hub.link.send_replace(Link::Down);
        eprintln!("relay: lost the pub/sub connection to Redis at {shown}: the receiver and the streams answer 503 until it is back; reconnecting");
    }
}

impl Hub for RedisHub {
    fn publish<'a>(&'a self, run_id: &'a str, event: Delivered) -> HubFuture<'a, Published> {
        Box::pin(async move {
            // From the first event on, this instance holds its pub/sub connection.
            self.listen();
            let shared = &self.0;
            let record = Record {
                event: event.event.clone(),
                data: event.data.to_string(),
            };
            let record = serde_json::to_string(&record).map_err(|e| e.to_string())?;
            let retention_ms = u64::try_from(shared.retention.as_millis())
                .unwrap_or(u64::MAX)
                .max(1);
            let mut script = PUBLISH.key(run_key(run_id));
            script
                .arg(&event.event)
                .arg(record)
                .arg(retention_ms)
                .arg(&shared.channel)
                .arg(run_id);
            let seq: u64 = shared
                .redis
                .run(|mut connection| {
                    let script = &script;
                    async move { script.invoke_async(&mut connection).await }
                })
                .await?;
            Ok(match seq {
                0 => Published::Duplicate,
                seq => Published::New(Delivered { seq, ..event }),
            })
        })
    }

    fn subscribe<'a>(&'a self, run_id: &'a str) -> HubFuture<'a, Subscription> {
        Box::pin(async move {
            self.listen();
            let shared = self.0.clone();
            // Without the pub/sub connection a live event could be missed: say so (the client
            // polls) rather than open a stream that may never get it.
            let mut link = shared.link.subscribe();
            let state = tokio::time::timeout(
                CONNECT_TIMEOUT * 3,
                link.wait_for(|l| *l != Link::Connecting),
            )
            .await
            .ok()
            .and_then(Result::ok)
            .map(|state| *state);
            if state != Some(Link::Up) {
                return Err(format!(
                    "no pub/sub connection to Redis at {}",
                    shared.redis.shown()
                ));
            }
            // Subscribed first, then read: an event lands in one or the other.
            let receiver = shared.notes.subscribe();
            let kept = shared.kept(run_id).await?;
            let run: Arc<str> = Arc::from(run_id);
            let last = kept.last().map_or(0, |e| e.seq);
            let live = stream::unfold(
                (
                    receiver,
                    shared,
                    run,
                    last,
                    VecDeque::<Delivered>::new(),
                    false,
                ),
                |(mut receiver, shared, run, mut last, mut pending, mut stale)| async move {
                    loop {
                        if let Some(event) = pending.pop_front() {
                            last = last.max(event.seq);
                            let state = (receiver, shared, run, last, pending, stale);
                            return Some((event, state));
                        }
                        // The store has what is new (a failed read is tried again below).
                        if stale {
                            if let Ok(kept) = shared.kept(&run).await {
                                stale = false;
                                pending.extend(kept.into_iter().filter(|e| e.seq > last));
                                continue;
                            }
                        }
                        let note = if stale {
                            tokio::select! {
                                note = receiver.recv() => Some(note),
                                () = tokio::time::sleep(REREAD_EVERY) => None,
                            }
                        } else {
                            Some(receiver.recv().await)
                        };
                        match note {
                            None => {}
                            Some(Ok(Note::Event(id, seq))) => {
                                stale |= id == run && seq > last;
                            }
                            // Missed some, here or while the connection was away.
                            Some(
                                Ok(Note::Resync) | Err(broadcast::error::RecvError::Lagged(_)),
                            ) => {
                                stale = true;
                            }
                            Some(Err(broadcast::error::RecvError::Closed)) => return None,
                        }
                    }
                },
            )
            .boxed();
            Ok(Subscription { kept, live })
        })
    }

    fn describe(&self) -> String {
        format!(
            "events in Redis at {}, kept {:?} (shared by every instance on it)",
            self.0.redis.shown(),
            self.0.retention
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_messages_decode() {
        let (run, seq) = decode(b"run_1 3").unwrap();
        assert_eq!((&*run, seq), ("run_1", 3));
        assert!(decode(b"run_1 x").is_none());
        assert!(decode(b"run_1").is_none());
        assert!(
            decode(b"run_1 3 {}").is_none(),
            "the old format, with the record"
        );
    }
}
