//! The client's calls: create (never twice), get and search (with retries), over `Transport`.

use wasm_bindgen::JsValue;

use crate::error::{Error, ErrorCode};
use crate::http::{Call, HttpResponse, LocalBoxFuture, Transport, Via};
use crate::json::{Json, JsonValue as Value};
use crate::paths;
use crate::policy::{CreateOutcome, PollSchedule, RetryPolicy, create_outcome, new_ref};
use crate::run::{Run, run_from_json, runs_from_search};

/// A configured client: where to send, how to retry, how often to poll.
pub struct Client {
    /// The API root, without a trailing slash (e.g. `/api/runflow`).
    pub base_url: String,
    /// The model runs are created for.
    pub model: String,
    /// How requests are sent.
    pub transport: Transport,
    /// How failed requests are retried.
    pub retry: RetryPolicy,
    /// How often runs are polled.
    pub poll: PollSchedule,
    /// Local images under this many bytes go inline as `data:` URIs; larger ones are uploaded.
    pub inline_limit: f64,
    /// `prepareImage`'s settings, when local images are downscaled before sending.
    pub prepare: Option<JsValue>,
}

/// What a create sends besides the input.
#[derive(Default, Clone)]
pub struct CreateRequest {
    /// POSTed by Runflow when the run ends.
    pub callback_url: Option<String>,
    /// Echoed in the run.
    pub metadata: Option<Value>,
    /// The correlation id; generated when absent.
    pub client_ref: Option<String>,
    /// The idempotency key; generated when absent.
    pub idempotency_key: Option<String>,
}

/// Four random 32-bit words for ids that only need to be unique, not secret.
pub fn random_words() -> [u32; 4] {
    std::array::from_fn(|_| (js_sys::Math::random() * 4_294_967_296.0) as u32)
}

impl Client {
    fn url(&self, path: &str) -> String {
        [self.base_url.as_str(), path].concat()
    }

    /// Creates a run, making sure one logical create never makes two runs: every attempt carries
    /// the same Idempotency-Key and client_ref, and after an attempt whose outcome is unknown the
    /// run is looked up by client_ref before any second POST.
    ///
    /// # Errors
    /// The API's refusal; or, when the outcome stays unknown, the failure with `clientRef` set.
    pub async fn create_run(
        &self,
        input: Value,
        request: CreateRequest,
        call: &Call,
    ) -> Result<Run, Error> {
        let client_ref = request
            .client_ref
            .unwrap_or_else(|| new_ref("rk_", random_words()));
        let idempotency_key = request
            .idempotency_key
            .unwrap_or_else(|| new_ref("rk-idem-", random_words()));
        let mut body = vec![("input", input)];
        body.extend(
            request
                .callback_url
                .as_deref()
                .map(|url| ("callback_url", Value::string(url))),
        );
        body.extend(request.metadata.map(|metadata| ("metadata", metadata)));
        body.push(("client_ref", Value::string(&client_ref)));
        let body: Value = js_sys::JSON::stringify(&Value::object(body))
            .map_err(|_| {
                Error::invalid(
                    "input",
                    "The input or metadata holds a value JSON cannot carry (a BigInt or a cycle).",
                )
            })?
            .into();
        let url = self.url(&paths::create_run(&self.model));
        let headers = [
            ("content-type", "application/json"),
            ("idempotency-key", idempotency_key.as_str()),
        ];

        // The failure of the last attempt, while it is unknown whether that attempt made a run.
        let mut unknown: Option<Error> = None;
        let mut attempt = 0;
        loop {
            if let Some(earlier) = unknown.take() {
                match self.find_by_client_ref(&client_ref, call).await {
                    Ok(Some(run)) => return Ok(run),
                    Ok(None) => {}
                    Err(lookup) => return Err(undecided(earlier, lookup, &client_ref)),
                }
            }
            let error = match self
                .transport
                .send("POST", &url, Some(&body), &headers, call)
                .await
                .and_then(HttpResponse::success)
            {
                Ok(response) => match response.json(run_from_json) {
                    Ok(run) => return Ok(run),
                    Err(error) => error,
                },
                Err(error) => error,
            };
            if matches!(error.code, ErrorCode::Aborted)
                || (error.code == ErrorCode::Timeout && !error.retryable)
            {
                // Stopped mid-create: the caller may need to look the run up.
                return Err(Error {
                    client_ref: Some(client_ref),
                    ..error
                });
            }
            // A 409 on a repeat of our own request means the earlier attempt got there first.
            let outcome = if error.code == ErrorCode::Conflict && attempt > 0 {
                CreateOutcome::Unknown
            } else {
                create_outcome(&error)
            };
            let look_up_first =
                outcome == CreateOutcome::Unknown && attempt < self.retry.max_retries;
            if !(self.retry.should_retry(attempt, &error) || look_up_first) {
                return Err(match outcome {
                    CreateOutcome::Unknown => Error {
                        client_ref: Some(client_ref),
                        retryable: false,
                        ..error
                    },
                    CreateOutcome::NotCreated => error,
                });
            }
            let delay = self
                .retry
                .delay_ms(attempt, error.retry_after_ms, js_sys::Math::random());
            if let Err(stopped) = call.sleep(delay).await {
                return Err(Error {
                    client_ref: Some(client_ref),
                    ..stopped
                });
            }
            if outcome == CreateOutcome::Unknown {
                unknown = Some(error);
            }
            attempt += 1;
        }
    }

