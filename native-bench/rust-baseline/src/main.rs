//! rust-baseline: the Rust/tokio ingestion hot path the comparison bench measures our server
//! against. It answers 202 once an event is in an in-memory queue; writers insert it later.
//! Env: PORT (0 = any free port), DATABASE_URL (postgres://…), HOST (default 127.0.0.1),
//! QUEUE_CAPACITY (default 1,000,000 events). Prints `{"msg":"listening","port":N}` on stdout.
mod auth;
mod db;
mod http;
mod queue;
mod rate_limit;

use std::convert::Infallible;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::{make_service_fn, service_fn};
use tokio::signal::unix::{signal, SignalKind};

struct Config {
    host: String,
    port: u16,
    database_url: String,
    queue_capacity: usize,
}

impl Config {
    fn from_env() -> Result<Config, String> {
        let database_url =
            std::env::var("DATABASE_URL").map_err(|_| "DATABASE_URL is not set".to_owned())?;
        Ok(Config {
            host: std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".to_owned()),
            port: parse_env("PORT", 0)?,
            database_url,
            queue_capacity: parse_env("QUEUE_CAPACITY", 1_000_000)?,
        })
    }
}

fn parse_env<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .map_err(|_| format!("{name}={value} is not a valid number")),
        Err(_) => Ok(default),
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if let Err(message) = run().await {
        eprintln!("rust-baseline: {message}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), String> {
    let config = Config::from_env()?;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);

    let db = db::Pool::open(&config.database_url, cores).await?;
    db::create_schema(db.client()).await?;
    let (queue, writers) =
        queue::start(&config.database_url, 2 * cores, config.queue_capacity).await?;
    let state = Arc::new(http::State {
        db,
        keys: Default::default(),
        limits: Default::default(),
        queue,
    });

    // Installed before the listening line, so a SIGTERM right after it is already handled.
    let mut terminate =
        signal(SignalKind::terminate()).map_err(|e| format!("cannot handle SIGTERM: {e}"))?;
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };

    let listener = std::net::TcpListener::bind((config.host.as_str(), config.port))
        .map_err(|e| format!("cannot listen on {}:{}: {e}", config.host, config.port))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot make the listener non-blocking: {e}"))?;
    let port = listener
        .local_addr()
        .map_err(|e| format!("cannot read the bound port: {e}"))?
        .port();
    let make_service = make_service_fn(move |_connection| {
        let state = Arc::clone(&state);
        async move {
            Ok::<_, Infallible>(service_fn(move |req| {
                let state = Arc::clone(&state);
                async move { http::handle(&state, req).await }
            }))
        }
    });
    let server = hyper::Server::from_tcp(listener)
        .map_err(|e| format!("cannot serve on the listener: {e}"))?
        .http1_only(true)
        .http1_keepalive(true)
        .tcp_nodelay(true)
        .serve(make_service)
        .with_graceful_shutdown(shutdown);

    println!(r#"{{"msg":"listening","port":{port}}}"#);
    std::io::stdout()
        .flush()
        .map_err(|e| format!("cannot write to stdout: {e}"))?;

    server.await.map_err(|e| format!("server error: {e}"))?;
    // The server's services held the last queue senders: with them gone the writers
    // insert what is left and stop. Bounded, so a dead database cannot hang the exit.
    if !writers.drain(Duration::from_secs(5)).await {
        eprintln!(
            "{}",
            serde_json::json!({"msg": "queue_not_drained", "detail": "exiting with events still queued"})
        );
    }
    Ok(())
}
