//! The shared proxy case table (`tests/proxy-cases.json`) against the dev server's proxy: each
//! case sent byte for byte over a raw connection (no client library normalises `..`, `//` or a
//! method's case), with the mock as the upstream, which accepts only the proxy's key.

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::kontext_input;
use super::proxy::{listen_proxy, mock_upstream, upstream_log, KEY};

const CASES: &str = include_str!("../../../tests/proxy-cases.json");

/// A raw HTTP/1.1 answer: status, header block and the (de-chunked) body.
struct RawAnswer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

/// Sends `request` as it is and reads the whole answer (the request says `Connection: close`).
async fn send_raw(addr: &str, request: &[u8]) -> RawAnswer {
    let mut stream = TcpStream::connect(addr).await.expect("proxy reachable");
    stream.write_all(request).await.expect("request sent");
    let mut bytes = Vec::new();
    // The proxy may close as soon as it has answered, before reading a refused body.
    let _ = stream.read_to_end(&mut bytes).await;
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    let head = String::from_utf8_lossy(&bytes[..split]).to_string();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let raw = bytes[split + 4..].to_vec();
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    RawAnswer {
        status,
        head,
        body: if chunked { dechunk(&raw) } else { raw },
    }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    while let Some(end) = raw.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&raw[..end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = end + 2;
        body.extend_from_slice(&raw[start..(start + size).min(raw.len())]);
        raw = &raw[(start + size + 2).min(raw.len())..];
    }
    body
}

/// The request bytes of `case`, for a proxy listening on `host`.
fn request_bytes(case: &Value, host: &str) -> Vec<u8> {
    let method = case["method"].as_str().expect("method");
    let path = case["path"].as_str().expect("path");
    let mut headers: Vec<(String, String)> = vec![("host".into(), host.into())];
    if let Some(given) = case["headers"].as_object() {
        for (name, value) in given {
            let value = value
                .as_str()
                .expect("header value")
                .replace("{host}", host);
            headers.retain(|(existing, _)| existing != name);
            headers.push((name.clone(), value));
        }
    }
    let body = &case["body"];
    let mut payload = Vec::new();
    let mut chunked = false;
    let mut with_length = true;
    if let Some(images) = body["create"].as_u64() {
        let mut input = kontext_input();
        input["num_images"] = json!(images);
        payload = json!({"input": input, "client_ref": "rk_case"})
            .to_string()
            .into_bytes();
    } else if let Some(json) = body.get("json") {
        payload = json.to_string().into_bytes();
    } else if let Some(text) = body["text"].as_str() {
        payload = text.as_bytes().to_vec();
    } else if let Some(n) = body["bytes"].as_u64() {
        payload = vec![b'x'; n as usize];
    } else if let Some(n) = body["chunked"].as_u64() {
        payload = vec![b'x'; n as usize];
        chunked = true;
    } else if body.get("none").is_some() {
        with_length = false;
    }
    if !body.is_null() {
        headers.push(("content-type".into(), "application/json".into()));
    }
    let mut out = format!("{method} /api/runflow{path} HTTP/1.1\r\n");
    for (name, value) in &headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("connection: close\r\n");
    let mut bytes = if chunked {
        out.push_str("transfer-encoding: chunked\r\n\r\n");
        let mut bytes = out.into_bytes();
        for chunk in payload.chunks(1000) {
            bytes.extend(format!("{:x}\r\n", chunk.len()).as_bytes());
            bytes.extend(chunk);
            bytes.extend(b"\r\n");
        }
        bytes.extend(b"0\r\n\r\n");
        return bytes;
    } else if with_length && !body.is_null() {
        out.push_str(&format!("content-length: {}\r\n\r\n", payload.len()));
        out.into_bytes()
    } else {
        out.push_str("\r\n");
        out.into_bytes()
    };
    bytes.extend(payload);
    bytes
}

#[tokio::test]
async fn the_shared_case_table() {
    let table: Value = serde_json::from_str(CASES).expect("tests/proxy-cases.json");
    let cases = table["cases"].as_array().expect("cases");
    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let (_, base) = mock_upstream(json!({"lifecycle_ms": [0, 0, 0], "api_key": KEY})).await;
        let settings: Vec<(String, String)> = case["settings"]
            .as_object()
            .map(|s| {
                s.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().expect("a setting").to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let addr = listen_proxy(&base, &settings).await;
        let request = request_bytes(case, &addr);
        let repeat = case["repeat"].as_u64().unwrap_or(1);
        let mut answer = send_raw(&addr, &request).await;
        for _ in 1..repeat {
            answer = send_raw(&addr, &request).await;
        }
        let expect = &case["expect"];
        let log = upstream_log(&base).await;
        let forwarded = log.len() as u64;
        let body = String::from_utf8_lossy(&answer.body).to_string();
        let code = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|b| b["code"].as_str().map(str::to_owned));
        let mut wrong = Vec::new();
        if expect["status"].as_u64() != Some(u64::from(answer.status)) {
            wrong.push(format!(
                "status {} (expected {})",
                answer.status, expect["status"]
            ));
        }
        if let Some(want) = expect["code"].as_str() {
            if code.as_deref() != Some(want) {
                wrong.push(format!("code {code:?} (expected {want})"));
            }
        }
        if expect["forwarded"].as_u64() != Some(forwarded) {
            wrong.push(format!(
                "{forwarded} forwarded (expected {})",
                expect["forwarded"]
            ));
        }
        if let Some(want) = expect.get("upstream_query") {
            let got = log.last().map_or(&Value::Null, |entry| &entry["query"]);
            if got != want {
                wrong.push(format!("upstream query {got} (expected {want})"));
            }
        }
        if let Some(want) = expect["upstream_headers"].as_object() {
            let sent = log.last().map_or(&Value::Null, |entry| &entry["headers"]);
            for (name, value) in want {
                if &sent[name] != value {
                    wrong.push(format!(
                        "upstream header {name}: {} (expected {value})",
                        sent[name]
                    ));
                }
            }
        }
        if answer.head.contains(KEY) || body.contains(KEY) {
            wrong.push("the key is in the answer".into());
        }
        if !wrong.is_empty() {
            failures.push(format!("{name}: {} — body {body:.200}", wrong.join(", ")));
        }
    }
    println!(
        "proxy cases: {} passed, {} failed",
        cases.len() - failures.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