    /// Fetches a run, retrying 429, 5xx, timeouts and network failures.
    ///
    /// # Errors
    /// The last failure, with `runId` set.
    pub async fn get_run(&self, id: &str, call: &Call) -> Result<Run, Error> {
        let response = self
            .get_with_retries(&paths::run(id), call)
            .await
            .map_err(|e| e.with_run_id(id))?;
        response.json(run_from_json).map_err(|e| e.with_run_id(id))
    }

    /// Finds the run created with `client_ref`, if any.
    ///
    /// # Errors
    /// Any failure of the search, including a proxy that does not forward it.
    pub async fn find_by_client_ref(
        &self,
        client_ref: &str,
        call: &Call,
    ) -> Result<Option<Run>, Error> {
        let response = self
            .get_with_retries(&paths::search_by_client_ref(client_ref), call)
            .await?;
        let runs = response.json(runs_from_search)?;
        Ok(runs
            .into_iter()
            .find(|run| run.client_ref.as_deref() == Some(client_ref)))
    }

    async fn get_with_retries(&self, path: &str, call: &Call) -> Result<HttpResponse, Error> {
        let url = self.url(path);
        self.send_with_retries("GET", &url, None, &[], Via::Api, call)
            .await
    }

    /// POSTs JSON to the API where a repeat harms nothing (an upload slot, a confirmation).
    pub async fn post_with_retries(
        &self,
        path: &str,
        json: &Value,
        call: &Call,
    ) -> Result<HttpResponse, Error> {
        let url = self.url(path);
        let headers = [("content-type", "application/json")];
        self.send_with_retries("POST", &url, Some(json), &headers, Via::Api, call)
            .await
    }

    /// Sends a request that is safe to repeat, retrying 429, 5xx, timeouts and network failures.
    ///
    /// # Errors
    /// The last failure.
    ///
    /// Boxed: it is awaited from several places, and one shared copy of its state machine is
    /// much smaller wasm than one inlined into each caller.
    pub fn send_with_retries<'a>(
        &'a self,
        method: &'static str,
        url: &'a str,
        body: Option<&'a Value>,
        headers: &'a [(&'static str, &'a str)],
        via: Via<'a>,
        call: &'a Call,
    ) -> LocalBoxFuture<'a, Result<HttpResponse, Error>> {
        Box::pin(async move {
            let mut attempt = 0;
            loop {
                let error = match self
                    .transport
                    .send_via(method, url, body, headers, via, call)
                    .await
                    .and_then(HttpResponse::success)
                {
                    Ok(response) => return Ok(response),
                    Err(error) => error,
                };
                let delay =
                    self.retry
                        .delay_ms(attempt, error.retry_after_ms, js_sys::Math::random());
                // A wait past the deadline would only trade this error for a vaguer timeout.
                if !self.retry.should_retry(attempt, &error) || call.outlasted_by(delay) {
                    return Err(error);
                }
                call.sleep(delay).await?;
                attempt += 1;
            }
        })
    }
}

/// The create's outcome is unknown and the look-up could not settle it: say so, and hand the
/// caller the client_ref to check, rather than risk a second run.
fn undecided(create: Error, lookup: Error, client_ref: &str) -> Error {
    if matches!(lookup.code, ErrorCode::Aborted | ErrorCode::Timeout) && !lookup.retryable {
        return Error {
            client_ref: Some(client_ref.to_owned()),
            ..lookup
        };
    }
    let message = [
        &create.message,
        " The run may or may not have been created, and looking it up by client_ref failed (",
        lookup.code.as_str(),
        "), so it was not created again. Look for client_ref \"",
        client_ref,
        "\" (error.clientRef) before retrying, to avoid paying twice.",
    ]
    .concat();
    Error {
        message,
        client_ref: Some(client_ref.to_owned()),
        retryable: false,
        ..create
    }
}
