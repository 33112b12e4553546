//! The `devserver` binary: its start-up line, and the ways it refuses to start.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

fn devserver() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_devserver"));
    command
        .env_remove("RUNFLOW_API_KEY")
        .env("HOST", "127.0.0.1");
    command
}

#[test]
fn prints_its_url_then_serves() {
    let mut child = devserver()
        .env("PORT", "0")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .strip_prefix("runflow-kontext dev server: ")
        .and_then(|rest| rest.strip_suffix(" (backend: embedded mock)\n"))
        .unwrap_or_else(|| panic!("unexpected start-up line {line:?}"));
    let addr = url.strip_prefix("http://127.0.0.1:").expect("a local URL");
    let port: u16 = addr.parse().unwrap();
    let listening = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(listening);
}

#[test]
fn a_taken_port_is_a_clear_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let output = devserver().env("PORT", port).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot listen on"));
}

/// Reads the start-up line and returns the URL and the backend it names.
fn start_up(child: &mut Child) -> (String, String) {
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let rest = line
        .strip_prefix("runflow-kontext dev server: ")
        .and_then(|rest| rest.strip_suffix(")\n"))
        .unwrap_or_else(|| panic!("unexpected start-up line {line:?}"));
    let (url, backend) = rest.split_once(" (backend: ").unwrap();
    (url.to_string(), backend.to_string())
}

/// `GET path` on `url` over a plain socket, with `headers`; returns the whole response.
fn get(url: &str, path: &str, headers: &str) -> String {
    let addr = url.strip_prefix("http://").unwrap();
    let mut stream = TcpStream::connect(addr).unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn proxy_mode_names_its_upstream_and_never_logs_the_key() {
    let mut mock = devserver()
        .env("PORT", "0")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (mock_url, _) = start_up(&mut mock);
    let key = "rf_binary_key_9";
    let mut proxy = devserver()
        .env("PORT", "0")
        .env("RUNFLOW_API_KEY", key)
        .env("RUNFLOW_UPSTREAM", format!("{mock_url}/api/runflow"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (url, backend) = start_up(&mut proxy);
    let health = get(
        &url,
        "/api/runflow/v1/health",
        "Authorization: Bearer rf_browser_key\r\n",
    );
    let info = get(&url, "/api/runflow/_backend", "");
    // The access log is written by a thread of its own, after the response: read stderr as it
    // comes and stop the server only once the call's line is out.
    let lines = proxy.stderr.take().unwrap();
    let (sender, received) = mpsc::channel();
    let reader = thread::spawn(move || {
        for line in BufReader::new(lines).lines().map_while(Result::ok) {
            let _ = sender.send(line);
        }
    });
    let mut stderr = String::new();
    while !stderr.contains(r#""event":"proxy""#) {
        match received.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => stderr.push_str(&(line + "\n")),
            Err(_) => break,
        }
    }
    proxy.kill().unwrap();
    proxy.wait().unwrap();
    mock.kill().unwrap();
    mock.wait().unwrap();
    reader.join().unwrap();
    stderr.extend(received.try_iter().map(|line| line + "\n"));

    assert_eq!(backend, format!("proxy to {mock_url}"));
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(info.contains(r#""backend":"proxy""#), "{info}");
    assert!(
        info.contains(&format!("\"upstream\":\"{mock_url}\"")),
        "{info}"
    );
    let call = stderr
        .lines()
        .find(|line| line.contains(r#""event":"proxy""#))
        .unwrap_or_else(|| panic!("no call logged: {stderr}"));
    for part in [
        r#""method":"GET""#,
        r#""path":"/v1/health""#,
        r#""status":200"#,
        r#""duration_ms":"#,
    ] {
        assert!(call.contains(part), "{part} missing from {call}");
    }
    for secret in [key, "rf_browser_key", "Bearer"] {
        assert!(!stderr.contains(secret), "{secret} logged: {stderr}");
        assert!(!health.contains(secret) && !info.contains(secret));
    }
}

/// Starts the server with `env` and checks it refuses: exit code 2, nothing on stdout. Its stderr.
fn refused_at_start(env: &[(&str, &str)]) -> String {
    let output = devserver()
        .env("PORT", "0")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_bad_proxy_setting_stops_it_at_start() {
    let stderr = refused_at_start(&[
        ("RUNFLOW_API_KEY", "rf_live_x"),
        ("RUNFLOW_UPSTREAM", "ftp://files.example"),
    ]);
    assert!(stderr.contains("RUNFLOW_UPSTREAM"), "{stderr}");
    assert!(!stderr.contains("rf_live_x"));
}

#[test]
fn a_bad_isolation_setting_stops_it_at_start() {
    let stderr = refused_at_start(&[("CROSS_ORIGIN_ISOLATED", "yes")]);
    assert!(stderr.contains("CROSS_ORIGIN_ISOLATED"), "{stderr}");
}
