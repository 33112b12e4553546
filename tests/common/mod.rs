//! What the browser test files share: the mock scenario each test gets, and JS value helpers.
#![allow(dead_code)] // Each test file uses its own subset.

use gloo_net::http::Request;
use js_sys::{Array, Function, Reflect};
use runflow_kontext::KontextClient;
use serde_json::{Value, json};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

pub const MOCK: &str = match option_env!("MOCK_URL") {
    Some(url) => url,
    None => "http://127.0.0.1:18181",
};

/// An 8x8 PNG gradient, so runs edit a real image.
pub const PIXEL_PNG: &str = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAbElEQVR42hXNQRUAUQhCUaMYhShGeVGIQhSizB+XXA7ODDtouIHBQ4YOM8suWm5h8ZKl+0CskDiBsIioHhx76LiDw0eO3oN/4FVf+J8h0PduzBqZ8x/bxNQPwgaFy192SGgelC0q13/CJaXlA8Z7WAFXOTbyAAAAAElFTkSuQmCC";

pub struct Scenario {
    pub base_url: String,
}

impl Scenario {
    pub async fn new(config: Value) -> Scenario {
        let response = Request::post(&format!("{MOCK}/__mock/scenarios"))
            .json(&config)
            .expect("json")
            .send()
            .await
            .expect("mock reachable");
        assert_eq!(response.status(), 201, "scenario created");
        let created: Value = response.json().await.expect("scenario json");
        Scenario {
            base_url: format!("{MOCK}{}", created["base_url"].as_str().expect("base_url")),
        }
    }

    pub fn client(&self, extra: Value) -> KontextClient {
        let mut options = json!({"baseUrl": self.base_url, "pollIntervalMs": 20});
        if let (Value::Object(options), Value::Object(extra)) = (&mut options, extra) {
            options.extend(extra);
        }
        KontextClient::new(to_js(&options)).unwrap_or_else(|e| panic!("client: {e:?}"))
    }

    pub async fn log(&self) -> Vec<Value> {
        let response = Request::get(&format!("{}/log", self.base_url))
            .send()
            .await
            .expect("log");
        let log: Value = response.json().await.expect("log json");
        log["requests"].as_array().cloned().unwrap_or_default()
    }

    /// Appends fault rules after those still pending.
    pub async fn add_faults(&self, rules: Value) {
        let response = Request::post(&format!("{}/faults", self.base_url))
            .json(&rules)
            .expect("json")
            .send()
            .await
            .expect("faults");
        assert_eq!(response.status(), 204, "faults added");
    }

    pub async fn count(&self, kind: &str) -> usize {
        self.log()
            .await
            .iter()
            .filter(|entry| entry["kind"] == kind)
            .count()
    }

    pub async fn runs(&self) -> Vec<Value> {
        let response = Request::get(&format!("{}/runs", self.base_url))
            .send()
            .await
            .expect("runs");
        let runs: Value = response.json().await.expect("runs json");
        runs["items"].as_array().cloned().unwrap_or_default()
    }
}

pub fn to_js(value: &Value) -> JsValue {
    js_sys::JSON::parse(&value.to_string()).expect("valid json")
}

pub fn to_json(value: &JsValue) -> Value {
    let text: String = js_sys::JSON::stringify(value).expect("stringify").into();
    serde_json::from_str(&text).expect("json")
}

pub fn input() -> JsValue {
    to_js(&json!({"prompt": "make it snow", "image_url": PIXEL_PNG}))
}

pub fn field(value: &JsValue, name: &str) -> JsValue {
    Reflect::get(value, &name.into()).expect("field")
}

pub async fn resolve(promise: js_sys::Promise) -> Value {
    let value = JsFuture::from(promise).await.unwrap_or_else(|e| {
        panic!(
            "rejected: {}",
            field(&e, "message").as_string().unwrap_or_default()
        )
    });
    to_json(&value)
}

/// Awaits a rejection and checks it is a RunflowError with `code`.
pub async fn reject(promise: js_sys::Promise, code: &str) -> JsValue {
    let error = match JsFuture::from(promise).await {
        Ok(value) => panic!("expected {code}, resolved with {}", to_json(&value)),
        Err(error) => error,
    };
    assert!(error.is_instance_of::<js_sys::Error>(), "an Error instance");
    assert_eq!(
        field(&error, "name").as_string().as_deref(),
        Some("RunflowError")
    );
    assert_eq!(
        field(&error, "code").as_string().as_deref(),
        Some(code),
        "message: {:?}",
        field(&error, "message").as_string()
    );
    error
}

pub fn text(error: &JsValue, name: &str) -> Option<String> {
    field(error, name).as_string()
}

pub fn now() -> f64 {
    js_sys::Date::now()
}

/// A JS function recording every run it is called with.
pub fn recorder() -> (Function, Array) {
    let seen = Array::new();
    let record = Function::new_with_args("seen", "return (run) => seen.push(run.status)")
        .call1(&JsValue::NULL, &seen)
        .expect("fn");
    (record.unchecked_into(), seen)
}
