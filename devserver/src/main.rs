//! `devserver`: the demo page, the built package and the API on one port: the embedded mock, or
//! with `RUNFLOW_API_KEY` set a proxy to the real API (see `docs/proxy.md` for its variables);
//! with `RUNFLOW_CALLBACK_SECRETS` and `PUBLIC_URL` set, the callback relay (`docs/callbacks.md`).

use std::{env, io::Write, process::ExitCode, time::Duration};

use runflow_devserver::{
    app_with_relay, parse_lifecycle, serve, Backend, Config, ProxyConfig, Relay,
};

/// How long open requests (hung ones included) get to finish after ctrl-c or SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

fn var(name: &str, default: &str) -> String {
    env::var(name).unwrap_or_else(|_| default.to_string())
}

/// A `0`/`1` variable, `0` when unset.
fn flag(name: &str) -> Result<bool, String> {
    match var(name, "0").as_str() {
        "0" => Ok(false),
        "1" => Ok(true),
        other => Err(format!("{name} must be 0 or 1, got {other:?}")),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let backend = if env::var_os("RUNFLOW_API_KEY").is_some() {
        match ProxyConfig::from_env(|name| env::var(name).ok()) {
            Ok(proxy) => {
                eprintln!("devserver: {}", proxy.summary());
                Backend::Proxy(Box::new(proxy))
            }
            Err(message) => {
                eprintln!("devserver: {message}");
                return ExitCode::from(2);
            }
        }
    } else {
        Backend::Mock
    };
    let lifecycle_ms = match parse_lifecycle(&var("MOCK_LIFECYCLE_MS", "800,700,2500")) {
        Ok(lifecycle) => lifecycle,
        Err(message) => {
            eprintln!("devserver: {message}");
            return ExitCode::from(2);
        }
    };
    let (isolated, mock_cors) = match (flag("CROSS_ORIGIN_ISOLATED"), flag("MOCK_CORS")) {
        (Ok(isolated), Ok(mock_cors)) => (isolated, mock_cors),
        (Err(message), _) | (_, Err(message)) => {
            eprintln!("devserver: {message}");
            return ExitCode::from(2);
        }
    };
    let relay = match Relay::from_env(|name| env::var(name).ok()) {
        Ok(relay) => {
            match &relay {
                Relay::On(config) => eprintln!("devserver: {}", config.summary()),
                Relay::Off(message) => eprintln!("devserver: {message}"),
            }
            relay
        }
        Err(message) => {
            eprintln!("devserver: {message}");
            return ExitCode::from(2);
        }
    };
    let config = Config {
        www_dir: var("WWW_DIR", "www").into(),
        pkg_dir: var("PKG_DIR", "pkg").into(),
        lifecycle_ms,
        backend,
        isolated,
        mock_cors,
    };
    let addr = format!("{}:{}", var("HOST", "127.0.0.1"), var("PORT", "8080"));
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("devserver: cannot listen on {addr}: {e} (is another server running? pick another PORT)");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = match shutdown_signal() {
        Ok(shutdown) => shutdown,
        Err(e) => {
            eprintln!("devserver: cannot listen for signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    let url = match listener.local_addr() {
        Ok(local) => format!("http://{local}"),
        Err(_) => format!("http://{addr}"),
    };
    // Scripts wait for this exact line, so it must not sit in a buffer.
    println!(
        "runflow-kontext dev server: {url} (backend: {})",
        config.backend.describe()
    );
    let _ = std::io::stdout().flush();

    // Stop accepting on the signal, then give open requests a moment: hung ones never finish.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = serve(listener, app_with_relay(config, relay), async move {
        let _ = stopped.await;
    });
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return report(result),
        () = shutdown => {}
    }
    let _ = stop.send(());
    match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
        Ok(result) => report(result),
        Err(_) => {
            eprintln!("devserver: requests still open after {SHUTDOWN_GRACE:?}; exiting anyway");
            ExitCode::SUCCESS
        }
    }
}

fn report(result: std::io::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("devserver: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Listens for ctrl-c and SIGTERM from now on: registered before the start-up line is printed,
/// so a script that stops the server right after seeing it is heard.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
