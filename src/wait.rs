//! Following a run to a terminal state: by push through the server's callback relay (an
//! EventSource on the run's stream), or by polling on a schedule; the deadline, progress, and the
//! page's visibility (a poll is made at once when the page is shown again or the network
//! returns; each request also waits for the network first).

use js_sys::{Promise, Reflect};
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::AbortSignal;

use crate::client::{Client, CreateRequest};
use crate::create::{LocalField, create_with_image};
use crate::error::{Error, ErrorCode};
use crate::http::{Call, aborted};
use crate::json::js_key;
use crate::policy::PollSchedule;
use crate::run::{Run, Status};

#[wasm_bindgen(module = "/js/edge.js")]
extern "C" {
    /// A run's event stream (see `listen` in js/edge.js).
    type Stream;

    /// An EventSource on `path` (its `{id}` replaced by `id`) resolved against `base`; null
    /// where there is no EventSource, "busy" when the origin has as many streams as it may.
    fn listen(path: &str, id: &str, base: &str) -> JsValue;

    /// The next of "open", "closed", "silent" (nothing for `ms`) or an event's data; rejects
    /// when `signal` fires.
    #[wasm_bindgen(method)]
    fn next(this: &Stream, ms: f64, signal: Option<&AbortSignal>) -> Promise;

    #[wasm_bindgen(method)]
    fn close(this: &Stream);
}

/// `wait`: how a call follows its run.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum WaitMode {
    /// By push when the server advertises a relay, else by polling.
    Auto,
    /// By polling only.
    Poll,
    /// Push asked for: today the same as `Auto` (a server that advertises no relay can only be
    /// polled), named apart so a call can say so.
    Events,
}

/// How one call waits: by which way, how long push may stay silent, and who hears the way.
pub struct Waiting<'a> {
    /// The poll schedule.
    pub schedule: PollSchedule,
    /// `wait`.
    pub mode: WaitMode,
    /// `eventsSilenceMs`: with no event for this long, polling takes over.
    pub silence_ms: f64,
    /// The caller's guarded `onWaiting`, told `via` ("events" or "poll") and why, each time the
    /// way changes.
    pub on_waiting: &'a dyn Fn(&'static str, &str),
}

/// How `run()` follows its run once created.
pub struct RunToEnd<'a> {
    /// The way it waits.
    pub waiting: Waiting<'a>,
    /// The caller's guarded `onStatus`, called with the new run too.
    pub on_status: &'a mut dyn FnMut(&Run),
    /// The caller's guarded `onUploadProgress`, for a local image.
    pub progress: &'a JsValue,
}

/// How waiting by events ended without the run's end.
enum Fallback {
    /// Poll from now on, for this reason.
    Poll(&'static str),
    /// Stop: the caller's signal, the deadline, or a failed check.
    Stop(Error),
}

impl Client {
    /// `run()`: the create with its image, then the wait, under one call's signal and deadline.
    /// Unless told to poll, a create that names no `callback_url` gets the relay's, when the
    /// server advertised one.
    ///
    /// # Errors
    /// The create's or the wait's error, or `run_failed` when the run ended failed or canceled.
    pub async fn create_and_wait(
        &self,
        wire: JsValue,
        mut request: CreateRequest,
        local: Option<LocalField>,
        to_end: RunToEnd<'_>,
        call: &Call,
    ) -> Result<Run, Error> {
        if request.callback_url.is_none() && to_end.waiting.mode != WaitMode::Poll {
            request.callback_url = self.relay().map(|relay| relay.callback);
        }
        let created = create_with_image(self, wire, request, local, to_end.progress, call).await?;
        (to_end.on_status)(&created);
        let id = created.id.clone();
        let done = self
            .wait_for_run(&id, Some(created), &to_end.waiting, to_end.on_status, call)
            .await?;
        if done.status.is_failure() {
            return Err(run_failed(done));
        }
        Ok(done)
    }

    /// Follows run `id` until it is terminal, calling `on_status` each time `status_code`
    /// changes (`known` is the run as the caller last reported it, if any): by the relay's
    /// events when `waiting` allows and the run's callback goes to the relay, else (and when the
    /// relay fails or stays silent) by polling.
    ///
    /// # Errors
    /// A failure of the polling after retries, `aborted`, or `timeout` at the call's deadline;
    /// each with `runId`.
    pub async fn wait_for_run(
        &self,
        id: &str,
        mut known: Option<Run>,
        waiting: &Waiting<'_>,
        on_status: &mut dyn FnMut(&Run),
        call: &Call,
    ) -> Result<Run, Error> {
        let started = js_sys::Date::now();
        let mut last_seen = known.as_ref().map(|run| run.status_code.clone());
        let mut report = |run: &Run| {
            if last_seen.as_deref() != Some(run.status_code.as_str()) {
                last_seen = Some(run.status_code.clone());
                on_status(run);
            }
        };
        let mut way_chosen = false;
        let mut poll = 0;
        loop {
            let run = match known.take() {
                Some(run) => run,
                None => {
                    let run = self.get_run(id, call).await?;
                    report(&run);
                    run
                }
            };
            if run.status.is_terminal() {
                return Ok(run);
            }
            if !way_chosen {
                way_chosen = true;
                match self.push_path(&run, waiting.mode) {
                    Ok(path) => {
                        match self
                            .follow_events(&path, run, waiting, &mut report, call)
                            .await
                        {
                            Ok(run) => return Ok(run),
                            Err(Fallback::Stop(error)) => return Err(error.with_run_id(id)),
                            Err(Fallback::Poll(why)) => {
                                (waiting.on_waiting)("poll", why);
                                // The run may have ended while the relay was failing: look now.
                                continue;
                            }
                        }
                    }
                    Err(why) => (waiting.on_waiting)("poll", why),
                }
            }
            let elapsed = (js_sys::Date::now() - started).max(0.0) as u64;
            call.poll_pause(waiting.schedule.delay_ms(poll, elapsed, is_hidden()))
                .await
                .map_err(|e| e.with_run_id(id))?;
            poll += 1;
        }
    }

