//! The `devserver` binary: its start-up line, and the ways it refuses to start.

use std::{
    io::{BufRead, BufReader},
    net::TcpListener,
    process::{Command, Stdio},
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

#[test]
fn proxy_mode_is_refused_for_now() {
    let output = devserver()
        .env("RUNFLOW_API_KEY", "rf_live_x")
        .env("PORT", "0")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr)
        .contains("proxy mode is not implemented yet (issue 5)"));
    assert!(output.stdout.is_empty());
}
