//! Following a run to a terminal state: the poll schedule, the deadline, progress, and the page's
//! visibility. (Connectivity is the requests' own: each waits for the network before it goes.)

use js_sys::Reflect;
use wasm_bindgen::JsValue;

use crate::client::{Client, CreateRequest};
use crate::create::{LocalField, create_with_image};
use crate::error::{Error, ErrorCode};
use crate::http::Call;
use crate::json::js_key;
use crate::policy::PollSchedule;
use crate::run::{Run, Status};

/// How `run()` follows its run once created.
pub struct RunToEnd<'a> {
    /// The poll schedule.
    pub schedule: PollSchedule,
    /// The caller's guarded `onStatus`, called with the new run too.
    pub on_status: &'a mut dyn FnMut(&Run),
    /// The caller's guarded `onUploadProgress`, for a local image.
    pub progress: &'a JsValue,
}

impl Client {
    /// `run()`: the create with its image, then the wait, under one call's signal and deadline.
    ///
    /// # Errors
    /// The create's or the wait's error, or `run_failed` when the run ended failed or canceled.
    pub async fn create_and_wait(
        &self,
        wire: JsValue,
        request: CreateRequest,
        local: Option<LocalField>,
        to_end: RunToEnd<'_>,
        call: &Call,
    ) -> Result<Run, Error> {
        let created = create_with_image(self, wire, request, local, to_end.progress, call).await?;
        (to_end.on_status)(&created);
        let id = created.id.clone();
        let done = self
            .wait_for_run(
                &id,
                Some(created.status_code),
                to_end.schedule,
                to_end.on_status,
                call,
            )
            .await?;
        if done.status.is_failure() {
            return Err(run_failed(done));
        }
        Ok(done)
    }

    /// Polls run `id` on `schedule` until it is terminal, calling `on_status` each time
    /// `status_code` changes (`last_seen` is the status the caller already reported, if any).
    ///
    /// # Errors
    /// A failure of the polling after retries, `aborted`, or `timeout` at the call's deadline;
    /// each with `runId`.
    pub async fn wait_for_run(
        &self,
        id: &str,
        mut last_seen: Option<String>,
        schedule: PollSchedule,
        on_status: &mut dyn FnMut(&Run),
        call: &Call,
    ) -> Result<Run, Error> {
        let started = js_sys::Date::now();
        let mut poll = 0;
        loop {
            let run = self.get_run(id, call).await?;
            if last_seen.as_deref() != Some(run.status_code.as_str()) {
                last_seen = Some(run.status_code.clone());
                on_status(&run);
            }
            if run.status.is_terminal() {
                return Ok(run);
            }
            let elapsed = (js_sys::Date::now() - started).max(0.0) as u64;
            call.sleep(schedule.delay_ms(poll, elapsed, is_hidden()))
                .await
                .map_err(|e| e.with_run_id(id))?;
            poll += 1;
        }
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