    /// The events path to follow `run` by, or why it is polled.
    fn push_path(&self, run: &Run, mode: WaitMode) -> Result<String, &'static str> {
        if mode == WaitMode::Poll {
            return Err("wait: \"poll\"");
        }
        let relay = self
            .relay()
            .ok_or("the server advertises no callback relay")?;
        if run.callback_url.as_deref() != Some(relay.callback.as_str()) {
            return Err("the run's callback_url is not the relay's");
        }
        Ok(relay.events)
    }

    /// Waits on the run's relay stream: the run is checked by GET when the stream opens and
    /// after each reconnect (so an event missed in between is not waited for in vain), and
    /// takes in each event the relay pushes until it ends.
    async fn follow_events(
        &self,
        path: &str,
        mut run: Run,
        waiting: &Waiting<'_>,
        report: &mut dyn FnMut(&Run),
        call: &Call,
    ) -> Result<Run, Fallback> {
        let stream = listen(path, &run.id, &self.base_url);
        if !stream.is_object() {
            return Err(Fallback::Poll(if stream.is_string() {
                "4 runs are waiting by push on this server already"
            } else {
                "no EventSource here"
            }));
        }
        let stream: Stream = stream.unchecked_into();
        (waiting.on_waiting)("events", "the server's callback relay");
        let silent_until = js_sys::Date::now() + waiting.silence_ms;
        let outcome = loop {
            let left = (silent_until - js_sys::Date::now()).max(0.0);
            let ms = call.remaining_ms().map_or(left, |budget| budget.min(left));
            let at_deadline = ms < left;
            let happened = match JsFuture::from(stream.next(ms, call.signal.as_ref())).await {
                Ok(happened) => happened,
                Err(_) => break Err(Fallback::Stop(aborted())),
            };
            match happened.as_string().as_deref() {
                Some("open") => match self.get_run(&run.id, call).await {
                    Ok(checked) => {
                        run = checked;
                        report(&run);
                    }
                    Err(error) => break Err(Fallback::Stop(error)),
                },
                Some("closed") => break Err(Fallback::Poll("the callback relay is unavailable")),
                Some(_) if at_deadline => break Err(Fallback::Stop(call.deadline_passed())),
                Some(_) => break Err(Fallback::Poll("the callback relay stayed silent")),
                None => {
                    if run.apply_event(&happened) {
                        report(&run);
                    }
                }
            }
            if run.status.is_terminal() {
                break Ok(());
            }
        };
        stream.close();
        outcome?;
        // A callback without what the run ended with (a failure's reason is never in one): the
        // run itself has it.
        let incomplete = if run.status.is_failure() {
            run.failure.is_none()
        } else {
            run.output.is_none()
        };
        if incomplete {
            match self.get_run(&run.id, call).await {
                Ok(checked) if checked.status.is_terminal() => {
                    report(&checked);
                    return Ok(checked);
                }
                _ => {}
            }
        }
        Ok(run)
    }
}

/// The `run_failed` error for a run that ended failed or canceled.
pub fn run_failed(run: Run) -> Error {
    let ending = match run.status {
        Status::Canceled => " was canceled.",
        _ => " failed.",
    };
    let mut message = ["Run ", &run.id, ending].concat();
    if let Some(failure) = &run.failure {
        if let Some(text) = &failure.message {
            message.push_str(" Runflow said: \"");
            message.push_str(text);
            message.push('"');
        }
        if let Some(code) = &failure.code {
            message.push_str(" (");
            message.push_str(code);
            if let Some(stage) = &failure.stage {
                message.push_str(" at ");
                message.push_str(stage);
            }
            message.push(')');
        }
        message.push('.');
    }
    message
        .push_str(" Failed runs are not billed; try again, perhaps with another prompt or image.");
    Error {
        run_id: Some(run.id.clone()),
        server_code: run.failure.as_ref().and_then(|f| f.code.clone()),
        run: Some(Box::new(run)),
        ..Error::new(ErrorCode::RunFailed, message)
    }
}

fn global_property(path: &[&'static str]) -> JsValue {
    path.iter()
        .fold(js_sys::global().into(), |target: JsValue, key| {
            if target.is_object() {
                Reflect::get(&target, &js_key(key)).unwrap_or(JsValue::UNDEFINED)
            } else {
                JsValue::UNDEFINED
            }
        })
}

/// A hidden tab polls less often: nobody is looking, and timers there are throttled anyway.
fn is_hidden() -> bool {
    global_property(&["document", "visibilityState"])
        .as_string()
        .as_deref()
        == Some("hidden")
}
