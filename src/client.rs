//! The client's calls: create (never twice), get and search (with retries), over `Transport`.

use wasm_bindgen::JsValue;

use crate::error::{Error, ErrorCode};
use crate::http::{
    Call, HttpResponse, LocalBoxFuture, Transport, Via, is_offline, parse_date, store_upload,
    stored_upload,
};
use crate::json::{Json, JsonValue as Value};
use crate::paths;
use crate::policy::{
    CreateOutcome, PollSchedule, RetryPolicy, create_outcome, is_own_create, new_ref,
};
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
    /// `uploadThreshold`: local images under this many bytes go inline as `data:` URIs; larger
    /// ones are uploaded (see `inline_limit`).
    pub upload_threshold: f64,
    /// `prepareImage`'s settings, when local images are downscaled before sending.
    pub prepare: Option<JsValue>,
    /// Until when (`Date.now()` ms) every API request of this client waits, after a 429: calls
    /// running side by side (`runMany`) share one backoff instead of each hammering on.
    pub cooled_until: std::cell::Cell<f64>,
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

/// A callback relay, as the server advertises it (the `Runflow-Kontext-Relay` header).
#[derive(Clone)]
pub struct Relay {
    /// The run's events stream, `{id}` standing for its id (usually a path on the API's origin).
    pub events: String,
    /// The receiver Runflow POSTs to: the `callback_url` of runs followed by push.
    pub callback: String,
}

/// Four random 32-bit words for ids that only need to be unique, not secret.
pub fn random_words() -> [u32; 4] {
    std::array::from_fn(|_| (js_sys::Math::random() * 4_294_967_296.0) as u32)
}

/// What the client learnt about one `baseUrl` from its answers, shared by every client of that
/// API root (even one made later).
struct Learnt {
    base_url: String,
    /// The inline limit learnt from a 413: above it, images are uploaded at once rather than
    /// refused again by the proxy in front.
    inline_limit: f64,
    /// The callback relay the server advertised on its latest answer (`Runflow-Kontext-Relay`).
    relay: Option<Relay>,
}

/// A remembered asset URL is used again only while it has at least this long left (ms): a run
/// created with it must still be able to read it.
const MIN_ASSET_URL_LIFE_MS: f64 = 10.0 * 60.0 * 1000.0;

thread_local! {
    static LEARNT: std::cell::RefCell<Vec<Learnt>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Client {
    /// Reads or updates what was learnt about this client's `baseUrl` (one copy of the code for
    /// every use: a closure per use would be a copy each).
    fn learnt(&self, visit: &mut dyn FnMut(&mut Learnt)) {
        LEARNT.with_borrow_mut(|all| {
            let known = all.iter().position(|l| l.base_url == self.base_url);
            let index = known.unwrap_or_else(|| {
                all.push(Learnt {
                    base_url: self.base_url.clone(),
                    inline_limit: f64::INFINITY,
                    relay: None,
                });
                all.len() - 1
            });
            if let Some(learnt) = all.get_mut(index) {
                visit(learnt);
            }
        });
    }

    /// Local images (and `data:` URIs) under this many bytes go inline: `uploadThreshold`, or
    /// less once a create to this `baseUrl` was refused as too large with an image inline.
    pub fn inline_limit(&self) -> f64 {
        let mut limit = self.upload_threshold;
        self.learnt(&mut |learnt| limit = limit.min(learnt.inline_limit));
        limit
    }

    /// Records that a create with an inline image of `image_bytes` was refused as too large:
    /// from now on images of half that size or more are uploaded (halving converges on a cap
    /// the client cannot see, at the cost of one more refusal at most per halving).
    pub fn learn_inline_refusal(&self, image_bytes: f64) {
        let limit = (image_bytes / 2.0).floor().min(self.inline_limit());
        self.learnt(&mut |learnt| learnt.inline_limit = limit);
    }

    /// The relay the server advertised on its latest answer, if it did.
    pub fn relay(&self) -> Option<Relay> {
        let mut relay = None;
        self.learnt(&mut |learnt| relay.clone_from(&learnt.relay));
        relay
    }

    /// The asset URL of an earlier upload of the same bytes (`hash`) to this API root, while it
    /// has time left (or says nothing of its expiry). The JS edge keeps them (the last 32 per API
    /// root in memory, and in the persistent store with `persist`).
    pub fn uploaded(&self, hash: &str) -> Option<String> {
        stored_upload(&self.base_url, hash).filter(|url| {
            crate::expiry::url_expiry(url)
                .is_none_or(|at| at as f64 > js_sys::Date::now() + MIN_ASSET_URL_LIFE_MS)
        })
    }

    /// Remembers that the bytes `hash` are at `url`.
    pub fn remember_upload(&self, hash: &str, url: &str) {
        store_upload(&self.base_url, hash, url);
    }

    /// Notes whether `response` advertises a relay: a server that stops advertising one is
    /// polled again.
    fn learn_relay(&self, response: &HttpResponse) {
        let advertised = response.relay();
        let mut relay = advertised
            .get(0)
            .as_string()
            .zip(advertised.get(1).as_string())
            .map(|(events, callback)| Relay { events, callback });
        self.learnt(&mut |learnt| learnt.relay = relay.take());
    }

    fn url(&self, path: &str) -> String {
        [self.base_url.as_str(), path].concat()
    }

    /// Creates a run, making sure one logical create never makes two runs: every attempt carries
    /// the same Idempotency-Key and client_ref, and after an attempt whose outcome is unknown the
    /// run is looked up by client_ref before any second POST, and before giving up.
    ///
    /// # Errors
    /// The API's refusal; or, when the outcome stays unknown, the failure with `clientRef` set.
    pub async fn create_run(
        &self,
        input: Value,
        request: CreateRequest,
        call: &Call,
    ) -> Result<Run, Error> {
        let began_ms = js_sys::Date::now();
        let client_ref = request
            .client_ref
            .unwrap_or_else(|| new_ref("rk_", random_words()));
        let idempotency_key = request
            .idempotency_key
            .unwrap_or_else(|| new_ref("rk-idem-", random_words()));
        let mut body = vec![("input", input.clone())];
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
        let with_ref = |error: Error| Error {
            client_ref: Some(client_ref.clone()),
            ..error
        };

        let mut attempt = 0;
        loop {
            call.until_online().await.map_err(with_ref)?;
            self.cool_down(call).await.map_err(with_ref)?;
            let error = match self
                .transport
                .send("POST", &url, Some(&body), &headers, call)
                .await
                .and_then(|response| response.success(&self.transport.secrets))
            {
                Ok(response) => {
                    self.learn_relay(&response);
                    match response.json(run_from_json) {
                        Ok(run) => return Ok(run),
                        Err(error) => error,
                    }
                }
                Err(error) => error,
            };
            if matches!(error.code, ErrorCode::Aborted)
                || (error.code == ErrorCode::Timeout && !error.retryable)
            {
                // Stopped mid-create: the caller may need to look the run up.
                return Err(with_ref(error));
            }
            // A 409 on a repeat of our own request means the earlier attempt got there first.
            let outcome = if error.code == ErrorCode::Conflict && attempt > 0 {
                CreateOutcome::Unknown
            } else {
                create_outcome(&error)
            };
            // A failure while the network is gone is not the server's answer: it costs no retry.
            let offline = is_offline();
            let delay = self
                .retry
                .delay_ms(attempt, error.retry_after_ms, js_sys::Math::random());
            // The same cap on Retry-After and the same deadline rule as every other request.
            let may_wait = error
                .retry_after_ms
                .is_none_or(|ms| ms <= self.retry.max_retry_after_ms)
                && !call.outlasted_by(delay);
            let retry = offline
                || (may_wait
                    && attempt < self.retry.max_retries
                    && (outcome == CreateOutcome::Unknown || error.retryable));
            if outcome == CreateOutcome::NotCreated && !retry {
                return Err(error);
            }
            if may_wait && !offline {
                // Before a last look-up, a short pause gives the server time to record the run.
                let pause = if retry {
                    delay
                } else {
                    delay.min(self.retry.base_ms)
                };
                if retry {
                    self.note_rate_limit(&error, pause);
                }
                call.sleep(pause).await.map_err(with_ref)?;
            }
            if outcome == CreateOutcome::Unknown {
                call.until_online().await.map_err(with_ref)?;
                match self
                    .find_own_create(&client_ref, &input, began_ms, call)
                    .await
                {
                    Ok(Some(run)) => return Ok(run),
                    Ok(None) if retry => {}
                    Ok(None) => {
                        return Err(Error {
                            retryable: false,
                            ..with_ref(error)
                        });
                    }
                    Err(lookup) => return Err(undecided(error, lookup, &client_ref)),
                }
            }
            if !offline {
                attempt += 1;
            }
        }
    }

    /// Reads an output's image as a Blob, retrying 429, 5xx and network failures.
    ///
    /// The storage decides, not this device's clock: a link the clock says has expired is still
    /// asked for (a fast clock must not lose a paid result), and its refusal then reads as expired.
    ///
    /// # Errors
    /// `output_expired` when the storage refuses the URL (403, or 400 once the URL says it has
    /// expired, as Google Cloud Storage answers); else the failure.
    pub async fn download(
        &self,
        url: &str,
        expires_at: Option<f64>,
        call: &Call,
    ) -> Result<JsValue, Error> {
        let expires_at = expires_at.or_else(|| crate::expiry::url_expiry(url).map(|ms| ms as f64));
        let expired = |why: &str| {
            Error::new(
                ErrorCode::OutputExpired,
                [
                    "This output's URL ",
                    why,
                    ": Runflow's presigned URLs last about a day. Keep the images when the run ends, or read the run again (getRun) for fresh URLs.",
                ]
                .concat(),
            )
        };
        let past = expires_at.is_some_and(|at| at <= js_sys::Date::now());
        match self
            .send_with_retries("GET", url, None, &[], Via::Download, call)
            .await
        {
            Ok(response) => Ok(response.body),
            Err(error) if past && matches!(error.status, Some(400 | 403)) => {
                Err(expired("has expired (output.expiresAt)"))
            }
            Err(error) if error.status == Some(403) => Err(expired(
                "was refused by its storage (403), as an expired one is",
            )),
            Err(error) => Err(error),
        }
    }

    /// After a 429 that a call waits out before retrying, every other call of this client holds
    /// off as long (never longer than a retry waits: a call that gives up sets nothing).
    fn note_rate_limit(&self, error: &Error, delay_ms: u64) {
        if error.code == ErrorCode::RateLimited {
            let until = js_sys::Date::now() + delay_ms as f64;
            self.cooled_until.set(self.cooled_until.get().max(until));
        }
    }

    /// Waits out the shared backoff, if one is running.
    async fn cool_down(&self, call: &Call) -> Result<(), Error> {
        let left = self.cooled_until.get() - js_sys::Date::now();
        if left > 0.0 {
            call.sleep(left as u64).await?;
        }
        Ok(())
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
        self.learn_relay(&response);
        response.json(run_from_json).map_err(|e| e.with_run_id(id))
    }

    /// Finds the run a create that began at `began_ms` made with `client_ref` and `input`, if
    /// any: a run that reused the ref earlier, or with another input, is not it.
    ///
    /// # Errors
    /// Any failure of the search, including a proxy that does not forward it.
    async fn find_own_create(
        &self,
        client_ref: &str,
        input: &Value,
        began_ms: f64,
        call: &Call,
    ) -> Result<Option<Run>, Error> {
        let response = self
            .get_with_retries(&paths::search_by_client_ref(client_ref), call)
            .await?;
        let runs = response.json(runs_from_search)?;
        let parse = |at: &str| parse_date(at).map(|ms| ms as f64);
        Ok(runs
            .into_iter()
            .find(|run| is_own_create(run, client_ref, input, began_ms, parse)))
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
            // The shared backoff is the API's: a storage's 429 is not Runflow's, nor the reverse.
            let api = matches!(via, Via::Api);
            loop {
                call.until_online().await?;
                if api {
                    self.cool_down(call).await?;
                }
                let error = match self
                    .transport
                    .send_via(method, url, body, headers, via, call)
                    .await
                    .and_then(|response| response.success(&self.transport.secrets))
                {
                    Ok(response) => return Ok(response),
                    Err(error) => error,
                };
                // Failed because the network went: wait for it, without spending a retry.
                if is_offline() {
                    continue;
                }
                let delay =
                    self.retry
                        .delay_ms(attempt, error.retry_after_ms, js_sys::Math::random());
                // A wait past the deadline would only trade this error for a vaguer timeout.
                if !self.retry.should_retry(attempt, &error) || call.outlasted_by(delay) {
                    return Err(error);
                }
                if api {
                    self.note_rate_limit(&error, delay);
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
